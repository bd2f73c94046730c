"""Arrays given to put_bulk: every malformed case is refused whole (all-or-nothing)."""

from __future__ import annotations

import numpy as np
import pytest

import turbomem as tm
from cy.checks import assert_accounting
from turbomem.errors import DoubleFreeError, InvalidHandleError

CAP = 64


@pytest.fixture
def pool():
    p = tm.Pool(16, CAP, cache_size=8, populate=False, hugepages="none")
    held = p.get_bulk(20).tolist()
    yield p, held
    p.close()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint64], ids=lambda d: np.dtype(d).name)
def test_other_integer_dtypes_convert_safely(pool, dtype):
    p, held = pool
    give = [h for h in held if h <= np.iinfo(dtype).max][:5]
    p.put_bulk(np.array(give, dtype=dtype))
    assert_accounting(p, set(held) - set(give))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.bool_, object, "U3", "S3"],
                         ids=str)
def test_non_integer_dtype_is_type_error_naming_dtype(pool, dtype):
    p, held = pool
    arr = np.array(held[:3]).astype(dtype)
    with pytest.raises(TypeError) as info:
        p.put_bulk(arr)
    assert "dtype" in str(info.value)
    assert_accounting(p, held)


def test_negative_in_signed_array_wrapping_to_valid_is_refused(pool):
    # -2**32 + h would wrap to h if cast blindly to uint32
    p, held = pool
    arr = np.array([held[0], held[1] - 2**32], dtype=np.int64)
    with pytest.raises(InvalidHandleError) as info:
        p.put_bulk(arr)
    assert info.value.index == 1
    assert_accounting(p, held)


def test_2d_array(pool):
    p, held = pool
    with pytest.raises(ValueError, match="1-D"):
        p.put_bulk(np.array(held[:4], dtype=np.uint32).reshape(2, 2))
    assert_accounting(p, held)


def test_0d_array(pool):
    p, held = pool
    with pytest.raises(ValueError):
        p.put_bulk(np.uint32(held[0]))
    assert_accounting(p, held)


def test_non_contiguous_is_copied(pool):
    p, held = pool
    arr = np.array(held, dtype=np.uint32)[::2]
    assert not arr.flags.c_contiguous
    p.put_bulk(arr)
    assert_accounting(p, set(held) - set(arr.tolist()))


def test_read_only_array(pool):
    p, held = pool
    arr = np.array(held[:6], dtype=np.uint32)
    arr.setflags(write=False)
    p.put_bulk(arr)
    assert arr.tolist() == held[:6]  # untouched
    assert_accounting(p, held[6:])


def test_byteswapped_array(pool):
    p, held = pool
    arr = np.array(held[:6], dtype=">u4")
    p.put_bulk(arr)
    assert_accounting(p, held[6:])


@pytest.mark.parametrize("empty", [[], (), np.empty(0, np.uint32), np.empty(0, np.int64)],
                         ids=["list", "tuple", "u32", "i64"])
def test_empty(pool, empty):
    p, held = pool
    p.put_bulk(empty)
    assert_accounting(p, held)


def test_empty_float_array_is_refused(pool):
    p, held = pool
    with pytest.raises(TypeError):
        p.put_bulk(np.empty(0, np.float64))
    assert_accounting(p, held)


def test_longer_than_capacity(pool):
    p, held = pool
    arr = np.array(held * 10, dtype=np.uint32)
    assert len(arr) > CAP
    with pytest.raises(DoubleFreeError):
        p.put_bulk(arr)
    assert_accounting(p, held)


def test_every_handle_plus_one_more(pool):
    p, held = pool
    rest = p.get_bulk(CAP - len(held)).tolist()
    everything = held + rest
    with pytest.raises(DoubleFreeError):
        p.put_bulk(everything + [everything[7]])
    assert_accounting(p, everything)
    p.put_bulk(rest)
    assert_accounting(p, held)


@pytest.mark.parametrize("bad", [-1, CAP, 2**32, 2**64, "x", None, 1.5])
@pytest.mark.parametrize("where", [0, 10, -1])
def test_one_bad_element_returns_nothing(pool, bad, where):
    p, held = pool
    items = list(held)
    items.insert(where if where >= 0 else len(items), bad)
    with pytest.raises((InvalidHandleError, TypeError)):
        p.put_bulk(items)
    assert_accounting(p, held)


@pytest.mark.parametrize("where", [0, 10, 19])
def test_one_free_handle_among_valid_large_bulk(where):
    # >= 1024 handles: the nogil path
    p = tm.Pool(8, 5000, populate=False, hugepages="none")
    try:
        held = p.get_bulk(3000).tolist()
        free = next(h for h in range(5000) if h not in set(held))
        arr = np.array(held, dtype=np.uint32)
        arr[where * 100] = free
        with pytest.raises(DoubleFreeError) as info:
            p.put_bulk(arr)
        assert info.value.index == where * 100
        assert_accounting(p, held)
    finally:
        p.close()


def test_generator_and_list_subclass(pool):
    p, held = pool

    class L(list):
        pass

    p.put_bulk(L(held[:3]))
    assert_accounting(p, held[3:])
    with pytest.raises((TypeError, ValueError)):
        p.put_bulk(h for h in held[3:6])  # not an array
    assert_accounting(p, held[3:])


def test_array_living_inside_the_pool_debug():
    """The handle array sits in the pool's own objects; debug poisoning of the
    freed objects must not rewrite it mid-call (crashed before fc0a474)."""
    p = tm.Pool(8, 64, debug=True, populate=False, hugepages="none")
    try:
        p.get_bulk(64)
        arr = np.frombuffer(p.buffer(), dtype=np.uint32)[:64]
        arr[:] = np.arange(64, dtype=np.uint32)
        p.put_bulk(arr)
        del arr
        assert_accounting(p, [])
    finally:
        p.close()
