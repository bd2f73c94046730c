"""fork(): the child reclaims other threads' caches, the pool is private to each side."""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

import turbomem as tm
from support import fork_during, in_child, park
from cy.checks import assert_accounting
from cy.tmstress_build import load_stress


def test_child_reclaims_caches_of_threads_that_do_not_exist():
    p = tm.Pool(16, 1000, cache_size=256, populate=False)
    release = threading.Event()
    evs = [threading.Event() for _ in range(3)]
    ts = [threading.Thread(target=park, args=(p, 256, e, release)) for e in evs]
    for t in ts:
        t.start()
    assert all(e.wait(30) for e in evs)
    held = p.get_bulk(100).tolist()
    assert p.stats()["cached"] > 0

    def child():
        assert p.stats()["cached"] == 0  # reclaimed at fork
        assert_accounting(p, held)
        p.put_bulk(held)  # the child's puts stay in the child
        assert_accounting(p, [])
        more = p.get_bulk(1000)
        assert len(set(more.tolist())) == 1000

    try:
        assert in_child(child) == 0
        assert p.in_use == 100  # the parent is unaffected
        assert_accounting(p, held)
    finally:
        release.set()
        for t in ts:
            t.join()
    p.put_bulk(held)
    p.close()


def test_child_writes_do_not_reach_parent():
    p = tm.Pool(16, 10, populate=False)
    h = p.get()
    p.view(h)[:4] = b"PRNT"

    def child():
        p.view(h)[:4] = b"CHLD"
        p.put(h)
        assert p.available == 10

    assert in_child(child) == 0
    assert bytes(p.view(h)[:4]) == b"PRNT"
    assert p.is_in_use(h) and p.available == 9
    p.put(h)
    p.close()


def _mp_child(pool, held, q):
    try:
        assert_accounting(pool, held)
        pool.put_bulk(held)
        assert_accounting(pool, [])
        q.put("ok")
    except BaseException as e:  # pragma: no cover - reported through q
        q.put(repr(e))


def test_multiprocessing_fork_start_method():
    ctx = multiprocessing.get_context("fork")
    p = tm.Pool(16, 200, cache_size=32, populate=False)
    held = p.get_bulk(50).tolist()
    q = ctx.Queue()
    proc = ctx.Process(target=_mp_child, args=(p, held, q))
    proc.start()
    assert q.get(timeout=60) == "ok"
    proc.join(60)
    assert proc.exitcode == 0
    assert_accounting(p, held)
    p.put_bulk(held)
    p.close()


def test_pool_cannot_go_to_a_spawned_process():
    ctx = multiprocessing.get_context("spawn")
    p = tm.Pool(16, 10, populate=False)
    try:
        with pytest.raises(TypeError, match="pickled"):
            ctx.Process(target=print, args=(p,)).start()
    finally:
        p.close()


def test_fork_while_threads_are_inside_bulk_calls():
    """Forks taken while two nogil threads churn bulk calls: every child must
    find each free object exactly once and agree with its own accounting.
    Before d212e47 about a quarter of the children disagreed (and a flush cut
    by fork could put objects on the stack twice)."""
    stress = load_stress()
    cap = 256
    p = tm.Pool(64, cap, cache_size=8, populate=False)
    stop = np.zeros(1, np.uint8)
    ts = [threading.Thread(target=stress.bulk_churn_until, args=(p, stop, 4, i + 1)) for i in range(2)]

    def child():
        avail = p.available
        assert avail <= cap
        got = []
        for _ in range(cap + 1):
            h = p.try_get()
            if h < 0:
                break
            got.append(h)
        assert len(got) == len(set(got)), "duplicate handle in the child"
        assert len(got) == avail, (len(got), avail)
        for h in got:
            assert p.is_in_use(h)
        p.put_bulk(got)
        assert p.available == avail

    bad = fork_during(ts, stop, child, 150)
    assert not bad, bad
    assert_accounting(p, [])
    p.close()


def test_fork_debug_pool_child_gets_are_clean():
    p = tm.Pool(32, 64, cache_size=8, debug=True, populate=False)
    hs = p.get_bulk(40)
    p.put_bulk(hs[:20])

    def child():
        assert_accounting(p, hs[20:].tolist())

    assert in_child(child) == 0
    p.put_bulk(hs[20:])
    assert_accounting(p, [])
    p.close()
