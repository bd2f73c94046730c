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

The machinery lives in turbomem.packet.pipeline and its naive twin in
turbomem.bench.naive_pipeline (both shared with the benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile


import turbomem as tm
from turbomem.bench.naive_pipeline import run_naive
from turbomem.packet import traffic
from turbomem.packet.pipeline import CountSink, PcapSink, PcapSource, Pipeline, UdpSink, UdpSource




def ring_factory():
    """The stages hand buffers over through lock-free tm.Ring instances."""
    return tm.Ring


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
    p.add_argument("--ring-size", type=int, default=4096)
    p.add_argument("--stage-burst", type=int, default=2048,
                   help="most packets a downstream stage takes per call (numpy work per call has a fixed cost)")
    p.add_argument("--pool-size", type=int, default=16384, help="buffers in the pool")
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
        traffic.write_pcap(path, traffic.generate_packets(args.generate))
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
                            stage_burst=args.stage_burst,
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
