"""Hostile input to every layer on top of the pool: Ring, packet I/O, pcap, parse.

One handle coercion, one timeout check and one count check serve them all
(turbomem/_checks.py), so the same bad value gets the same error everywhere
and changes nothing: no handle is put, enqueued, consumed or written.
"""

from __future__ import annotations

import io
import math
import socket
import tracemalloc

import numpy as np
import pytest

import turbomem as tm
from turbomem.errors import InvalidHandleError
from turbomem.packet import io as net
from turbomem.packet import parse as parse_mod
from turbomem.packet.pcap import PcapWriter
from turbomem.procfs import parse_cpulist

pytestmark = pytest.mark.pool_args(256, 64)

# Not a handle anywhere: each must raise InvalidHandleError (a ValueError).
BAD_SCALARS = {
    "negative": -1,
    "2**32": 2**32,
    "2**63": 2**63,
    "2**64": 2**64,
    "float": 1.7,
    "whole_float": 1.0,
    "nan": float("nan"),
    "bool": True,
    "np_bool": np.True_,
    "np_float": np.float64(1),
    "str": "1",
    "none": None,
    "complex": 1j,
    "0d_array": np.array(1),
    "1_element_array": np.array([1]),
    "list": [1],
}
# Whole arrays that are not handle arrays.
BAD_ARRAYS = {
    "float_dtype": np.array([1.0, 2.0]),
    "bool_dtype": np.array([True, False]),
    "object_floats": np.array([1.5, 2], dtype=object),
    "str_dtype": np.array(["1", "2"]),
    "2d": np.zeros((2, 2), np.uint32),
    "0d": np.array(3, np.uint32),
    "negative_int64": np.array([1, -1], np.int64),
    "wrap_to_valid": np.array([1, -(2**32) + 2], np.int64),
    "uint64_huge": np.array([1, 2**40], np.uint64),
}


def bulk_cases():
    """(id, value) pairs: a bad element among valid ones, and whole bad arrays."""
    for name, bad in BAD_SCALARS.items():
        if name not in ("2**32", "2**63", "2**64", "negative"):
            yield f"list_with_{name}", [2, bad]
    yield "list_with_negative", [2, -1]
    yield "list_with_2**32", [2, 2**32]
    yield "mixed_-1_2**63", [-1, 2**63]
    yield "list_with_2**64", [2, 2**64]
    yield from BAD_ARRAYS.items()


BULK = list(bulk_cases())


def length_of(value) -> int:
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return len(value)
    return 1


def held_state(pool):
    return pool.available, pool.in_use


# ------------------------------------------------------------------- Pool --

@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_pool_put_bulk_refuses_bad_handles_with_invalid_handle_error(pool, bad):
    held = pool.get_bulk(4)
    before = held_state(pool)
    with pytest.raises(InvalidHandleError):
        pool.put_bulk(bad[1])
    assert held_state(pool) == before
    pool.put_bulk(held)


def test_put_bulk_true_among_ints_is_not_handle_1(pool):
    held = pool.get_bulk(8)  # handles 0..7 in use, 1 among them
    with pytest.raises(InvalidHandleError) as info:
        pool.put_bulk([int(held[5]), True])
    assert info.value.index == 1
    assert pool.in_use == 8
    pool.put_bulk(held)


def test_put_bulk_of_minus_one_and_2_63_names_the_handle_not_a_dtype(pool):
    with pytest.raises(InvalidHandleError) as info:
        pool.put_bulk([-1, 2**63])
    assert "dtype" not in str(info.value) and "-1" in str(info.value)


@pytest.mark.parametrize("bad", list(BAD_SCALARS.items()), ids=list(BAD_SCALARS))
def test_pool_single_handle_calls_refuse_bad_handles(pool, bad):
    for call in (pool.put, pool.view, pool.is_in_use):
        if call == pool.is_in_use and bad[0] in ("negative", "2**32", "2**63", "2**64"):
            assert pool.is_in_use(bad[1]) is False  # a question, not an action
            continue
        with pytest.raises(InvalidHandleError):
            call(bad[1])
    assert pool.available == pool.capacity


@pytest.mark.parametrize("n", [True, False, np.True_, 1.0, "2", None])
def test_counts_are_ints_not_bools(pool, n):
    ring = tm.Ring(8)
    ring.enqueue_burst([1, 2])
    for call in (pool.get_bulk, ring.dequeue_bulk, ring.dequeue_burst,
                 lambda k: ring.dequeue_burst_wait(k, 0)):
        with pytest.raises(TypeError):
            call(n)
    assert pool.available == pool.capacity and len(ring) == 2


@pytest.mark.parametrize("n", [2**63, 2**70, np.uint64(2**64 - 1)])
def test_huge_counts_are_refused_cleanly(pool, n):
    with pytest.raises(tm.PoolEmptyError):
        pool.get_bulk(n)
    with pytest.raises(ValueError):
        tm.Ring(4).dequeue_burst(n)
    assert pool.available == pool.capacity


def test_numpy_int_counts_work(pool):
    pool.put_bulk(pool.get_bulk(np.int64(3)))
    ring = tm.Ring(8)
    ring.enqueue_burst([1, 2])
    assert list(ring.dequeue_bulk(np.uint8(2))) == [1, 2]


def put_bulk_peak_bytes(pool, held) -> int:
    tracemalloc.start()
    try:
        pool.put_bulk(held)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_put_bulk_copies_exactly_when_its_docstring_says():
    # Under 1024 handles a uint32 C-contiguous array is used in place; from
    # 1024 on (nogil) and in debug mode it is copied, and the docstring says
    # so (it used to promise zero copy for every uint32 array).
    doc = tm.Pool.put_bulk.__doc__
    assert "1024" in doc and "copied" in doc
    for debug, n, copies in ((False, 1000, False), (False, 1 << 16, True), (True, 1000, True)):
        pool = tm.Pool(64, 1 << 16, cache_size=0, debug=debug)
        try:
            held = pool.get_bulk(n)
            peak = put_bulk_peak_bytes(pool, held)
            assert (peak >= held.nbytes) == copies, (debug, n, peak)
            assert pool.available == pool.capacity
        finally:
            pool.close()


def test_numpy_ints_work_as_numa_node_and_cpu():
    p = tm.Pool(64, 4, numa_node=np.int64(0))  # node 0 exists on every Linux machine
    p.close()
    import os
    before = os.sched_getaffinity(0)
    try:
        tm.pin_thread(np.int64(sorted(before)[0]))
        tm.pin_thread([np.int32(c) for c in sorted(before)])
    finally:
        os.sched_setaffinity(0, before)
    for bad in (True, np.True_, 0.0):
        with pytest.raises(TypeError):
            tm.pin_thread(bad)
        with pytest.raises(TypeError):
            tm.Pool(64, 4, numa_node=bad)


@pytest.mark.parametrize("text", ["5-2", "3-1,4", "-1", "1-", "a", "0-2-4"])
def test_parse_cpulist_refuses_bad_ranges(text):
    with pytest.raises(ValueError):
        parse_cpulist(text)


def test_parse_cpulist_good():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("2-2") == [2]
    assert parse_cpulist("") == []


# ------------------------------------------------------------------- Ring --

@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_ring_bulk_calls_refuse_bad_handles(bad):
    value = bad[1]  # out of the uint32 range, or not an integer
    ring = tm.Ring(8)
    for call in (ring.enqueue_bulk, ring.enqueue_burst, lambda h: ring.enqueue_burst_wait(h, 0)):
        with pytest.raises(InvalidHandleError):
            call(value)
        assert len(ring) == 0


@pytest.mark.parametrize("bad", list(BAD_SCALARS.items()), ids=list(BAD_SCALARS))
def test_ring_single_calls_refuse_bad_handles(bad):
    ring = tm.Ring(8)
    for call in (ring.enqueue, lambda h: ring.enqueue_wait(h, 0)):
        with pytest.raises(InvalidHandleError):
            call(bad[1])
    assert len(ring) == 0


def test_ring_takes_the_full_uint32_range_and_numpy_scalars():
    ring = tm.Ring(8)
    assert ring.enqueue(2**32 - 1) and ring.enqueue(np.uint32(7)) and ring.enqueue(np.int64(0))
    assert ring.enqueue_bulk(np.array([2**32 - 1], np.uint64))
    assert [ring.dequeue() for _ in range(4)] == [2**32 - 1, 7, 0, 2**32 - 1]


def test_ring_refuses_more_than_2_32_handles_in_one_call():
    # calloc'd: 16 GiB of address space, no memory touched unless the length wraps
    huge = np.zeros(2**32 + 5, dtype=np.uint32)
    strided = np.broadcast_to(np.uint32(1), (2**32 + 5,))  # not contiguous: no copy either
    ring = tm.Ring(16)
    for arr in (huge, strided):
        for call in (ring.enqueue_bulk, ring.enqueue_burst, lambda h: ring.enqueue_burst_wait(h, 0)):
            with pytest.raises(ValueError):
                call(arr)
            assert len(ring) == 0


BAD_TIMEOUTS = {
    "nan": float("nan"), "np_nan": np.float64("nan"), "inf": math.inf, "-inf": -math.inf,
    "negative": -1, "tiny_negative": -1e-9, "str": "1", "bool": True, "np_bool": np.False_,
    "complex": 1j, "list": [1],
}


@pytest.mark.parametrize("timeout", list(BAD_TIMEOUTS.values()), ids=list(BAD_TIMEOUTS))
def test_ring_waits_check_the_timeout_before_anything(timeout):
    # The calls would not need to wait (an item is queued, there is room): the
    # timeout is still refused, and nothing moved.
    ring = tm.Ring(8)
    ring.enqueue(5)
    calls = (lambda: ring.dequeue_wait(timeout), lambda: ring.dequeue_burst_wait(4, timeout),
             lambda: ring.enqueue_wait(6, timeout), lambda: ring.enqueue_burst_wait([6], timeout))
    for call in calls:
        with pytest.raises((TypeError, ValueError)):
            call()
        assert len(ring) == 1


@pytest.mark.parametrize("timeout", [0, 0.0, np.float32(0.01), np.int64(0), 0.01, 10**12])
def test_ring_waits_take_finite_real_timeouts(timeout):
    ring = tm.Ring(2)
    ring.enqueue(5)
    assert ring.dequeue_wait(timeout) == 5
    assert ring.enqueue_wait(6, timeout) is True
    assert list(ring.dequeue_burst_wait(4, timeout)) == [6]
    assert ring.enqueue_burst_wait([1, 2], timeout) == 2


# ------------------------------------------------------------- packet I/O --

@pytest.fixture
def udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield rx, tx
    rx.close()
    tx.close()


@pytest.mark.parametrize("timeout", list(BAD_TIMEOUTS.values()), ids=list(BAD_TIMEOUTS))
def test_recv_and_send_refuse_bad_timeouts(pool, udp_pair, timeout):
    rx, tx = udp_pair
    tx.send(b"x")
    r = net.BurstReceiver(rx, pool, 4)
    with pytest.raises((TypeError, ValueError)):
        r.recv(timeout=timeout)
    h = pool.get_bulk(1)
    with pytest.raises((TypeError, ValueError)):
        net.BurstSender(tx, pool).send(h, [1], timeout=timeout)
    pool.put_bulk(h)
    assert pool.available == pool.capacity


def test_recv_takes_a_huge_timeout(pool, udp_pair):
    rx, tx = udp_pair
    tx.send(b"hello")
    hs, ls = net.BurstReceiver(rx, pool, 4).recv(timeout=1e12)
    assert list(ls) == [5]
    pool.put_bulk(hs)


@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_recv_into_bad_handles_is_refused_and_consumes_nothing(pool, udp_pair, bad):
    rx, tx = udp_pair
    held = pool.get_bulk(4)
    tx.send(b"data")
    with pytest.raises(InvalidHandleError):
        net.BurstReceiver(rx, pool, 8).recv(handles=bad[1], timeout=0)
    assert pool.in_use == 4
    pool.put_bulk(held)


def test_recv_refuses_repeated_and_free_handles(pool, udp_pair):
    rx, tx = udp_pair
    h = pool.get_bulk(2)
    tx.send(b"data")
    r = net.BurstReceiver(rx, pool, 8)
    for bad in ([h[0], h[0]], [h[0], h[1], h[0]], [h[0], 40], [int(h[0]), 1.0]):
        with pytest.raises(InvalidHandleError):
            r.recv(handles=bad, timeout=0)
        assert pool.in_use == 2  # refused: nothing consumed
    view = bytes(pool.view(40))
    assert bytes(pool.view(40)) == view  # the free object was not written
    got, ln = r.recv(handles=h, timeout=1)  # the datagram is still there
    assert list(ln) == [4]
    pool.put_bulk(got)


@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_send_refuses_bad_handles(pool, udp_pair, bad):
    rx, tx = udp_pair
    held = pool.get_bulk(4)
    value = bad[1]
    n = length_of(value)
    with pytest.raises(InvalidHandleError):
        net.BurstSender(tx, pool).send(value, [1] * n)
    assert pool.in_use == 4
    pool.put_bulk(held)


@pytest.mark.parametrize("lengths", [[-1], [1.5], [True], [257], np.array([1.0]), [2**64]])
def test_send_refuses_bad_lengths(pool, udp_pair, lengths):
    rx, tx = udp_pair
    h = pool.get_bulk(1)
    with pytest.raises((TypeError, ValueError)):
        net.BurstSender(tx, pool).send(h, lengths)
    pool.put_bulk(h)


# ------------------------------------------------------------------- pcap --

@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_pcap_writer_refuses_bad_handles(pool, bad):
    out = io.BytesIO()
    w = PcapWriter(out)
    value = bad[1]
    n = length_of(value)
    with pytest.raises(InvalidHandleError):
        w.write_burst(pool, value, [1] * n, [0] * n)
    assert out.getvalue()[24:] == b"" and w.packets == 0


# ------------------------------------------------------------------ parse --

@pytest.mark.parametrize("bad", BULK, ids=[c[0] for c in BULK])
def test_parse_refuses_bad_handles(pool, bad):
    held = pool.get_bulk(4)
    value = bad[1]
    n = length_of(value)
    with pytest.raises(InvalidHandleError):
        parse_mod.parse(pool, value, [60] * n)
    pool.put_bulk(held)


def test_parse_refuses_free_handles_and_bad_lengths(pool):
    h = pool.get_bulk(2)
    with pytest.raises(InvalidHandleError):
        parse_mod.parse(pool, [h[0], 50], [60, 60])  # 50 is free
    for lengths in ([-1, 60], [60], 60, [60.5, 60], [True, 60], np.array([60, -5])):
        with pytest.raises((TypeError, ValueError)):
            parse_mod.parse(pool, h, lengths)
    for wire in ([-1, 60], [60], [1.5, 2]):
        with pytest.raises((TypeError, ValueError)):
            parse_mod.parse(pool, h, [60, 60], wire_lengths=wire)
    info = parse_mod.parse(pool, h, [60, 60], wire_lengths=[100, 100])
    assert list(info["wire_len"]) == [100, 100]
    pool.put_bulk(h)
