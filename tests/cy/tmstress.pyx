# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""nogil stress loops over turbomem's cimport API (tests only).

This module never includes turbomem/pool.h: it reaches the pool through the
functions exported by turbomem._core (see _core.pxd), exactly as a user's
Cython extension would.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.unistd cimport usleep

cimport numpy as cnp

from turbomem._core cimport (Pool, pool_cache_get, pool_cache_get_bulk, pool_cache_put,
                             pool_cache_put_bulk, pool_get, pool_get_bulk, pool_object, pool_ptr,
                             pool_put, pool_put_bulk, pool_thread_cache, region_acquire,
                             region_release, tm_cache_t, tm_pool_t)

cnp.import_array()

cdef enum:
    RC_OK = 0
    RC_EEMPTY = -1
    RC_ERANGE = -2
    RC_EDOUBLEFREE = -3


cdef inline uint64_t _rand(uint64_t *s) noexcept nogil:
    # xorshift64*
    cdef uint64_t x = s[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    s[0] = x
    return x * 2685821657736338717ULL


cdef inline void _stamp(Pool pool, uint32_t h, uint64_t token) noexcept nogil:
    memcpy(pool_object(pool, h), &token, 8)


cdef inline bint _stamp_ok(Pool pool, uint32_t h, uint64_t token) noexcept nogil:
    cdef uint64_t seen
    memcpy(&seen, pool_object(pool, h), 8)
    return seen == token


# Through the thread's cache looked up once (c != NULL), or per call.
cdef inline int _get(tm_pool_t *p, tm_cache_t *c, uint32_t *h) noexcept nogil:
    return pool_cache_get(p, c, h) if c != NULL else pool_get(p, h)


cdef inline int _put(tm_pool_t *p, tm_cache_t *c, uint32_t h) noexcept nogil:
    return pool_cache_put(p, c, h) if c != NULL else pool_put(p, h)


cdef inline int _get_bulk(tm_pool_t *p, tm_cache_t *c, uint32_t *hs, uint32_t n) noexcept nogil:
    return pool_cache_get_bulk(p, c, hs, n) if c != NULL else pool_get_bulk(p, hs, n)


cdef inline int _put_bulk(tm_pool_t *p, tm_cache_t *c, const uint32_t *hs, uint32_t n) noexcept nogil:
    return pool_cache_put_bulk(p, c, hs, n) if c != NULL else pool_put_bulk(p, hs, n)


def mixed_stress(Pool pool not None, uint64_t ops, uint64_t seed, uint32_t max_hold=256,
                 uint32_t max_bulk=64, bint failing=True, bint cached=False):
    """Run `ops` random pool calls without the GIL and return counters.

    Every handle this thread holds carries a token (thread seed, handle) in its
    first 8 bytes, written on get and checked before put: if two threads ever
    held the same handle at once, one of them sees a foreign token
    (``token_errors``).  ``failing`` mixes in calls that must fail: an
    out-of-range put, and a put_bulk whose last element is out of range (the
    core must return nothing).  Everything held is put back at the end.
    ``cached``: call through the thread's cache looked up once
    (pool_thread_cache + pool_cache_*) instead of pool_get/put.
    """
    if pool.obj_size < 8:
        raise ValueError("mixed_stress needs obj_size >= 8")
    if max_bulk < 1 or max_bulk > max_hold:
        raise ValueError("need 1 <= max_bulk <= max_hold")
    cdef tm_pool_t *p = pool_ptr(pool)
    cdef uint32_t cap = pool.capacity
    cdef uint32_t *held = <uint32_t *>malloc((max_hold + 1) * sizeof(uint32_t))
    if held == NULL:
        raise MemoryError()
    cdef uint32_t nheld = 0, k, i, h
    cdef uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1
    cdef uint64_t tag = (seed & 0xFFFFFFFFULL) << 32
    cdef uint64_t n, r
    cdef uint64_t gets = 0, puts = 0, empties = 0, expected_fail = 0
    cdef uint64_t token_errors = 0, unexpected = 0
    cdef int rc
    cdef tm_cache_t *c = NULL
    with nogil:
        if cached:
            c = pool_thread_cache(p)
        for n in range(ops):
            r = _rand(&s)
            op = r % 10
            if op < 3:  # single get
                if nheld < max_hold:
                    rc = _get(p, c, &h)
                    if rc == RC_OK:
                        _stamp(pool, h, tag | h)
                        held[nheld] = h
                        nheld += 1
                        gets += 1
                    elif rc == RC_EEMPTY:
                        empties += 1
                    else:
                        unexpected += 1
            elif op < 6:  # single put (random held one)
                if nheld:
                    i = <uint32_t>((r >> 8) % nheld)
                    h = held[i]
                    if not _stamp_ok(pool, h, tag | h):
                        token_errors += 1
                    rc = _put(p, c, h)
                    if rc == RC_OK:
                        nheld -= 1
                        held[i] = held[nheld]
                        puts += 1
                    else:
                        unexpected += 1
            elif op < 8:  # bulk get
                k = 1 + <uint32_t>((r >> 8) % max_bulk)
                if nheld + k <= max_hold:
                    rc = _get_bulk(p, c, held + nheld, k)
                    if rc == RC_OK:
                        for i in range(nheld, nheld + k):
                            _stamp(pool, held[i], tag | held[i])
                        nheld += k
                        gets += k
                    elif rc == RC_EEMPTY:
                        empties += 1
                    else:
                        unexpected += 1
            elif op < 9:  # bulk put of the most recent k
                if nheld:
                    k = 1 + <uint32_t>((r >> 8) % nheld)
                    if k > max_bulk:
                        k = max_bulk
                    for i in range(nheld - k, nheld):
                        if not _stamp_ok(pool, held[i], tag | held[i]):
                            token_errors += 1
                    rc = _put_bulk(p, c, held + nheld - k, k)
                    if rc == RC_OK:
                        nheld -= k
                        puts += k
                    else:
                        unexpected += 1
            elif failing:  # calls that must fail and change nothing
                if (r >> 8) & 1:
                    if _put(p, c, cap + <uint32_t>((r >> 9) % 1000)) != RC_ERANGE:
                        unexpected += 1
                elif nheld and nheld < max_hold:
                    held[nheld] = cap  # one bad element after valid ones
                    k = nheld + 1
                    if k > max_bulk:
                        k = max_bulk
                    if _put_bulk(p, c, held + nheld + 1 - k, k) != RC_ERANGE:
                        unexpected += 1
                    expected_fail += 1
                else:
                    if _get_bulk(p, c, held, cap + 1) != RC_EEMPTY:
                        unexpected += 1
                    expected_fail += 1
        if nheld:
            for i in range(nheld):
                if not _stamp_ok(pool, held[i], tag | held[i]):
                    token_errors += 1
            if pool_put_bulk(p, held, nheld) != RC_OK:
                unexpected += 1
            else:
                puts += nheld
    free(held)
    return dict(ops=ops, gets=gets, puts=puts, empties=empties, expected_fail=expected_fail,
                token_errors=token_errors, unexpected=unexpected)


def bulk_churn_until(Pool pool not None, cnp.uint8_t[::1] stop, uint32_t bulk, uint64_t seed=1):
    """Cycle get_bulk/put_bulk (and single calls) without the GIL until stop[0]
    becomes non-zero; returns the number of loop iterations.  Used to have a
    thread inside a pool call at the instant another thread forks."""
    cdef tm_pool_t *p = pool_ptr(pool)
    cdef uint32_t *buf = <uint32_t *>malloc(bulk * sizeof(uint32_t))
    if buf == NULL:
        raise MemoryError()
    cdef uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1, it = 0
    cdef uint32_t k, h
    cdef volatile uint8_t *flag = &stop[0]
    with nogil:
        while flag[0] == 0:
            k = 1 + <uint32_t>(_rand(&s) % bulk)
            if pool_get_bulk(p, buf, k) == RC_OK:
                pool_put_bulk(p, buf, k)
            if pool_get(p, &h) == RC_OK:
                pool_put(p, h)
            it += 1
    free(buf)
    return it


def get_put_loop(Pool pool not None, uint64_t n):
    """n x (get + put) without the GIL; returns how many gets failed."""
    cdef tm_pool_t *p = pool_ptr(pool)
    cdef uint64_t i, fails = 0
    cdef uint32_t h
    with nogil:
        for i in range(n):
            if pool_get(p, &h) == RC_OK:
                pool_put(p, h)
            else:
                fails += 1
    return fails


def held_scribble(Pool pool not None, uint32_t handle, int rounds, int pause_us):
    """Write object ``handle`` ``rounds`` times without the GIL, pausing
    between writes, under a region hold (the _core.pxd protocol): a close()
    from another thread meanwhile must not unmap the memory under us.
    Returns the rounds done."""
    cdef char *obj
    cdef size_t size = <size_t>pool.obj_size
    cdef int i = 0
    region_acquire(pool)  # PoolClosedError if already closed
    try:
        obj = pool_object(pool, handle)
        with nogil:
            while i < rounds:
                memset(obj, i & 0xFF, size)
                usleep(pause_us)
                i += 1
    finally:
        region_release(pool)
    return i
