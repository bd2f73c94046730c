"""Ring: FIFO semantics, all-or-nothing bulk, bursts, blocking waits, MPMC conservation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import turbomem as tm


def test_fifo_and_empty_full():
    with tm.Ring(3) as r:
        assert r.capacity == 3 and len(r) == 0
        assert r.dequeue() == -1
        assert all(r.enqueue(h) for h in (7, 8, 9))
        assert not r.enqueue(10)  # exact capacity, not the power of two
        assert len(r) == 3
        assert [r.dequeue() for _ in range(4)] == [7, 8, 9, -1]


def test_bulk_is_all_or_nothing_and_burst_is_partial():
    r = tm.Ring(8)
    assert r.enqueue_bulk(np.arange(6, dtype=np.uint32))
    assert not r.enqueue_bulk(np.arange(3, dtype=np.uint32))  # only 2 free
    assert len(r) == 6
    assert r.enqueue_burst([100, 101, 102]) == 2
    assert r.dequeue_bulk(9) is None and len(r) == 8
    assert r.dequeue_bulk(3).tolist() == [0, 1, 2]
    assert r.dequeue_burst(10).tolist() == [3, 4, 5, 100, 101]
    assert r.dequeue_burst(4).tolist() == []
    assert r.enqueue_bulk([]) and len(r.dequeue_bulk(0)) == 0


def test_bad_input_raises():
    r = tm.Ring(4)
    for bad in (-1, 2**32, "x", None, 1.5, True):
        with pytest.raises(tm.InvalidHandleError):
            r.enqueue(bad)
    with pytest.raises(TypeError):
        r.enqueue_burst(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        r.enqueue_bulk(np.zeros((2, 2), np.uint32))
    with pytest.raises(ValueError):
        tm.Ring(0)
    with pytest.raises(ValueError):
        tm.Ring(2**31 + 1)
    assert len(r) == 0


def test_closed_ring_raises():
    r = tm.Ring(4)
    r.close()
    r.close()
    for call in (lambda: r.enqueue(1), r.dequeue, lambda: r.dequeue_burst(2), lambda: len(r),
                 lambda: r.dequeue_wait(0.01)):
        with pytest.raises(tm.PoolClosedError):
            call()


def test_dequeue_wait_times_out_without_holding_the_gil():
    r = tm.Ring(4)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.monotonic()
    assert r.dequeue_wait(timeout=0.2) == -1
    elapsed = time.monotonic() - start
    stop.set()
    t.join()
    assert elapsed >= 0.19
    assert len(ticks) > 10  # the other thread ran while we waited


def test_waiters_are_woken_by_producers_and_by_close():
    r = tm.Ring(2)
    got = []
    consumer = threading.Thread(target=lambda: got.append(r.dequeue_wait(timeout=10)))
    consumer.start()
    time.sleep(0.05)
    assert r.enqueue(42)
    consumer.join(10)
    assert got == [42]

    errors = []

    def waiter():
        try:
            r.dequeue_burst_wait(4)
        except tm.PoolClosedError as exc:
            errors.append(exc)

    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.05)
    r.close()
    w.join(10)
    assert not w.is_alive() and len(errors) == 1


def test_enqueue_burst_wait_moves_everything_through_a_small_ring():
    r = tm.Ring(16)
    items = np.arange(10_000, dtype=np.uint32)
    received = []

    def consumer():
        while sum(map(len, received)) < len(items):
            received.append(r.dequeue_burst_wait(64, timeout=10))

    c = threading.Thread(target=consumer)
    c.start()
    assert r.enqueue_burst_wait(items, timeout=10) == len(items)
    c.join(20)
    assert np.array_equal(np.concatenate(received), items)


def test_mpmc_conservation_and_per_producer_order():
    r = tm.Ring(64)
    producers, per_producer = 3, 20_000
    outputs = [[] for _ in range(3)]

    def produce(pid):
        vals = (np.arange(per_producer, dtype=np.uint32) | np.uint32(pid << 24))
        for chunk in np.array_split(vals, 500):
            assert r.enqueue_burst_wait(chunk, timeout=20) == len(chunk)

    done = threading.Event()

    def consume(cid):
        while True:
            got = r.dequeue_burst_wait(32, timeout=0.05)
            if len(got):
                outputs[cid].append(got)
            elif done.is_set() and len(r) == 0:
                return

    ps = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    cs = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in ps + cs:
        t.start()
    for t in ps:
        t.join()
    done.set()
    for t in cs:
        t.join()
    everything = np.concatenate([np.concatenate(o) for o in outputs if o])
    assert len(everything) == producers * per_producer
    assert len(np.unique(everything)) == len(everything)
    for o in outputs:  # within one consumer, each producer's values arrive in order
        if not o:
            continue
        seq = np.concatenate(o)
        for pid in range(producers):
            mine = seq[(seq >> 24) == pid] & 0xFFFFFF
            assert np.all(np.diff(mine.astype(np.int64)) > 0)
