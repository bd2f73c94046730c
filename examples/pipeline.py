#!/usr/bin/env python3
"""Packet pipeline: receive -> classify (vectorised) -> forward or drop.

Each stage is a thread; stages are connected by turbomem Rings carrying
pool handles; every packet buffer comes from one Pool.  At the end the
pipeline checks that every buffer went back: pool.available == pool.capacity.

    python examples/pipeline.py --generate 200000           # synthetic pcap
    python examples/pipeline.py --pcap trace.pcap --drop-port 53
    python examples/pipeline.py --udp 9000 --count 100000     # live, raw IP in UDP
    python examples/pipeline.py --generate 100000 --naive     # bytes + queue.Queue
    python examples/pipeline.py --generate 50000 --slow-stage 0.001 --backpressure off

The machinery lives in turbomem.pipeline (shared with the benchmark).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np

import turbomem as tm
from turbomem import pktgen
from turbomem.pipeline import (CountSink, PcapSink, PcapSource, Pipeline, UdpSink, UdpSource,
                               resolve_ring_factory, run_naive)


# ---------------------------------------------------------------------------
# TEMPORARY ADAPTER -- remove once turbomem.Ring lands on main.
# Used ONLY when `tm.Ring` is missing.  Same API as tm.Ring (the subset the
# pipeline uses, plus the obvious rest), built on deque + Condition; it is
# neither lock-free nor fast and exists so the example runs before the merge.
class _FallbackRing:
    def __init__(self, capacity, *, single_producer=False, single_consumer=False):
        self.capacity = int(capacity)
        self._chunks = collections.deque()  # uint32 arrays, oldest first
        self._len = 0
        self._cv = threading.Condition()

    def __len__(self):
        return self._len

    def enqueue(self, h):
        return self.enqueue_burst(np.array([h], dtype=np.uint32)) == 1

    def enqueue_bulk(self, arr):
        with self._cv:
            if self._len + len(arr) > self.capacity:
                return False
        return self.enqueue_burst(arr) == len(arr)

    def enqueue_burst(self, arr):
        with self._cv:
            k = max(0, min(len(arr), self.capacity - self._len))
            if k:
                self._chunks.append(np.array(arr[:k], dtype=np.uint32))
                self._len += k
                self._cv.notify_all()
            return k

    def dequeue(self):
        out = self.dequeue_burst(1)
        return int(out[0]) if len(out) else -1

    def dequeue_bulk(self, n):
        with self._cv:
            return self._take(n) if self._len >= n else None

    def dequeue_burst(self, n):
        with self._cv:
            return self._take(min(n, self._len))

    def dequeue_burst_wait(self, n, timeout=None):
        with self._cv:
            self._cv.wait_for(lambda: self._len > 0, timeout)
            return self._take(min(n, self._len))

    def dequeue_wait(self, timeout=None):
        out = self.dequeue_burst_wait(1, timeout)
        return int(out[0]) if len(out) else -1

    def enqueue_wait(self, h, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.enqueue(h):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(50e-6)
        return True

    def _take(self, k):
        parts, need = [], k
        while need:
            c = self._chunks.popleft()
            if len(c) > need:
                self._chunks.appendleft(c[need:])
                c = c[:need]
            parts.append(c)
            need -= len(c)
        self._len -= k
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)
# END OF TEMPORARY ADAPTER
# ---------------------------------------------------------------------------


def ring_factory():
    """tm.Ring when it exists; the temporary adapter above otherwise."""
    return resolve_ring_factory(fallback=_FallbackRing)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", metavar="FILE", help="replay a pcap file")
    src.add_argument("--udp", metavar="PORT", type=int,
                     help="receive raw IP packets as UDP payloads on 127.0.0.1:PORT")
    src.add_argument("--generate", metavar="N", type=int,
                     help="generate N synthetic packets into a temporary pcap")
    p.add_argument("--naive", action="store_true",
                   help="bytes per packet, struct parsing, queue.Queue between stages")
    p.add_argument("--slow-stage", type=float, default=0.0, metavar="SEC",
                   help="classify sleeps SEC per burst (to provoke drops)")
    p.add_argument("--backpressure", choices=("on", "off"), default=None,
                   help="wait when a ring is full (default: on for files, off for --udp)")
    p.add_argument("--burst", type=int, default=256)
    p.add_argument("--ring-size", type=int, default=2048)
    p.add_argument("--pool-size", type=int, default=8192, help="buffers in the pool")
    p.add_argument("--obj-size", type=int, default=2048, help="bytes per buffer")
    p.add_argument("--drop-port", type=int, action="append", default=[],
                   help="drop TCP/UDP packets to or from this port (repeatable)")
    p.add_argument("--count", type=int, help="--udp: stop after N packets")
    p.add_argument("--duration", type=float, help="--udp: stop after SEC seconds")
    p.add_argument("--idle", type=float, default=1.0, help="--udp: stop after SEC of silence")
    p.add_argument("--out", metavar="FILE", help="write forwarded packets to a pcap")
    p.add_argument("--forward", metavar="HOST:PORT",
                   help="send forwarded packets as UDP datagrams to HOST:PORT")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _print(result, use_json):
    if use_json:
        print(json.dumps(result, indent=2))
        return
    print(f"mode: {result['mode']}")
    for st in result["stages"]:
        print(f"  {st['stage']:<9} {st['packets']:>9} pkts  {st['packets_per_sec']:>12,.0f} pkt/s")
    print(f"  end-to-end {result['packets_per_sec']:,.0f} pkt/s over {result['seconds']:.3f} s")
    print(f"  forwarded {result['forwarded']}  filtered {result['filtered']}  "
          f"drops {result['drops']} (rx ring {result['dropped_rx_ring']}, "
          f"tx ring {result['dropped_tx_ring']})")


def main(argv=None):
    args = build_parser().parse_args(argv)
    tmpdir = None
    path = args.pcap
    if args.generate is not None:
        tmpdir = tempfile.TemporaryDirectory()
        path = os.path.join(tmpdir.name, "generated.pcap")
        pktgen.write_pcap(path, pktgen.generate_packets(args.generate))
    backpressure = (args.backpressure == "on") if args.backpressure else args.udp is None
    sock = None
    try:
        if args.udp is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.bind(("127.0.0.1", args.udp))
            print(f"listening on 127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
        if args.naive:
            result = run_naive(path, sock=sock, count=args.count, duration=args.duration,
                               idle=args.idle, queue_size=args.ring_size,
                               drop_ports=args.drop_port, slow_stage=args.slow_stage,
                               backpressure=backpressure)
            _print(result, args.json)
            return 0
        with tm.Pool(args.obj_size, args.pool_size) as pool:
            if sock is not None:
                source = UdpSource(sock, pool, args.burst, count=args.count,
                                   duration=args.duration, idle=args.idle)
            else:
                source = PcapSource(path, pool, args.burst)
            if args.out:
                sink = PcapSink(args.out, linktype=source.linktype)
            elif args.forward:
                host, port = args.forward.rsplit(":", 1)
                out_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sink = UdpSink(out_sock, pool, (host, int(port)), args.burst)
            else:
                sink = CountSink()
            pipe = Pipeline(pool, ring_factory(), ring_size=args.ring_size, burst=args.burst,
                            drop_ports=args.drop_port, slow_stage=args.slow_stage,
                            backpressure=backpressure)
            result = pipe.run(source, sink)
            result["ring"] = getattr(ring_factory(), "__name__", "?")
            ok = pool.available == pool.capacity
            result["buffers_conserved"] = ok
            _print(result, args.json)
            if not args.json:
                print(f"pool.available == pool.capacity: {'OK' if ok else 'LEAK'} "
                      f"({pool.available}/{pool.capacity})")
            return 0 if ok else 1
    finally:
        if sock is not None:
            sock.close()
        if tmpdir is not None:
            tmpdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
