"""Hostile and wrong handles: every case its own test, each leaves the pool intact."""

from __future__ import annotations

import numpy as np
import pytest

import turbomem as tm
from cy.checks import assert_accounting
from turbomem.errors import DoubleFreeError, InvalidHandleError, TurbomemError

CAP = 16


@pytest.fixture
def pool():
    p = tm.Pool(16, CAP, cache_size=4, populate=False, hugepages="none")
    held = [p.get() for _ in range(5)]
    yield p, held
    p.close()


BAD_VALUES = {
    "negative": -1,
    "very_negative": -(2**70),
    "capacity": CAP,
    "2**32": 2**32,
    "2**32-1": 2**32 - 1,
    "2**64": 2**64,
    "2**100": 2**100,
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
@pytest.mark.parametrize("method", ["put", "view", "put_bulk"])
def test_out_of_range_handle(pool, name, method):
    p, held = pool
    h = BAD_VALUES[name]
    with pytest.raises(InvalidHandleError) as info:
        if method == "put_bulk":
            p.put_bulk([h])
        else:
            getattr(p, method)(h)
    assert str(CAP) in str(info.value) or "handle" in str(info.value)
    assert isinstance(info.value, TurbomemError) and isinstance(info.value, ValueError)
    assert_accounting(p, held)


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), "1", b"1", None, True, False, [1], 1j])
@pytest.mark.parametrize("method", ["put", "view", "is_in_use"])
def test_non_integer_handle_is_refused(pool, value, method):
    p, held = pool
    with pytest.raises(InvalidHandleError) as info:
        getattr(p, method)(value)
    assert type(value).__name__ in str(info.value)
    assert_accounting(p, held)


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
              np.intp, np.uintp, np.longlong, np.ulonglong]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_scalar_handles_work(pool, dtype):
    p, held = pool
    h = held.pop()
    assert p.is_in_use(dtype(h))
    assert len(p.view(dtype(h))) == 16
    p.put(dtype(h))
    assert not p.is_in_use(h)
    assert_accounting(p, held)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64], ids=lambda d: np.dtype(d).name)
def test_negative_numpy_scalar(pool, dtype):
    p, held = pool
    with pytest.raises(InvalidHandleError):
        p.put(dtype(-1))
    assert_accounting(p, held)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64], ids=lambda d: np.dtype(d).name)
def test_numpy_scalar_out_of_range(pool, dtype):
    p, held = pool
    with pytest.raises(InvalidHandleError):
        p.put(dtype(np.iinfo(dtype).max))
    assert_accounting(p, held)


@pytest.mark.parametrize("value", [np.float64(1.0), np.bool_(True), np.str_("1")],
                         ids=["float64", "bool_", "str_"])
def test_numpy_non_integer_scalar(pool, value):
    p, held = pool
    with pytest.raises(InvalidHandleError):
        p.put(value)
    assert_accounting(p, held)


def test_already_free_handle(pool):
    p, held = pool
    free = next(h for h in range(CAP) if h not in held)
    with pytest.raises(DoubleFreeError) as info:
        p.put(free)
    assert str(free) in str(info.value)
    assert_accounting(p, held)


def test_double_put(pool):
    p, held = pool
    h = held.pop()
    p.put(h)
    with pytest.raises(DoubleFreeError):
        p.put(h)
    assert_accounting(p, held)


def test_handle_of_another_pool_detected_when_free(pool):
    p, held = pool
    other = tm.Pool(16, CAP, populate=False, hugepages="none")
    try:
        h = other.get()  # in range for p too
        assert not p.is_in_use(h) or h in held
        if h in held:
            h = next(x for x in range(CAP) if x not in held)
        with pytest.raises(DoubleFreeError) as info:
            p.put(h)
        assert "another pool" in str(info.value)
        assert_accounting(p, held)
        assert other.in_use == 1
    finally:
        other.close()


def test_same_handle_twice_in_put_bulk(pool):
    p, held = pool
    with pytest.raises(DoubleFreeError) as info:
        p.put_bulk([held[0], held[1], held[0]])
    assert info.value.index == 2
    assert "nothing was returned" in str(info.value)
    assert_accounting(p, held)


def test_free_handle_among_valid_in_put_bulk(pool):
    p, held = pool
    free = next(h for h in range(CAP) if h not in held)
    with pytest.raises(DoubleFreeError) as info:
        p.put_bulk(np.array(held[:3] + [free] + held[3:], dtype=np.uint32))
    assert info.value.index == 3
    assert_accounting(p, held)


def test_is_in_use_out_of_range_is_false(pool):
    p, held = pool
    for h in (-1, CAP, 2**32, 2**64):
        assert p.is_in_use(h) is False
    assert_accounting(p, held)


@pytest.mark.parametrize("n", [-1, 1.0, "3", None, CAP + 1, 2**64])
def test_get_bulk_bad_counts(pool, n):
    p, held = pool
    with pytest.raises((ValueError, TypeError, tm.PoolEmptyError, OverflowError)):
        p.get_bulk(n)
    assert_accounting(p, held)
