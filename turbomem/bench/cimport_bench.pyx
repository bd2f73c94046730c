# A Cython user's view of TurboMem: cimport the nogil API and loop in C.
# Built at run time by turbomem.cybuild (it cimports turbomem._core only).

from libc.stdint cimport uint32_t, uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from turbomem._core cimport (Pool, tm_cache_t, tm_pool_t, pool_cache_get, pool_cache_get_bulk, pool_cache_put,
                             pool_cache_put_bulk, pool_get, pool_get_bulk, pool_ptr, pool_put, pool_put_bulk,
                             pool_thread_cache)


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def get_put(Pool pool not None, uint64_t iters, uint32_t bulk, bint cached=False):
    """iters x (get `bulk` objects, put them back) without the GIL; with
    `cached`, through the thread's cache looked up once (pool_thread_cache +
    pool_cache_*, as DPDK code passes rte_mempool_default_cache()).

    Returns the seconds spent; raises if any call failed (a benchmark never
    hides a failure)."""
    if bulk < 1 or bulk > 4096:
        raise ValueError("bulk must be in [1, 4096]")
    cdef tm_pool_t *p = pool_ptr(pool)
    cdef uint32_t hs[4096]
    cdef uint32_t h
    cdef uint64_t i, failures = 0
    cdef double t0, t1
    cdef tm_cache_t *c
    with nogil:
        c = pool_thread_cache(p)
        t0 = _now()
        if cached and bulk == 1:
            for i in range(iters):
                if pool_cache_get(p, c, &h) != 0 or pool_cache_put(p, c, h) != 0:
                    failures += 1
        elif cached:
            for i in range(iters):
                if pool_cache_get_bulk(p, c, hs, bulk) != 0 or pool_cache_put_bulk(p, c, hs, bulk) != 0:
                    failures += 1
        elif bulk == 1:
            for i in range(iters):
                if pool_get(p, &h) != 0 or pool_put(p, h) != 0:
                    failures += 1
        else:
            for i in range(iters):
                if pool_get_bulk(p, hs, bulk) != 0 or pool_put_bulk(p, hs, bulk) != 0:
                    failures += 1
        t1 = _now()
    if failures:
        raise RuntimeError(f"{failures} of {iters} get/put rounds failed")
    return t1 - t0

