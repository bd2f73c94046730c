"""Constructor matrix: every bad argument is refused before anything is mapped."""

from __future__ import annotations



import pytest

import turbomem as tm
from turbomem import numa
from turbomem.errors import NumaError, OutOfMemoryError, TurbomemError

from support import maps_count




@pytest.fixture(autouse=True)
def no_mapping_leak():
    before = maps_count()
    yield
    assert maps_count() <= before + 2  # other threads of the runner may map a little


@pytest.mark.parametrize("obj_size,exc", [(0, ValueError), (-1, ValueError), (-(2**70), ValueError),
                                          (1.0, TypeError), ("8", TypeError), (None, TypeError),
                                          (True, TypeError)])
def test_bad_obj_size(obj_size, exc):
    with pytest.raises(exc, match="obj_size"):
        tm.Pool(obj_size, 16)


@pytest.mark.parametrize("obj_size", [2**47, 2**63, 2**64, 2**100])
def test_obj_size_beyond_address_space(obj_size):
    with pytest.raises(OutOfMemoryError) as info:
        tm.Pool(obj_size, 2)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, TurbomemError)


@pytest.mark.parametrize("capacity,exc", [(0, ValueError), (-5, ValueError), (2**32 - 1, ValueError),
                                          (2**32, ValueError), (2**64, ValueError), (2.0, TypeError),
                                          (None, TypeError), (False, TypeError)])
def test_bad_capacity(capacity, exc):
    with pytest.raises(exc, match="capacity"):
        tm.Pool(8, capacity)


def test_capacity_limit_is_named():
    with pytest.raises(ValueError, match=r"2\*\*32 - 2"):
        tm.Pool(1, 2**32 - 1)


@pytest.mark.parametrize("align", [3, 6, 48, 100, 2**20 + 1])
def test_align_not_power_of_two(align):
    with pytest.raises(ValueError, match="power of two"):
        tm.Pool(8, 16, align=align)


@pytest.mark.parametrize("align,exc", [(0, ValueError), (-64, ValueError), (1.5, TypeError), ("64", TypeError)])
def test_align_bad_type_or_sign(align, exc):
    with pytest.raises(exc, match="align"):
        tm.Pool(8, 16, align=align)


@pytest.mark.parametrize("cache_size", [513, 1024, 2**32, -1])
def test_cache_size_out_of_range(cache_size):
    with pytest.raises(ValueError, match="cache_size"):
        tm.Pool(8, 4096, cache_size=cache_size)


def test_cache_size_above_capacity():
    with pytest.raises(ValueError, match="larger than capacity"):
        tm.Pool(8, 10, cache_size=11)


@pytest.mark.parametrize("cache_size", [1.0, "4", True])
def test_cache_size_bad_type(cache_size):
    with pytest.raises(TypeError):
        tm.Pool(8, 10, cache_size=cache_size)


@pytest.mark.parametrize("cache_size", [0, 1, 10])
def test_cache_size_edges_work(cache_size):
    p = tm.Pool(8, 10, cache_size=cache_size, populate=False)
    try:
        hs = [p.get() for _ in range(10)]
        assert p.try_get() == -1
        for h in hs:
            p.put(h)
        assert p.available == 10
    finally:
        p.close()


@pytest.mark.parametrize("policy", ["huge", "THP", "", None, 1, "always"])
def test_unknown_hugepages_policy(policy):
    with pytest.raises(ValueError, match="hugepages"):
        tm.Pool(8, 16, hugepages=policy)


def test_numa_node_that_does_not_exist_lists_nodes():
    nodes = numa.node_ids()
    bad = max(nodes) + 7
    with pytest.raises(NumaError) as info:
        tm.Pool(8, 16, numa_node=bad)
    msg = str(info.value)
    assert str(bad) in msg
    for n in nodes:
        assert str(n) in msg


@pytest.mark.parametrize("node", [-1, "0", 1.0])
def test_numa_node_bad_value(node):
    with pytest.raises((NumaError, TypeError, ValueError)):
        tm.Pool(8, 16, numa_node=node)


def test_init_twice_is_refused():
    p = tm.Pool(8, 16, populate=False)
    try:
        with pytest.raises(TurbomemError):
            p.__init__(8, 16)
        assert p.available == 16
    finally:
        p.close()


def test_uninitialised_pool_is_closed_not_a_crash():
    p = tm.Pool.__new__(tm.Pool)
    for call in (p.get, p.try_get, lambda: p.put(0), lambda: p.get_bulk(1), lambda: p.put_bulk([0]),
                 lambda: p.view(0), p.array, p.buffer, p.stats, lambda: p.available, p.hugepage_report):
        with pytest.raises(tm.PoolClosedError):
            call()
    p.close()
    assert "closed" in repr(p)


def test_pool_cannot_be_pickled_or_copied():
    import copy
    import pickle

    p = tm.Pool(8, 16, populate=False)
    try:
        with pytest.raises(TypeError):
            pickle.dumps(p)
        with pytest.raises(TypeError):
            copy.copy(p)
    finally:
        p.close()
