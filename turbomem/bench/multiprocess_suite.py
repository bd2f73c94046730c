"""The ``multiprocess`` benchmark: 2 KB packets through 2 worker processes.

One parent process plays receiver and sender: it "receives" each packet (one
copy of a 2 KB frame into a buffer, as a NIC's DMA would), hands it to one of
2 workers, and takes it back when the worker is done.  Each worker reads the
packet's IP protocol byte and counts it.  Contenders, in one run, alternating
(round 1: all contenders, round 2: all contenders, ...), best round kept:

* ``turbomem``: one SharedPool of 2 KB buffers and its rings (parent -> worker
  i, worker i -> parent); only 4-byte handles cross between processes.
* ``mp_queue``: ``multiprocessing.Queue`` of ``bytes`` (pickled and copied
  through a pipe).
* ``faster_fifo``: ``faster_fifo.Queue`` of ``bytes`` (copied through a shared
  circular buffer); the row is skipped with the reason if it is not installed.
* ``shm_offsets``: ``multiprocessing.shared_memory`` slots plus a
  ``multiprocessing.Queue`` of slot offsets (the hand-rolled zero-copy).

Every contender must count exactly the packets sent, with the same protocol
histogram, or the suite fails.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Optional

import numpy as np

from .report import Progress

__all__ = ["run", "suite"]

PKT = 2048
WORKERS = 2
BURST = 64
PROTO_AT = 23  # IPv4 protocol byte in an Ethernet frame


def _frames(n_distinct: int = 64) -> np.ndarray:
    rnd = np.random.default_rng(7)
    f = rnd.integers(0, 256, size=(n_distinct, PKT), dtype=np.uint8)
    f[:, PROTO_AT] = rnd.choice(np.array([6, 17, 1], dtype=np.uint8), size=n_distinct)
    return f


def _expected(frames: np.ndarray, n: int) -> dict:
    idx = np.arange(n) % len(frames)
    counts = np.bincount(frames[idx, PROTO_AT], minlength=256)
    return {int(k): int(v) for k, v in enumerate(counts) if v}


# ---------------------------------------------------------------- turbomem --

def _tm_worker(pool, w, n, res_q):
    rin, rout = pool.ring(w), pool.ring(WORKERS + w)
    objs = pool.objects()
    counts = np.zeros(256, dtype=np.int64)
    done = 0
    while done < n:
        hs = rin.dequeue_burst(BURST, timeout=30)
        if not hs.size:
            break
        counts += np.bincount(objs[hs, PROTO_AT], minlength=256)  # reads the packet in place
        while not rout.enqueue_bulk(hs, timeout=30):
            pass
        done += hs.size
    res_q.put({int(k): int(v) for k, v in enumerate(counts) if v})
    pool.close()


def _run_turbomem(frames, n):
    from turbomem.shared import SharedPool

    ctx = mp.get_context("fork")
    pool = SharedPool(PKT, 4096, rings=2 * WORKERS, ring_capacity=1024, cache_size=256)
    res_q = ctx.Queue()
    # burst i (BURST packets, the last one shorter) goes to worker i % WORKERS
    per = [0] * WORKERS
    for i in range((n + BURST - 1) // BURST):
        per[i % WORKERS] += min(BURST, n - i * BURST)
    procs = [ctx.Process(target=_tm_worker, args=(pool, w, per[w], res_q)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    objs = pool.objects()
    sent = back = 0
    nf = len(frames)
    t0 = time.perf_counter()
    while back < n:
        if sent < n and (sent - back) < 2048:
            k = min(BURST, n - sent)
            hs = pool.get_bulk(k)
            objs[hs, :] = frames[np.arange(sent, sent + k) % nf]  # the one copy: "receive"
            w = (sent // BURST) % WORKERS
            if not pool.ring(w).enqueue_bulk(hs, timeout=30):
                raise RuntimeError("turbomem ring stuck")
            sent += k
        for r in range(WORKERS):
            got = pool.ring(WORKERS + r).dequeue_burst(BURST)
            if got.size:
                pool.put_bulk(got)
                back += got.size
    elapsed = time.perf_counter() - t0
    hist: dict = {}
    for _ in range(WORKERS):
        for k, v in res_q.get(timeout=30).items():
            hist[k] = hist.get(k, 0) + v
    for p in procs:
        p.join(30)
    if pool.available != pool.capacity:
        raise AssertionError("turbomem contender leaked buffers")
    pool.close()
    return elapsed, hist


# ------------------------------------------------------------ queue of bytes --

def _q_worker(q_in, q_out, res_q, many):
    counts = {}
    while True:
        items = q_in.get_many(max_messages_to_get=BURST, timeout=30) if many else [q_in.get(timeout=30)]
        stops = 0
        for b in items:
            if b is None:  # sentinels come after every packet has come back
                stops += 1
                continue
            counts[b[PROTO_AT]] = counts.get(b[PROTO_AT], 0) + 1
            q_out.put(b)
        if stops:
            for _ in range(stops - 1):  # a batch took another worker's sentinel: give it back
                q_in.put(None)
            break
    res_q.put(counts)


def _run_queue(frames, n, kind):
    ctx = mp.get_context("fork")
    if kind == "faster_fifo":
        import faster_fifo

        q_in = faster_fifo.Queue(max_size_bytes=64 << 20)
        q_out = faster_fifo.Queue(max_size_bytes=64 << 20)
    else:
        q_in, q_out = ctx.Queue(), ctx.Queue()
    many = kind == "faster_fifo"
    res_q = ctx.Queue()
    procs = [ctx.Process(target=_q_worker, args=(q_in, q_out, res_q, many)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    pkts = [frames[i].tobytes() for i in range(len(frames))]
    nf = len(pkts)
    sent = back = 0
    t0 = time.perf_counter()
    while back < n:
        while sent < n and sent - back < 2048:
            q_in.put(bytes(pkts[sent % nf]))  # the "receive" copy, as for turbomem
            sent += 1
        got = q_out.get_many(max_messages_to_get=BURST, timeout=30) if many else [q_out.get(timeout=30)]
        back += len(got)
    elapsed = time.perf_counter() - t0
    for _ in range(WORKERS):
        q_in.put(None)
    hist: dict = {}
    for _ in range(WORKERS):
        for k, v in res_q.get(timeout=30).items():
            hist[k] = hist.get(k, 0) + v
    for p in procs:
        p.join(30)
    return elapsed, hist


# ------------------------------------------------- shared_memory + offsets --

def _shm_worker(shm_name, q_in, q_out, res_q):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    buf = shm.buf
    counts = {}
    while True:
        off = q_in.get(timeout=30)
        if off is None:
            break
        p = buf[off + PROTO_AT]
        counts[p] = counts.get(p, 0) + 1
        q_out.put(off)
    del buf
    shm.close()
    res_q.put(counts)


def _run_shm(frames, n):
    from multiprocessing import shared_memory

    ctx = mp.get_context("fork")
    slots = 4096
    shm = shared_memory.SharedMemory(create=True, size=slots * PKT)
    try:
        q_in, q_out, res_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_shm_worker, args=(shm.name, q_in, q_out, res_q)) for _ in range(WORKERS)]
        for p in procs:
            p.start()
        buf = shm.buf
        free = list(range(0, slots * PKT, PKT))
        pkts = [frames[i].tobytes() for i in range(len(frames))]
        nf = len(pkts)
        sent = back = 0
        t0 = time.perf_counter()
        while back < n:
            while sent < n and free:
                off = free.pop()
                buf[off:off + PKT] = pkts[sent % nf]  # the one copy: "receive"
                q_in.put(off)
                sent += 1
            free.append(q_out.get(timeout=30))
            back += 1
        elapsed = time.perf_counter() - t0
        for _ in range(WORKERS):
            q_in.put(None)
        hist: dict = {}
        for _ in range(WORKERS):
            for k, v in res_q.get(timeout=30).items():
                hist[k] = hist.get(k, 0) + v
        for p in procs:
            p.join(30)
        del buf
    finally:
        shm.close()
        shm.unlink()
    return elapsed, hist


# ------------------------------------------------------------------ driver --

def _faster_fifo_missing() -> str | None:
    try:
        import faster_fifo  # noqa: F401
    except ImportError as exc:
        return f"faster-fifo is not installed ({exc}); pip install faster-fifo"
    return None


def run(quick: bool = False, rounds: int | None = None, packets: int | None = None) -> list[dict[str, Any]]:
    """One row per contender (packets/s, ratio to mp.Queue, or why skipped); best of the rounds."""
    n = packets or (20_000 if quick else 100_000)
    rounds = rounds or (2 if quick else 3)
    frames = _frames()
    want = _expected(frames, n)
    contenders = {
        "turbomem": lambda: _run_turbomem(frames, n),
        "mp_queue": lambda: _run_queue(frames, n, "mp_queue"),
        "faster_fifo": lambda: _run_queue(frames, n, "faster_fifo"),
        "shm_offsets": lambda: _run_shm(frames, n),
    }
    skipped = {"faster_fifo": _faster_fifo_missing()}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():  # alternating within one run
            if skipped.get(name):
                continue
            elapsed, hist = fn()
            if hist != want:
                raise AssertionError(f"{name} counted {hist}, expected {want}")
            times[name].append(elapsed)
    rows = []
    base = n / min(times["mp_queue"])
    for name in contenders:
        if skipped.get(name):
            rows.append({"name": name, "packets_per_sec": 0.0, "vs_mp_queue": 0.0, "skipped": skipped[name]})
            continue
        pps = n / min(times[name])
        rows.append({"name": name, "packets_per_sec": pps, "vs_mp_queue": pps / base,
                     "packets": n, "rounds": len(times[name]),
                     "runs_pps": [n / t for t in times[name]]})
    return rows


def suite(quick: bool = False, progress: Optional[Progress] = None) -> dict[str, Any]:
    """The suite's report: rows, goals and chart for the benchmark report."""
    if progress is not None:
        progress.update(0, 1, "multiprocess")
    rows = run(quick)
    if progress is not None:
        progress.update(1, 1, "multiprocess")
        progress.done()
    by = {r["name"]: r for r in rows}
    tm_pps = by["turbomem"]["packets_per_sec"]
    goals = [{"goal": "turbomem vs multiprocessing.Queue of bytes", "target_text": ">= 20x",
              "measured": by["turbomem"]["vs_mp_queue"], "met": by["turbomem"]["vs_mp_queue"] >= 20,
              "detail": "2 KB packets, 2 workers, same run"}]
    if not by["faster_fifo"].get("skipped"):
        ratio = tm_pps / by["faster_fifo"]["packets_per_sec"]
        goals.append({"goal": "turbomem vs faster-fifo of bytes", "target_text": ">= 3x", "measured": ratio,
                      "met": ratio >= 3, "detail": "2 KB packets, 2 workers, same run"})
    return {
        "suite": "multiprocess",
        "skipped": None,
        "notes": ["2 KB packets, 2 worker processes; parent receives (one copy into a buffer) and takes packets back; "
                  "workers read the protocol byte. turbomem moves 4-byte handles over SharedPool rings (no copy "
                  "between processes); the others move bytes (mp_queue, faster_fifo) or offsets into "
                  "multiprocessing.shared_memory (shm_offsets). Contenders alternate within one run; best round."],
        "columns": [{"key": "name", "title": "contender"},
                    {"key": "packets_per_sec", "title": "packets/s", "fmt": "d"},
                    {"key": "vs_mp_queue", "title": "vs mp.Queue", "fmt": "x"},
                    {"key": "packets", "title": "packets", "fmt": "d"}],
        "rows": rows,
        "goals": goals,
        "chart": {"title": "multiprocess: 2 KB packets through 2 workers, packets/s (higher is better)",
                  "labels": [r["name"] for r in rows if not r.get("skipped")],
                  "series": {"packets/s": [r["packets_per_sec"] for r in rows if not r.get("skipped")]},
                  "unit": "packets/s"},
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
