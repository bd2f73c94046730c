"""The Pool contract: handles, bulk calls, zero-copy views, accounting, close."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import turbomem as tm


@pytest.fixture
def pool():
    with tm.Pool(256, 4096) as p:
        yield p


def test_get_returns_distinct_handles_in_range(pool):
    handles = [pool.get() for _ in range(pool.capacity)]
    assert sorted(handles) == list(range(pool.capacity))
    assert pool.available == 0 and pool.in_use == pool.capacity
    with pytest.raises(tm.PoolEmptyError):
        pool.get()
    assert pool.try_get() == -1
    for h in handles:
        pool.put(h)
    assert pool.available == pool.capacity and pool.in_use == 0


def test_errors_form_the_documented_hierarchy():
    assert issubclass(tm.PoolEmptyError, MemoryError) and issubclass(tm.PoolEmptyError, tm.TurbomemError)
    assert issubclass(tm.DoubleFreeError, tm.InvalidHandleError)
    assert issubclass(tm.InvalidHandleError, ValueError)
    assert issubclass(tm.PoolClosedError, RuntimeError)
    assert issubclass(tm.HugePageError, OSError)


def test_put_rejects_out_of_range_and_double_free(pool):
    h = pool.get()
    pool.put(h)
    with pytest.raises(tm.DoubleFreeError):
        pool.put(h)
    for bad in (-1, pool.capacity, 2**32, 2**64, 1.0, "1", None, True):
        with pytest.raises(tm.InvalidHandleError):
            pool.put(bad)
    assert pool.in_use == 0 and pool.available == pool.capacity


def test_numpy_integer_handles_are_accepted(pool):
    h = pool.get()
    pool.put(np.uint32(h))
    assert pool.in_use == 0


def test_get_bulk_is_all_or_nothing(pool):
    first = pool.get_bulk(pool.capacity - 10)
    assert first.dtype == np.uint32 and len(set(first.tolist())) == len(first)
    with pytest.raises(tm.PoolEmptyError):
        pool.get_bulk(11)
    assert pool.in_use == pool.capacity - 10  # nothing taken by the failed call
    rest = pool.get_bulk(10)
    assert sorted(np.concatenate([first, rest]).tolist()) == list(range(pool.capacity))
    pool.put_bulk(first)
    pool.put_bulk(rest)
    assert pool.available == pool.capacity
    assert len(pool.get_bulk(0)) == 0


def test_put_bulk_validates_everything_first(pool):
    hs = pool.get_bulk(64)
    bad = hs.copy()
    bad[40] = pool.capacity + 5
    with pytest.raises(tm.InvalidHandleError) as info:
        pool.put_bulk(bad)
    assert info.value.index == 40
    assert pool.in_use == 64  # nothing was returned
    dup = hs.copy()
    dup[63] = dup[0]
    with pytest.raises(tm.DoubleFreeError):
        pool.put_bulk(dup)
    assert pool.in_use == 64
    assert all(pool.is_in_use(int(h)) for h in hs)
    pool.put_bulk(hs)
    assert pool.in_use == 0


def test_put_bulk_accepts_lists_and_other_int_dtypes_but_not_floats(pool):
    hs = pool.get_bulk(8)
    pool.put_bulk(hs[:4].astype(np.int64))
    pool.put_bulk(hs[4:].tolist())
    assert pool.in_use == 0
    hs = pool.get_bulk(2)
    with pytest.raises(TypeError):
        pool.put_bulk(hs.astype(np.float64))
    with pytest.raises(ValueError):
        pool.put_bulk(hs.reshape(1, 2))
    pool.put_bulk(hs)


def test_view_and_array_are_zero_copy(pool):
    h = pool.get()
    view = pool.view(h)
    assert len(view) == pool.obj_size and not view.readonly
    view[:5] = b"hello"
    arr = pool.array()
    assert arr.shape == (pool.capacity, pool.obj_size)
    assert arr.strides == (pool.stride, 1)
    assert bytes(arr[h, :5]) == b"hello"
    arr[h, 5] = ord("!")
    assert bytes(view[:6]) == b"hello!"
    assert arr.ctypes.data == pool.address
    pool.put(h)


def test_stride_rounds_up_to_alignment():
    with tm.Pool(100, 10, align=128) as p:
        assert p.stride == 128
        assert p.array().strides == (128, 1)


def test_closed_pool_raises_everywhere(pool):
    pool.close()
    pool.close()  # idempotent
    assert pool.closed
    for call in (pool.get, pool.try_get, lambda: pool.put(0), lambda: pool.get_bulk(1),
                 lambda: pool.put_bulk([0]), lambda: pool.view(0), pool.array, pool.stats,
                 pool.hugepage_report, lambda: pool.available):
        with pytest.raises(tm.PoolClosedError):
            call()


def test_close_defers_unmap_while_a_view_lives():
    pool = tm.Pool(4096, 64)
    view = pool.view(3)
    arr = pool.array()
    pool.close()
    assert not pool.memory_released
    view[:3] = b"abc"  # still mapped: no crash
    assert bytes(arr[3, :3]) == b"abc"
    del view
    assert not pool.memory_released  # the array still holds it
    del arr
    gc.collect()
    assert pool.memory_released


def test_close_unmaps_at_once_without_views():
    pool = tm.Pool(4096, 64)
    pool.close()
    assert pool.memory_released


def test_stats_count_every_operation():
    pool = tm.Pool(256, 4096, stats=True)  # per-call counters are opt-in
    hs = pool.get_bulk(10)
    h = pool.get()
    pool.put(h)
    pool.put_bulk(hs)
    st = pool.stats()
    assert st["gets"] == 11 and st["puts"] == 11
    assert st["in_use"] == 0 and st["available"] == pool.capacity
    assert st["cached"] <= pool.cache_size
    assert set(st) >= {"capacity", "in_use", "available", "gets", "puts", "cache_hits",
                       "cache_misses", "cas_retries", "cached"}


def test_cache_disabled_pool_works():
    with tm.Pool(64, 100, cache_size=0) as p:
        hs = p.get_bulk(100)
        p.put_bulk(hs)
        h = p.get()
        p.put(h)
        assert p.stats()["cached"] == 0 and p.available == 100


def test_small_pool_default_cache_fits_capacity():
    with tm.Pool(64, 10) as p:
        assert p.cache_size == 10
        assert sorted(p.get_bulk(10).tolist()) == list(range(10))


def test_thread_exit_returns_its_cached_objects(pool):
    def worker():
        for _ in range(50):
            pool.put_bulk(pool.get_bulk(16))
        hs = [pool.get() for _ in range(100)]
        for h in hs:
            pool.put(h)  # leaves objects in this thread's cache

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    st = pool.stats()
    assert st["in_use"] == 0 and pool.available == pool.capacity
    # the exited thread's cache was flushed: the main thread can take everything
    everything = pool.get_bulk(pool.capacity)
    assert len(np.unique(everything)) == pool.capacity
    pool.put_bulk(everything)


def test_objects_cached_by_a_blocked_thread_can_still_be_taken(pool):
    parked, release = threading.Event(), threading.Event()

    def hoarder():
        hs = [pool.get() for _ in range(64)]
        for h in hs:
            pool.put(h)  # 64 free objects now sit in this thread's cache
        parked.set()
        release.wait(10)

    t = threading.Thread(target=hoarder)
    t.start()
    assert parked.wait(10)
    assert pool.stats()["cached"] >= 64
    taken = pool.get_bulk(pool.capacity)  # needs the hoarder's cached objects
    assert len(np.unique(taken)) == pool.capacity
    pool.put_bulk(taken)
    release.set()
    t.join()
    assert pool.available == pool.capacity


def test_conservation_under_threads_on_the_nogil_bulk_path():
    """Python threads whose bulk calls run without the GIL (n >= 1024)."""
    pool = tm.Pool(64, 1 << 15, cache_size=256)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                n = int(rng.integers(1024, 4096))
                try:
                    hs = pool.get_bulk(n)
                except tm.PoolEmptyError:
                    continue
                hs2 = [pool.get() for _ in range(3)]
                pool.put_bulk(hs)
                for h in hs2:
                    pool.put(h)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.in_use == 0 and pool.available == pool.capacity
    everything = pool.get_bulk(pool.capacity)
    assert np.array_equal(np.sort(everything), np.arange(pool.capacity, dtype=np.uint32))
    pool.close()


def test_hugepage_report_matches_an_independent_smaps_read():
    with tm.Pool(2048, 16384) as p:  # 32 MiB
        report = p.hugepage_report()
        start = p.address
        anon_huge_kb = 0
        inside = False
        with open("/proc/self/smaps") as fh:
            for line in fh:
                head = line.split()[0]
                if "-" in head and ":" not in head:
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = lo <= start < hi or (start <= lo < start + report["region_bytes"])
                elif inside and head == "AnonHugePages:":
                    anon_huge_kb += int(line.split()[1])
        assert report["huge_bytes"] == anon_huge_kb * 1024
        assert report["region_bytes"] >= p.capacity * p.stride
        assert 0.0 <= report["coverage"] <= 1.0
        if tm.memory.thp_mode() in ("madvise", "always"):
            assert report["backing"] == "thp" and report["coverage"] > 0.5
        assert report["policy"] == "auto"


def test_hugepages_none_gets_small_pages():
    with tm.Pool(2048, 4096, hugepages="none") as p:
        report = p.hugepage_report()
        assert report["backing"] == "4k" and report["huge_bytes"] == 0


def test_pool_cannot_be_pickled(pool):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(pool)
