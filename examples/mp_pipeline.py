#!/usr/bin/env python3
"""Multi-process packet pipeline: receiver -> N workers -> sender over shared rings.

Every packet buffer comes from one turbomem SharedPool; the processes pass
4-byte handles over two of the pool's rings, never packet bytes: the receiver
puts bursts on one work ring that every worker takes from (multi-consumer:
whichever worker is free takes the next burst), and every worker puts what it
keeps on one ring the sender drains (multi-producer).  Workers drop UDP packets to --drop-port and
forward the rest; the sender writes them to a pcap file (--out) or just counts.
At the end every buffer must be back: pool.available == pool.capacity.

    python examples/mp_pipeline.py --generate 100000 --workers 2
    python examples/mp_pipeline.py --pcap trace.pcap --drop-port 53 --out kept.pcap
    python examples/mp_pipeline.py --generate 50000 --kill-worker 0.2   # SIGKILL a worker mid-run

With --kill-worker F, worker 0 is SIGKILLed after about F of the packets; the
main process recovers what it held (pool.recover()), starts a replacement, and
the run still accounts for every buffer ("lost" counts the packets the dead
worker held; no buffer leaks).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import struct
import sys
import tempfile
import time

import numpy as np

from turbomem.packet import traffic
from turbomem.shared import SharedPool

OBJ = 2048
BURST = 64


def read_pcap(path):
    """Yield (linktype, packet bytes) from a classic pcap file (either byte order, us or ns)."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24:
            raise ValueError(f"{path}: not a pcap file (short header)")
        magic = hdr[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            bo = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            bo = ">"
        else:
            raise ValueError(f"{path}: not a pcap file (magic {magic.hex()})")
        linktype = struct.unpack(bo + "I", hdr[20:24])[0]
        rec = struct.Struct(bo + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            _s, _f, incl, _orig = rec.unpack(h)
            data = f.read(incl)
            if len(data) < incl:
                return
            yield linktype, data


WORK, OUT = 0, 1  # the pool's rings


def receiver(pool, source, assigned, rx_done):
    """Copy each packet into a pool buffer (the one copy) and put it on the work ring."""
    objs = pool.objects()
    lens = pool.lengths
    batch = []
    for _lt, data in read_pcap(source):
        batch.append(data[:OBJ])
        if len(batch) == BURST:
            _send(pool, objs, lens, batch, assigned)
            batch = []
    if batch:
        _send(pool, objs, lens, batch, assigned)
    rx_done.set()
    pool.close()


def _send(pool, objs, lens, batch, assigned):
    while True:
        try:
            hs = pool.get_bulk(len(batch))
            break
        except MemoryError:
            time.sleep(0.0005)  # back-pressure: the pool is the queue bound
    for h, data in zip(hs.tolist(), batch):
        objs[h, :len(data)] = np.frombuffer(data, dtype=np.uint8)
        lens[h] = len(data)
    pool.ring(WORK).enqueue_bulk(hs, timeout=None)
    with assigned.get_lock():
        assigned.value += len(batch)


def worker(pool, w, drop_port, done_counts, dropped, rx_done):
    """Classify in place; drop UDP to drop_port, forward the rest to the sender."""
    rin, rout = pool.ring(WORK), pool.ring(OUT)
    objs = pool.objects()
    while True:
        hs = rin.dequeue_burst(BURST, timeout=0.05)
        if hs.size:
            # IPv4 over Ethernet: ethertype 0x0800 at 12, protocol at 23, IHL at 14
            eth = (objs[hs, 12].astype(np.uint16) << 8) | objs[hs, 13]
            ihl = (objs[hs, 14] & 0x0F).astype(np.intp) * 4
            is_udp = (eth == 0x0800) & (objs[hs, 23] == 17)
            dport_at = 14 + ihl + 2
            dport = (objs[hs, dport_at].astype(np.uint16) << 8) | objs[hs, dport_at + 1]
            drop = is_udp & (dport == drop_port) if drop_port is not None else np.zeros(hs.size, bool)
            if drop.any():
                pool.put_bulk(hs[drop])
                with dropped.get_lock():
                    dropped[w] += int(drop.sum())
            keep = hs[~drop]
            if keep.size:
                rout.enqueue_bulk(keep, timeout=None)
            with done_counts.get_lock():
                done_counts[w] += hs.size
        elif rx_done.is_set() and not len(rin):
            break  # the receiver enqueued everything before setting rx_done
    pool.close()


def sender(pool, out, workers_done, sent):
    """Drain the workers' output ring; write to a pcap or just count; free every buffer."""
    objs = pool.objects()
    lens = pool.lengths
    writer = open(out, "wb") if out else None
    if writer:
        writer.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    idle_rounds = 0
    rin = pool.ring(OUT)
    while True:
        hs = rin.dequeue_burst(BURST)
        if hs.size:
            if writer:
                for h in hs.tolist():
                    n = int(lens[h])
                    writer.write(struct.pack("<IIII", 0, 0, n, n))
                    writer.write(objs[h, :n].tobytes())
            pool.put_bulk(hs)
            with sent.get_lock():
                sent.value += hs.size
        if hs.size:
            idle_rounds = 0
        elif workers_done.is_set():
            idle_rounds += 1
            if idle_rounds > 2:
                break
        else:
            time.sleep(0.0002)
    if writer:
        writer.close()
    pool.close()


def run(source, nworkers=2, drop_port=None, out=None, kill_worker=None, capacity=8192, total=None):
    ctx = mp.get_context("fork")
    pool = SharedPool(OBJ, capacity, rings=2, ring_capacity=1024, cache_size=64)
    # captured lengths: a small shared array beside the pool (inherited through fork)
    pool.lengths = np.frombuffer(mp.RawArray("H", capacity), dtype=np.uint16)
    assigned = ctx.Value("q", 0)
    done_counts = ctx.Array("q", nworkers)
    dropped = ctx.Array("q", nworkers)
    sent = ctx.Value("q", 0)
    rx_done, workers_done = ctx.Event(), ctx.Event()
    t0 = time.perf_counter()
    rx = ctx.Process(target=receiver, args=(pool, source, assigned, rx_done))
    ws = [ctx.Process(target=worker, args=(pool, w, drop_port, done_counts, dropped, rx_done))
          for w in range(nworkers)]
    tx = ctx.Process(target=sender, args=(pool, out, workers_done, sent))
    for p in [rx, tx, *ws]:
        p.start()
    lost, recovered, killed = 0, [], False
    if kill_worker is not None and total:
        # mid-run: about F of the packets done, and worker 0 at work (it shares the
        # work ring, so on a busy machine the others may have taken everything so far)
        while (sum(done_counts) < kill_worker * total or not done_counts[0]) and ws[0].is_alive():
            time.sleep(0.001)
        killed = ws[0].is_alive()
        os.kill(ws[0].pid, signal.SIGKILL)  # a no-op on a finished (zombie) worker
        ws[0].join()
        res = pool.recover()
        recovered = res["slots"]
        lost = res["objects"]
        # what the dead worker had taken but not finished is lost (recover() gave the
        # buffers back); the others keep taking from the work ring; a replacement joins
        ws[0] = ctx.Process(target=worker, args=(pool, 0, drop_port, done_counts, dropped, rx_done))
        ws[0].start()
    rx.join()
    for p in ws:
        p.join()
    workers_done.set()
    tx.join()
    elapsed = time.perf_counter() - t0
    pool.recover()
    report = {"received": int(assigned.value), "processed": int(sum(done_counts)),
              "dropped": int(sum(dropped)), "forwarded": int(sent.value), "workers": nworkers,
              "per_worker": list(done_counts), "seconds": round(elapsed, 3),
              "packets_per_sec": round(assigned.value / elapsed) if elapsed else None,
              "lost": int(assigned.value) - int(sum(dropped)) - int(sent.value),
              "worker_killed": killed, "killed_worker_recovered": recovered, "objects_recovered": lost,
              "pool_available": pool.available, "pool_capacity": pool.capacity,
              "exit_codes": [p.exitcode for p in [rx, *ws, tx]],
              "hugepages": pool.hugepage_report()["reason"]}
    pool.close()
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pcap", metavar="FILE", help="replay a pcap file")
    src.add_argument("--generate", metavar="N", type=int, help="generate N synthetic packets")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--drop-port", type=int, default=None, help="drop UDP packets to this port")
    p.add_argument("--out", metavar="FILE", help="write forwarded packets to this pcap")
    p.add_argument("--kill-worker", type=float, metavar="F", default=None,
                   help="SIGKILL worker 0 after about this fraction of the packets, recover, replace it")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        source, total = args.pcap, None
        if args.generate is not None:
            source = os.path.join(tmp, "generated.pcap")
            traffic.write_pcap(source, traffic.generate_packets(args.generate, seed=42))
            total = args.generate
        elif args.kill_worker is not None:
            total = sum(1 for _ in read_pcap(source))
        rep = run(source, args.workers, args.drop_port, args.out, args.kill_worker, total=total)
    print(json.dumps(rep, indent=2))
    # Nothing leaks, ever; without a kill nothing is lost either.
    ok = rep["pool_available"] == rep["pool_capacity"] and \
        (args.kill_worker is not None or rep["lost"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
