"""SharedRing: ring.h in a shared mapping, futex waits, pickling by name or fd."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

from turbomem import shared as sh
from turbomem.errors import PoolClosedError

from .helpers import ring_echo


def test_fifo_bulk_burst_and_capacity():
    with sh.SharedRing(5) as r:
        assert r.put_bulk(range(5))
        assert not r.put(9)  # full, no wait
        assert not r.put_bulk([1, 2])  # all or nothing
        assert len(r) == 5
        assert r.get_burst(3).tolist() == [0, 1, 2]
        assert r.get_burst(10).tolist() == [3, 4]
        assert r.get() is None


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True, 1j])
def test_timeouts_validated(bad):
    with sh.SharedRing(4) as r:
        with pytest.raises((ValueError, TypeError)):
            r.get(timeout=bad)
        with pytest.raises((ValueError, TypeError)):
            r.put(1, timeout=bad)


def test_values_validated():
    with sh.SharedRing(4) as r:
        for bad in (-1, 2**32, 1.5, "x", None, True):
            with pytest.raises((TypeError, ValueError)):
                r.put(bad)
        with pytest.raises((TypeError, ValueError)):
            r.put_bulk(np.array([1.0, 2.0]))
        with pytest.raises(ValueError):
            r.get_burst(-1)


def test_timeout_is_honoured():
    with sh.SharedRing(4) as r:
        t = time.monotonic()
        assert r.get(timeout=0.2) is None
        assert 0.15 < time.monotonic() - t < 2


def test_sleeping_consumer_is_woken_and_counted():
    with sh.SharedRing(4) as r:
        got = []
        th = threading.Thread(target=lambda: got.append(r.get(timeout=10)))
        th.start()
        deadline = time.monotonic() + 5
        while r.waiters()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert r.waiters()[0] == 1  # asleep on the futex, not spinning
        t = time.monotonic()
        r.put(7)
        th.join(5)
        assert got == [7] and time.monotonic() - t < 1
        assert r.waiters() == (0, 0)


def test_blocked_producer_is_woken():
    with sh.SharedRing(1) as r:
        r.put(1)
        th = threading.Thread(target=lambda: time.sleep(0.05) or r.get())
        th.start()
        assert r.put(2, timeout=5)
        th.join()
        assert r.get() == 2


def test_wait_interrupted_by_signal_within_100ms():
    with sh.SharedRing(4) as r:
        old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            t = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                r.get(timeout=None)
            assert time.monotonic() - t < 0.1 + 0.2  # 50 ms slices; slack for a loaded 2-core box
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert r.waiters() == (0, 0)


def test_closed_ring_raises():
    r = sh.SharedRing(4)
    r.close()
    with pytest.raises(PoolClosedError):
        r.get()
    r.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("named", [False, True])
def test_between_processes(method, named):
    name = "test-" + uuid.uuid4().hex[:10] if named else None
    a = sh.SharedRing(64, name=name)
    b = sh.SharedRing(64, single_producer=True, single_consumer=True)
    try:
        ctx = mp.get_context(method)
        p = ctx.Process(target=ring_echo, args=(a, b, 100))
        p.start()
        for i in range(100):  # <= both capacities: no cross-wait
            assert a.put(i, timeout=20)
        out = [b.get(timeout=20) for _ in range(100)]
        p.join(20)
        assert p.exitcode == 0
        assert out == [i + 1 for i in range(100)]
    finally:
        a.unlink()
        a.close()
        b.close()


def test_pickle_sends_name_or_fd_not_memory():
    import pickle
    from multiprocessing.reduction import ForkingPickler

    name = "test-" + uuid.uuid4().hex[:10]
    with sh.SharedRing(1 << 16, name=name) as r:
        data = pickle.dumps(r)
        assert len(data) < 200 and name.encode() in data
        r.put(5)
        with pickle.loads(data) as r2:
            assert r2.get() == 5
        r.unlink()
    with sh.SharedRing(1 << 16) as r:
        assert len(ForkingPickler.dumps(r)) < 300  # a descriptor, not 256 KB of ring


def test_idle_consumer_sleeps_in_the_kernel():
    """A consumer blocked for a second on an empty ring burns (almost) no CPU:
    it sleeps on the futex word, it does not spin."""
    from .helpers import idle_consumer

    ctx = mp.get_context("fork")
    with sh.SharedRing(4) as r:
        out = ctx.Queue()
        p = ctx.Process(target=idle_consumer, args=(r, out))
        p.start()
        deadline = time.monotonic() + 10
        while r.waiters()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        r.put(99)
        v, cpu = out.get(timeout=20)
        p.join(10)
        assert v == 99
        assert cpu < 0.1, f"the idle consumer used {cpu:.2f} s of CPU in ~1 s of waiting"
