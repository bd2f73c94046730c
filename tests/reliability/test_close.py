"""close() and garbage collection while views, arrays or threads still use the pool."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

import turbomem as tm
from turbomem.errors import PoolClosedError

from support import maps_count

REPO = Path(__file__).resolve().parents[2]


def test_every_call_after_close_is_pool_closed_error():
    p = tm.Pool(16, 10, populate=False)
    h = p.get()
    p.close()
    p.close()  # idempotent
    calls = [p.get, p.try_get, lambda: p.put(h), lambda: p.get_bulk(1), lambda: p.put_bulk([h]),
             lambda: p.view(h), p.array, p.buffer, p.stats, lambda: p.available, lambda: p.in_use,
             lambda: p.is_in_use(h), p.hugepage_report, lambda: p.address, p.__enter__]
    for call in calls:
        with pytest.raises(PoolClosedError):
            call()
    assert p.closed and p.memory_released
    assert "closed" in repr(p)


@pytest.mark.parametrize("kind", ["view", "array", "buffer", "frombuffer", "slice_of_view"])
def test_close_with_live_export_defers_unmap(kind):
    """array() unmapped under a live array (SIGSEGV on write) before the fix."""
    p = tm.Pool(16, 10, populate=False)
    h = p.get()
    if kind == "view":
        v = p.view(h)
    elif kind == "array":
        v = p.array()
    elif kind == "buffer":
        v = p.buffer()
    elif kind == "frombuffer":
        v = np.frombuffer(p.buffer(), dtype=np.uint8)
    else:
        v = p.view(h)[2:6]
    p.close()
    assert not p.memory_released  # the export keeps the memory mapped
    idx = (0, 0) if kind == "array" else 0
    v[idx] = 7  # still valid memory: no segfault
    assert v[idx] == 7
    del v
    gc.collect()
    assert p.memory_released


def test_gc_of_pool_with_live_array_keeps_memory():
    p = tm.Pool(16, 100, populate=False)
    a = p.array()
    region = weakref.ref(p.region)
    del p
    gc.collect()
    a[:] = 3  # the array keeps the mapping alive
    assert int(a.sum()) == 3 * a.size
    assert region() is not None and not region().closed
    del a
    gc.collect()
    assert region() is None or region().closed


def test_close_while_another_thread_is_in_nogil_bulk_call():
    """debug=True bulk calls read and write object memory without the GIL;
    close() from another thread must not unmap it under them (SIGSEGV before
    fc0a474).  Run in a subprocess so a crash is a failure, not a lost worker."""
    code = textwrap.dedent("""
        import threading, turbomem as tm
        for debug in (True, False):
            for it in range(60):
                p = tm.Pool(4096, 4096, debug=debug, populate=False, cache_size=0)
                hs = p.get_bulk(4096)
                go = threading.Event()
                def worker():
                    go.set()
                    try:
                        p.put_bulk(hs)
                        p.get_bulk(4096)
                    except tm.PoolClosedError:
                        pass
                t = threading.Thread(target=worker); t.start(); go.wait()
                p.close()
                t.join()
                assert p.memory_released, "unmapped once the call left"
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


def test_handle_array_rewritten_during_nogil_put_bulk():
    """Another thread rewrites the caller's handle array while put_bulk runs
    without the GIL: the pool must not use the unchecked values (out-of-bounds
    state write before fc0a474)."""
    code = textwrap.dedent("""
        import threading, turbomem as tm
        cap = 200_000
        for it in range(15):
            p = tm.Pool(8, cap, populate=False, cache_size=0)
            hs = p.get_bulk(cap)
            good = hs[-1000:].copy()
            stop = False
            started = threading.Event()
            def scribbler():
                started.set()
                while not stop:
                    hs[-1000:] = 0xFFFFFFF0
                    hs[-1000:] = good
            t = threading.Thread(target=scribbler); t.start(); started.wait()
            try:
                p.put_bulk(hs)
            except tm.InvalidHandleError:
                pass
            stop = True; t.join()
            n = p.available
            got = p.get_bulk(n).tolist() if n else []
            assert p.try_get() == -1
            assert len(set(got)) == len(got) and all(h < cap for h in got)
            p.close()
        print("OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


def test_close_while_cython_threads_loop_is_refused_or_waits():
    # the cimport contract: the caller keeps the pool open while inside; the
    # Python API refuses new calls with PoolClosedError once closed.
    p = tm.Pool(16, 100, populate=False)
    results = []

    def user():
        for _ in range(2000):
            try:
                h = p.get()
                p.put(h)
            except PoolClosedError:
                results.append("closed")
                return
        results.append("done")

    ts = [threading.Thread(target=user) for _ in range(4)]
    for t in ts:
        t.start()
    p.close()
    for t in ts:
        t.join()
    assert len(results) == 4


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_ten_thousand_pools_leave_maps_and_rss_flat():
    for _ in range(200):  # warm-up: allocator arenas, caches
        tm.Pool(64, 64, populate=False).close()
    gc.collect()
    maps0, rss0 = maps_count(), _rss_kb()
    for i in range(10_000):
        p = tm.Pool(64, 64, cache_size=8, populate=(i % 50 == 0))
        h = p.get()
        p.put(h)
        if i % 3 == 0:
            p.close()
        elif i % 3 == 1:
            v = p.view(h)
            p.close()
            del v
        else:
            del p  # garbage collection only
    gc.collect()
    assert maps_count() <= maps0 + 4, (maps_count(), maps0)
    assert _rss_kb() <= rss0 + 16 * 1024, (_rss_kb(), rss0)  # MB-scale growth would be a leak


def test_threads_still_using_pool_when_gc_runs():
    p = tm.Pool(16, 100, populate=False)
    stop = threading.Event()
    errors = []

    def user(pool):
        try:
            while not stop.is_set():
                h = pool.get()
                pool.put(h)
        except PoolClosedError:
            pass
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=user, args=(p,)) for _ in range(3)]
    for t in ts:
        t.start()
    del p  # the threads' references keep it alive
    gc.collect()
    stop.set()
    for t in ts:
        t.join()
    assert not errors
