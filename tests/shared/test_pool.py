"""SharedPool: objects and control in one mapping, several processes, ownership, recovery."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import uuid

import numpy as np
import pytest

from turbomem import procfs
from turbomem import shared as sh
from turbomem.errors import DoubleFreeError, InvalidHandleError, PoolClosedError, PoolEmptyError

from .helpers import hold_and_die, pool_worker


def test_get_put_exact_accounting_and_errors():
    with sh.SharedPool(100, 100, cache_size=8) as p:
        hs = p.get_bulk(100)
        assert sorted(hs.tolist()) == list(range(100))
        assert p.in_use == 100 and p.available == 0
        with pytest.raises(PoolEmptyError):
            p.get()
        with pytest.raises(PoolEmptyError):
            p.get_bulk(1)
        p.put_bulk(hs[:50])
        with pytest.raises(DoubleFreeError):
            p.put(int(hs[0]))
        with pytest.raises(DoubleFreeError):  # all or nothing: hs[60] stays held
            p.put_bulk([int(hs[60]), int(hs[0])])
        assert p.owner(int(hs[60]))[0] == "held"
        with pytest.raises(InvalidHandleError):
            p.put(100)
        with pytest.raises(InvalidHandleError):
            p.put_bulk([int(hs[70]), 2**32 - 1])
        for bad in (-1, 1.0, "3", None, True):
            with pytest.raises((TypeError, InvalidHandleError, ValueError)):
                p.put(bad)
        p.put_bulk(hs[50:])
        assert p.available == 100
        assert p.audit()["ok"]


def test_objects_live_in_the_mapping():
    with sh.SharedPool(2048, 4) as p:
        h = p.get()
        p.view(h)[:5] = b"hello"
        assert bytes(p.objects()[h, :5]) == b"hello"
        assert len(p.view(h)) == 2048
        with pytest.raises(InvalidHandleError):
            p.view(4)
        p.put(h)


@pytest.mark.parametrize("kw", [dict(capacity=0, obj_size=1), dict(capacity=1, obj_size=0),
                                dict(capacity=4, obj_size=8, cache_size=5), dict(capacity=4, obj_size=8, rings=-1),
                                dict(capacity=4, obj_size=8, rings=1, ring_capacity=0),
                                dict(capacity=4, obj_size=8, max_slots=0), dict(capacity=True, obj_size=8),
                                dict(capacity=4, obj_size=8, hugepages="yes"), dict(capacity=4, obj_size=8.0)])
def test_constructor_validates(kw):
    with pytest.raises((ValueError, TypeError)):
        sh.SharedPool(**kw)


def test_closed_pool_raises_and_views_survive():
    p = sh.SharedPool(64, 4)
    h = p.get()
    v = p.view(h)
    p.close()
    v[:2] = b"ok"  # the mapping stays while a view exists: no crash
    with pytest.raises(PoolClosedError):
        p.get()
    p.close()


def test_threads_get_their_own_slots_and_caches():
    with sh.SharedPool(64, 4096, cache_size=32) as p:
        barrier = threading.Barrier(4)

        def work():
            p.put(p.get())
            barrier.wait()  # all four alive at once: four slots
            for _ in range(200):
                p.put_bulk(p.get_bulk(7))
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert len(p._v.slots()) == 4
        ts = [threading.Thread(target=work) for _ in range(4)]  # exited threads' slots are reused
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert len(p._v.slots()) == 4
        assert p.available == 4096 and p.audit()["ok"]


def test_ring_moves_ownership_and_takes_many_producers():
    with sh.SharedPool(64, 64, rings=1, ring_capacity=8) as p:
        r = p.ring(0)
        hs = p.get_bulk(8)
        assert r.enqueue_bulk(hs)
        assert not r.enqueue(int(p.get()), timeout=0)  # full
        assert all(p.owner(int(h))[0] == "ring" for h in hs)
        with pytest.raises(InvalidHandleError):  # in a ring: not the caller's to put
            p.put(int(hs[0]))
        got = r.dequeue_burst(8)
        assert got.tolist() == hs.tolist()
        assert all(p.owner(int(h))[0] == "held" for h in got)
        with pytest.raises(DoubleFreeError):
            p.put_bulk(got.tolist() + [int(got[0])])
        p.put_bulk(got)
        free_h = int(got[0])
        with pytest.raises(InvalidHandleError):  # a free object cannot be enqueued
            r.enqueue(free_h)
        other = []  # another thread (another slot) produces on the same ring
        t = threading.Thread(target=lambda: other.append((r.enqueue(h := p.get()), h)))
        t.start()
        t.join()
        assert other[0][0] and r.dequeue() == other[0][1]
        with pytest.raises(IndexError):
            p.ring(1)


def test_each_process_keeps_its_own_stats():
    with sh.SharedPool(64, 64) as p:
        p.put(p.get())
        pid = os.fork()
        if pid == 0:
            ok = p.stats()["gets"] == 0
            p.put_bulk(p.get_bulk(3))
            ok = ok and p.stats()["gets"] == 3
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert p.stats()["gets"] == 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("named", [False, True])
def test_pipeline_between_processes(method, named):
    name = "test-" + uuid.uuid4().hex[:10] if named else None
    p = sh.SharedPool(2048, 256, rings=2, ring_capacity=64, name=name)
    try:
        proc = mp.get_context(method).Process(target=pool_worker, args=(p, 50))
        proc.start()
        sent = {}
        for i in range(50):
            h = p.get()
            p.view(h)[:4] = i.to_bytes(4, "little")
            sent[h] = i
            assert p.ring(0).enqueue(h, timeout=20)
        for _ in range(50):
            h = p.ring(1).dequeue(timeout=20)
            assert int.from_bytes(p.view(h)[:4], "little") == 2 * sent.pop(h)  # same memory, no copy
            p.put(h)
        proc.join(20)
        assert proc.exitcode == 0 and not sent
        p.recover()
        assert p.available == 256 and p.audit()["ok"]
    finally:
        p.unlink()
        p.close()


def test_pickle_sends_name_or_fd_only():
    from multiprocessing.reduction import ForkingPickler

    name = "test-" + uuid.uuid4().hex[:10]
    with sh.SharedPool(2048, 1024, name=name) as p:  # 2 MB of objects
        data = pickle.dumps(p)
        assert len(data) < 200
        with pickle.loads(data) as q:
            h = q.get()
            assert p.owner(h)[0] == "held"
            q.put(h)
        p.unlink()
    with sh.SharedPool(2048, 1024) as p:
        assert len(ForkingPickler.dumps(p)) < 300


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigkilled_process_is_recovered_ring_contents_stay(method):
    ctx = mp.get_context(method)
    with sh.SharedPool(64, 64, rings=1, ring_capacity=32, cache_size=8) as p:
        q = ctx.Queue()
        proc = ctx.Process(target=hold_and_die, args=(p, 20, q))
        proc.start()
        pid = q.get(timeout=30)
        os.kill(pid, signal.SIGKILL)
        proc.join(10)
        c = p.census()
        assert sum(c["held"].values()) == 10 and c["ring"] == {0: 10}
        res = p.recover()
        assert res["objects"] >= 10 and res["slots"][0]["pid"] == pid
        c = p.census()
        assert c["held"] == {} and c["ring"] == {0: 10}  # what it enqueued stays
        got = p.ring(0).dequeue_burst(32)  # the dead producer's handles are still good
        assert len(got) == 10
        p.put_bulk(got)
        assert p.available == 64 and p.audit()["ok"]


def test_next_process_finding_the_pool_short_recovers():
    with sh.SharedPool(64, 16, cache_size=4) as p:
        pid = os.fork()
        if pid == 0:
            p.get_bulk(16)
            os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
        hs = p.get_bulk(16)  # empty at first; the dead child's objects come back
        assert len(hs) == 16
        p.put_bulk(hs)


def test_zombie_counts_as_dead_and_pid_reuse_is_guarded():
    with sh.SharedPool(64, 8, cache_size=0) as p:
        pid = os.fork()
        if pid == 0:
            p.get()
            os._exit(0)
        while procfs.process_state(pid) and procfs.process_state(pid).state != "Z":
            pass
        assert p.recover()["objects"] == 1  # a zombie is dead
        os.waitpid(pid, 0)
        assert not sh._is_alive(os.getpid(), 1)  # same pid, other start time: not the same process


def test_close_gives_back_what_this_process_held():
    with sh.SharedPool(64, 8, name="test-" + uuid.uuid4().hex[:10]) as p:
        q = sh.SharedPool.attach(p.name)
        q.get_bulk(5)
        q.close()
        assert p.available == 8
        p.unlink()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_memfd_pool_sent_through_a_queue(method):
    from .helpers import pool_from_queue

    ctx = mp.get_context(method)
    q, done = ctx.Queue(), ctx.Queue()
    with sh.SharedPool(64, 16, rings=1) as p:
        proc = ctx.Process(target=pool_from_queue, args=(q, done))
        proc.start()
        q.put(p)  # pickled as a DupFd: the descriptor travels, the memory does not
        h = p.get()
        p.ring(0).enqueue(h)
        assert done.get(timeout=30) is None  # anonymous: no name
        proc.join(20)
        assert proc.exitcode == 0
        assert bytes(p.objects()[h, :3]) == b"got" and p.owner(h)[0] in ("cached", "free")
        p.recover()
        assert p.available == 16


def test_hugetlb_without_pages_falls_back_and_says_why(monkeypatch, hugetlb_lock):
    """Pretend the free-page count said yes: the kernel then really refuses the
    MFD_HUGETLB mapping (no pages); 'auto' falls back to 4 KB pages and says
    so, 'hugetlb' raises."""
    from turbomem.errors import HugePageError

    free = procfs.hugetlb_pool()
    need = sh.pool_layout(2000, 2048, 32, 64, 0, 0, 2 << 20)["total_size"] // (2 << 20)
    if free.free - free.reserved >= need:
        pytest.skip("enough hugetlb pages are free here: the fallback cannot be provoked")
    monkeypatch.setattr(sh, "_hugetlb_pages_free", lambda: 10**6)
    with sh.SharedPool(2048, 2000) as p:
        h = p.get()
        p.view(h)[:2] = b"ok"
        rep = p.hugepage_report()
        assert rep["page_size"] == 4096 and not rep["hugetlb"]
        assert "MFD_HUGETLB of" in rep["reason"] and "refused" in rep["reason"]
        p.put(h)
    with pytest.raises(HugePageError, match="refused"):
        sh.SharedPool(2048, 2000, hugepages="hugetlb")


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
def test_pool_ring_timeouts_validated(bad):
    with sh.SharedPool(64, 8, rings=1) as p:
        with pytest.raises((ValueError, TypeError)):
            p.ring(0).dequeue(timeout=bad)
        h = p.get()
        with pytest.raises((ValueError, TypeError)):
            p.ring(0).enqueue(h, timeout=bad)
        assert p.owner(h)[0] == "held"  # nothing happened
        p.put(h)


def test_pool_ring_wait_interrupted_by_signal():
    import time

    with sh.SharedPool(64, 8, rings=1) as p:
        def boom(*_):
            raise KeyboardInterrupt
        old = signal.signal(signal.SIGALRM, boom)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                p.ring(0).dequeue(timeout=None)
            assert time.monotonic() - t < 0.1 + 0.2
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        h = p.get()
        assert p.ring(0).enqueue(h) and p.ring(0).dequeue() == h  # the ring still works
        p.put(h)
