"""The `python` suite: get+put of one object, from Python.

TurboMem's Pool (single get/put and get_bulk/put_bulk of 32 and 256) against
what Python code does today: a collections.deque free list of preallocated
buffers, queue.SimpleQueue, a list behind a threading.Lock, queue.Queue, and
allocating a fresh bytearray(2048) / numpy.empty(2048, uint8) per packet.
1 thread and 2 threads (sharing the one structure), threads pinned, one
warm-up round, then >= 5 repetitions with the cases alternated per round.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .report import Progress, summarize

# The entry points; the rest is the suite's machinery, not API.
__all__ = ["run", "load_pool_class"]


OBJ_SIZE = 2048
N_BUFFERS = 4096

FULL = dict(reps=5, seconds=0.25, threads=(1, 2), bulks=(32, 256))
QUICK = dict(reps=5, seconds=0.04, threads=(1, 2), bulks=(32, 256))
SMOKE = dict(reps=2, seconds=0.005, threads=(1,), bulks=(32,))


def load_pool_class() -> Tuple[Optional[type], Optional[str]]:
    """turbomem.Pool if the compiled core is importable, else (None, why)."""
    try:
        import turbomem  # noqa: F401

        Pool = getattr(turbomem, "Pool", None)
        if Pool is None:
            from turbomem._core import Pool
        return Pool, None
    except Exception as e:  # ImportError, or a broken build
        return None, "%s: %s" % (e.__class__.__name__, e)


# Each factory takes the shared state and returns run(iters) doing `iters`
# iterations of `bulk` objects each (one get + one put per object).

def _empty_loop(_state, bulk):
    def run(iters):
        for _ in range(iters):
            pass
    return run


def _tm_single(p, bulk):
    get, put = p.get, p.put

    def run(iters):
        for _ in range(iters):
            put(get())
    return run


def _tm_bulk(p, bulk):
    get_bulk, put_bulk = p.get_bulk, p.put_bulk

    def run(iters):
        for _ in range(iters):
            put_bulk(get_bulk(bulk))
    return run


def _deque_single(dq, bulk):
    pop, append = dq.pop, dq.append

    def run(iters):
        for _ in range(iters):
            append(pop())
    return run


def _deque_bulk(dq, bulk):
    pop, extend = dq.pop, dq.extend
    r = range(bulk)

    def run(iters):
        for _ in range(iters):
            extend([pop() for _ in r])
    return run


def _simplequeue(q, bulk):
    get, put = q.get_nowait, q.put

    def run(iters):
        for _ in range(iters):
            put(get())
    return run


def _locked_list(state, bulk):
    lst, lock = state

    def run(iters):
        for _ in range(iters):
            with lock:
                b = lst.pop()
            with lock:
                lst.append(b)
    return run


def _queue_queue(q, bulk):
    get, put = q.get_nowait, q.put_nowait

    def run(iters):
        for _ in range(iters):
            put(get())
    return run


def _bytearray(_state, bulk):
    def run(iters):
        for _ in range(iters):
            b = bytearray(OBJ_SIZE)  # noqa: F841
    return run


def _numpy_empty(_state, bulk):
    import numpy as np

    empty, u8 = np.empty, np.uint8

    def run(iters):
        for _ in range(iters):
            b = empty(OBJ_SIZE, u8)  # noqa: F841
    return run


def _cython_cimport(pool, bulk, cached=False):
    """The same work from Cython code that cimports the nogil API (no GIL held);
    `cached`: through the thread's cache looked up once (pool_thread_cache)."""
    from pathlib import Path

    from turbomem.cybuild import build_and_import

    mod = build_and_import("cimport_bench", Path(__file__).resolve().parent / "cimport_bench.pyx")

    def run(iters):
        mod.get_put(pool, iters, bulk, cached)
    return run


def _cython_cimport_cached(pool, bulk):
    return _cython_cimport(pool, bulk, cached=True)


def _buffers():
    return [bytearray(OBJ_SIZE) for _ in range(N_BUFFERS)]


def make_cases(bulks: List[int], Pool: Optional[type]) -> List[Dict[str, Any]]:
    """name, bulk, state factory, run factory, cleanup."""
    cases = [dict(name="empty for-loop (floor)", bulk=1, state=lambda: None, make=_empty_loop)]
    if Pool is not None:
        def pool_state():
            return Pool(OBJ_SIZE, N_BUFFERS, cache_size=256)
        cases.append(dict(name="turbomem Pool", bulk=1, state=pool_state, make=_tm_single, close=True))
        for b in bulks:
            cases.append(dict(name="turbomem Pool", bulk=b, state=pool_state, make=_tm_bulk, close=True))
        for b in (1,) + tuple(bulks):
            cases.append(dict(name="turbomem via Cython cimport", bulk=b, state=pool_state,
                              make=_cython_cimport, close=True))
        cases.append(dict(name="turbomem via Cython cimport, cache looked up once", bulk=1,
                          state=pool_state, make=_cython_cimport_cached, close=True))
    cases.append(dict(name="deque free list", bulk=1, state=lambda: collections.deque(_buffers()),
                      make=_deque_single))
    for b in bulks:
        cases.append(dict(name="deque free list", bulk=b, state=lambda: collections.deque(_buffers()),
                          make=_deque_bulk))

    def sq():
        q = queue.SimpleQueue()
        for x in _buffers():
            q.put(x)
        return q

    def qq():
        q = queue.Queue()
        for x in _buffers():
            q.put(x)
        return q

    cases += [
        dict(name="queue.SimpleQueue", bulk=1, state=sq, make=_simplequeue),
        dict(name="list + threading.Lock", bulk=1, state=lambda: (_buffers(), threading.Lock()),
             make=_locked_list),
        dict(name="queue.Queue", bulk=1, state=qq, make=_queue_queue),
        dict(name="bytearray(2048) per packet", bulk=1, state=lambda: None, make=_bytearray),
    ]
    try:
        import numpy  # noqa: F401

        cases.append(dict(name="numpy.empty(2048) per packet", bulk=1, state=lambda: None, make=_numpy_empty))
    except ImportError:
        pass
    return cases


def _pin(cpu: int) -> None:
    try:
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[cpu % len(allowed)]})  # pid 0: the calling thread
    except (AttributeError, OSError):
        pass


def timed(run: Callable[[int], None], iters: int, threads: int) -> float:
    """Wall seconds for `threads` threads each doing run(iters), started together."""
    if threads == 1:
        t0 = time.perf_counter()
        run(iters)
        return time.perf_counter() - t0
    bar = threading.Barrier(threads + 1)
    errors: List[BaseException] = []

    def body(i):
        _pin(i)
        bar.wait()
        try:
            run(iters)
        except BaseException as e:  # reported, not swallowed
            errors.append(e)
        bar.wait()

    ts = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    bar.wait()
    t0 = time.perf_counter()
    bar.wait()
    dt = time.perf_counter() - t0
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return dt


def calibrate(run: Callable[[int], None], seconds: float) -> int:
    """Iterations of ``run`` that take about ``seconds``."""
    iters = 64
    while True:
        t0 = time.perf_counter()
        run(iters)
        dt = time.perf_counter() - t0
        if dt >= seconds / 8 or iters >= 1 << 26:
            return max(16, int(iters * seconds / max(dt, 1e-9)))
        iters *= 4


COLUMNS = [
    {"key": "impl", "title": "implementation"},
    {"key": "bulk", "title": "bulk", "fmt": "d"},
    {"key": "threads", "title": "thr", "fmt": "d"},
    {"key": "ns", "title": "ns/obj", "fmt": "ns"},
    {"key": "ns_range", "title": "(min-max)", "fmt": "r"},
    {"key": "mops", "title": "Mobj/s", "fmt": "f"},
    {"key": "vs_deque", "title": "vs deque", "fmt": "x"},
]


def run(quick: bool = False, progress: Optional[Progress] = None,
        params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Python-level get/put against pure-Python free lists; a suite result (see report.py)."""
    params = dict(params or (QUICK if quick else FULL))
    Pool, why = load_pool_class()
    res: Dict[str, Any] = {"suite": "python", "skipped": None, "notes": [], "columns": COLUMNS,
                           "rows": [], "goals": [], "params": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in params.items()}}
    if Pool is None:
        res["notes"].append("TurboMem rows skipped: turbomem.Pool is not importable (%s)" % why)
    cases = make_cases(params["bulks"], Pool)
    try:
        main_aff = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        main_aff = None
    _pin(0)
    raw: List[Dict[str, Any]] = []
    total = len(cases) * len(params["threads"]) * (params["reps"] + 1)
    done = 0
    try:
        for threads in params["threads"]:
            # one state and one run() per case for this thread count
            live = []
            for c in cases:
                try:
                    st = c["state"]()
                    fn = c["make"](st, c["bulk"])
                    iters = calibrate(fn, params["seconds"] / threads)
                    live.append((c, st, fn, iters))
                except Exception as e:
                    res["notes"].append("%s bulk %d: setup failed: %s: %s" % (
                        c["name"], c["bulk"], e.__class__.__name__, e))
                    done += params["reps"] + 1
            for rep in range(-1, params["reps"]):  # rep -1: warm-up, discarded
                k = len(live)
                for i in range(k):
                    c, st, fn, iters = live[(i + max(rep, 0)) % k]
                    try:
                        dt = timed(fn, iters, threads)
                    except Exception as e:
                        res["notes"].append("%s bulk %d thr %d: %s: %s" % (
                            c["name"], c["bulk"], threads, e.__class__.__name__, e))
                        dt = None
                    done += 1
                    if progress:
                        progress.update(done, total, "python: %s bulk %d thr %d" % (c["name"], c["bulk"], threads))
                    if rep >= 0 and dt:
                        objs = iters * c["bulk"] * threads
                        raw.append({"impl": c["name"], "bulk": c["bulk"], "threads": threads, "rep": rep,
                                    "objects": objs, "seconds": dt, "rate_persec": objs / dt,
                                    "ns_per_obj": dt * 1e9 / objs})
            for c, st, fn, iters in live:
                if c.get("close") and hasattr(st, "close"):
                    st.close()
    finally:
        if main_aff is not None:
            try:
                os.sched_setaffinity(0, main_aff)
            except OSError:
                pass
        if progress:
            progress.done()
    res["raw"] = raw
    res["rows"] = build_rows(raw)
    res["goals"] = evaluate_goals(res["rows"], Pool is not None)
    res["chart"] = {"title": "python: ns per object (get+put), 1 thread (lower is better)",
                    "labels": ["%s b%d" % (r["impl"], r["bulk"]) for r in res["rows"] if r["threads"] == 1],
                    "series": {"ns/obj": [r["ns"] for r in res["rows"] if r["threads"] == 1]},
                    "unit": "ns per object", "log": True}
    res["notes"].append("one object = one get + one put; bulk rows: get_bulk(n)+put_bulk(arr) "
                        "(deque: n pops into a list + extend); 2 threads share one structure; "
                        "ns/obj = wall time / objects of all threads")
    return res


def build_rows(raw: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One report row per (implementation, bulk, threads) with ns per object and ratios."""
    keys = []
    for r in raw:
        k = (r["impl"], r["bulk"], r["threads"])
        if k not in keys:
            keys.append(k)
    rows = []
    for impl, bulk, threads in keys:
        ns = summarize(r["ns_per_obj"] for r in raw if (r["impl"], r["bulk"], r["threads"]) == (impl, bulk, threads))
        rows.append({"impl": impl, "bulk": bulk, "threads": threads, "ns": ns["median"], "ns_min": ns["min"],
                     "ns_max": ns["max"], "reps": ns["n"],
                     "ns_range": None if ns["min"] is None else "%.1f-%.1f" % (ns["min"], ns["max"]),
                     "mops": None if not ns["median"] else 1e3 / ns["median"]})
    for r in rows:
        dq = next((d for d in rows if d["impl"] == "deque free list" and d["threads"] == r["threads"]
                   and d["bulk"] == r["bulk"]), None)
        if dq and r["ns"]:
            r["vs_deque"] = dq["ns"] / r["ns"]
    return rows


def evaluate_goals(rows: List[Dict[str, Any]], have_pool: bool) -> List[Dict[str, Any]]:
    """The goals of the python suite, checked against the rows."""
    def get(impl, bulk, thr=1):
        return next((r for r in rows if (r["impl"], r["bulk"], r["threads"]) == (impl, bulk, thr)), None)

    goals = []
    tm256, dq256 = get("turbomem Pool", 256), get("deque free list", 256)
    tm1, dq1 = get("turbomem Pool", 1), get("deque free list", 1)
    skip = None if have_pool else "turbomem.Pool not importable"

    def goal(text, target_text, measured, met, detail):
        goals.append({"goal": text, "target_text": target_text, "measured": measured, "met": met,
                      "detail": skip or detail})

    cy1 = get("turbomem via Cython cimport", 1)
    goal("default pool: get_bulk(256) + put_bulk, ns per object", "<= 2 ns", tm256 and tm256["ns"],
         None if not tm256 else tm256["ns"] <= 2.0,
         "1 thread" + ("" if not dq256 else "; deque free list %.1f ns per object" % dq256["ns"]))
    y = tm1 and dq1 and tm1["ns"] / dq1["ns"]
    goal("default pool: get() + put(), TurboMem time / deque free list time", "<= 1.0x", y,
         None if not y else y <= 1.0,
         "" if not y else "TurboMem %.1f ns vs deque %.1f ns" % (tm1["ns"], dq1["ns"]))
    goal("default pool: Cython cimport get + put, ns", "<= 6 ns", cy1 and cy1["ns"],
         None if not cy1 else cy1["ns"] <= 6.0, "1 thread, nogil")
    return goals
