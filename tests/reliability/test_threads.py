"""Threads: parked caches are stolen, exiting threads lose nothing, nogil stress."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import turbomem as tm
from support import park
from cy.checks import assert_accounting
from cy.tmstress_build import load_stress


@pytest.fixture(scope="session")
def stress():
    return load_stress()


@pytest.mark.parametrize("cache_size", [1, 8, 256, 512])
def test_steal_from_blocked_thread_single_gets(cache_size):
    cap = 1024
    p = tm.Pool(16, cap, cache_size=cache_size, populate=False)
    parked, release, seen = threading.Event(), threading.Event(), []
    a = threading.Thread(target=park, args=(p, cache_size, parked, release, seen))
    a.start()
    try:
        assert parked.wait(30)
        assert seen[0] >= min(cache_size, 1)  # A really parked objects
        assert p.available == cap and p.stats()["cached"] >= 1
        got = []
        for _ in range(cap):  # B: every single object, one get at a time
            got.append(p.get())
        assert len(set(got)) == cap
        assert p.try_get() == -1
        p.put_bulk(got)
    finally:
        release.set()
        a.join()
    assert_accounting(p, [])
    p.close()


@pytest.mark.parametrize("n_parkers", [1, 3, 8])
def test_steal_get_bulk_everything_from_several_blocked_threads(n_parkers):
    cap = 4096
    p = tm.Pool(16, cap, cache_size=512, populate=False)
    release = threading.Event()
    events = [threading.Event() for _ in range(n_parkers)]
    ts = [threading.Thread(target=park, args=(p, 512, e, release)) for e in events]
    for t in ts:
        t.start()
    try:
        assert all(e.wait(30) for e in events)
        assert p.stats()["cached"] > 0
        assert p.available == cap
        got = p.get_bulk(cap)  # one all-or-nothing call must find everything
        assert len(set(got.tolist())) == cap
        assert p.stats()["cached"] == 0
        p.put_bulk(got)
    finally:
        release.set()
        for t in ts:
            t.join()
    assert_accounting(p, [])
    p.close()


def test_available_and_stats_count_cached():
    p = tm.Pool(16, 100, cache_size=32, populate=False)
    hs = [p.get() for _ in range(20)]
    for h in hs:
        p.put(h)
    st = p.stats()
    assert st["cached"] > 0 and st["available"] == 100 and p.available == 100
    assert_accounting(p, [])
    p.close()


def test_thread_exit_with_full_cache_returns_everything():
    p = tm.Pool(16, 2000, cache_size=512, populate=False)

    def fill():
        hs = p.get_bulk(256).tolist() + [p.get() for _ in range(200)]
        for h in hs:
            p.put(h)

    for _ in range(8):
        t = threading.Thread(target=fill)
        t.start()
        t.join()
    # Thread.join() returns before the OS thread runs its TLS destructors, so
    # the cache may still be full for a moment; the objects count as free and
    # a get would steal them meanwhile.
    assert p.available == 2000
    deadline = time.monotonic() + 10
    while p.stats()["cached"] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert p.stats()["cached"] == 0  # the exit destructor returned them
    assert_accounting(p, [])
    p.close()


def test_thousands_of_short_lived_threads():
    p = tm.Pool(16, 3000, cache_size=16, populate=False)
    kept = []
    lock = threading.Lock()

    def worker(i):
        hs = [p.get() for _ in range(3)]
        for h in hs[:2]:
            p.put(h)
        with lock:
            kept.append(hs[2])

    for batch in range(40):
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert len(kept) == 2000
    assert p.stats()["threads"] <= 60  # slots are reused, not leaked
    assert_accounting(p, kept)
    p.put_bulk(kept)
    assert_accounting(p, [])
    p.close()


def test_threads_exit_while_others_in_bulk_calls(stress):
    p = tm.Pool(16, 8192, cache_size=64, populate=False)
    stop = np.zeros(1, np.uint8)
    churners = [threading.Thread(target=stress.bulk_churn_until, args=(p, stop, 2048, i + 1))
                for i in range(2)]
    for t in churners:
        t.start()
    try:
        for _ in range(100):
            def short():
                hs = p.get_bulk(32).tolist() if p.available >= 4096 else []
                for h in hs:
                    p.put(h)
            ts = [threading.Thread(target=short) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    finally:
        stop[0] = 1
        for t in churners:
            t.join()
    assert_accounting(p, [])
    p.close()


STRESS_CASES = [
    # threads, capacity, cache_size, ops per thread, max_hold, max_bulk
    (2, 4096, 256, 2_000_000, 256, 64),
    (4, 512, 32, 1_000_000, 128, 32),    # contended: often empty
    (8, 100, 8, 400_000, 32, 8),          # tiny pool, tiny caches: steals
    (16, 20_000, 512, 250_000, 512, 256),
    (16, 64, 0, 100_000, 8, 4),           # no caches at all
]


def _run_mixed_stress(stress, p, threads, kwargs_of):
    """tmstress.mixed_stress in `threads` threads at once (kwargs_of(i) for
    thread i); checks that no handle had two holders, no call failed
    unexpectedly, and every get was put back.  Returns the per-thread counters."""
    results = [None] * threads

    def run(i):
        results[i] = stress.mixed_stress(p, **kwargs_of(i))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r is not None for r in results)
    assert sum(r["token_errors"] for r in results) == 0, "two threads held one handle"
    assert sum(r["unexpected"] for r in results) == 0, results
    assert sum(r["gets"] for r in results) == sum(r["puts"] for r in results) > 0
    return results


@pytest.mark.parametrize("threads,cap,cache,ops,hold,bulk", STRESS_CASES)
def test_nogil_mixed_stress(stress, threads, cap, cache, ops, hold, bulk):
    """>= 10**7 operations in all (oversubscribed on 2 cores on purpose).  Odd
    threads call through the cache they looked up once (pool_cache_*), even
    ones through pool_get/put."""
    p = tm.Pool(64, cap, cache_size=cache, populate=False, stats=True)
    results = _run_mixed_stress(stress, p, threads, lambda i: dict(
        ops=ops, seed=1000 * threads + i, max_hold=hold, max_bulk=bulk, cached=bool(i & 1)))
    st = p.stats()
    assert st["gets"] == st["puts"] == sum(r["gets"] for r in results)
    assert_accounting(p, [])
    p.close()


def test_stress_total_is_at_least_ten_million():
    assert sum(t * ops for t, _, _, ops, _, _ in STRESS_CASES) >= 10**7


def test_get_never_fails_while_objects_parked(stress):
    """A nogil get/put loop in B, with A's cache holding most of a tiny pool."""
    p = tm.Pool(16, 64, cache_size=32, populate=False)
    parked, release = threading.Event(), threading.Event()
    a = threading.Thread(target=park, args=(p, 32, parked, release))
    a.start()
    try:
        assert parked.wait(30)
        held = p.get_bulk(31).tolist()  # leaves 1 free + whatever A parks
        assert stress.get_put_loop(p, 200_000) == 0
        p.put_bulk(held)
    finally:
        release.set()
        a.join()
    assert_accounting(p, [])
    p.close()


@pytest.mark.parametrize("checked", [True, False])
def test_nogil_mixed_stress_inline_hit_path(stress, checked):
    """The same without statistics, so that the inline hit paths run (a pool
    that keeps statistics takes the compiled paths), in both modes; half the
    threads pass the cache they looked up once."""
    p = tm.Pool(64, 2048, cache_size=64, populate=False, checked=checked)
    _run_mixed_stress(stress, p, 4, lambda i: dict(ops=300_000, seed=77 + i, max_hold=128, max_bulk=48,
                                                   failing=checked, cached=bool(i & 1)))
    assert_accounting(p, [])
    p.close()
