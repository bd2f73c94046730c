# cython: language_level=3, boundscheck=False, wraparound=False
"""cimport users of both pool modes: the exported TM_* codes and a nogil
get/put loop whose every handle is checked against a per-call bitmap."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free

from turbomem._core cimport (
    TM_EDOUBLEFREE, TM_EEMPTY, TM_EINVAL, TM_ENOMEM, TM_EPOISON, TM_ERANGE, TM_OK,
    TM_POOL_POISON, TM_POOL_STATS, TM_POOL_UNCHECKED,
    Pool, pool_get, pool_get_bulk, pool_ptr, pool_put, pool_put_bulk, tm_pool_t,
)


def codes():
    return dict(TM_OK=TM_OK, TM_EEMPTY=TM_EEMPTY, TM_ERANGE=TM_ERANGE,
                TM_EDOUBLEFREE=TM_EDOUBLEFREE, TM_ENOMEM=TM_ENOMEM, TM_EINVAL=TM_EINVAL,
                TM_EPOISON=TM_EPOISON, TM_POOL_POISON=TM_POOL_POISON,
                TM_POOL_UNCHECKED=TM_POOL_UNCHECKED, TM_POOL_STATS=TM_POOL_STATS)


def drain_all(Pool pool not None, uint32_t bulk):
    """Take every free object (bulks of `bulk`, then singles) without the GIL;
    returns (count, duplicates), and puts them all back."""
    cdef tm_pool_t *p = pool_ptr(pool)
    cdef uint32_t cap = pool.capacity
    cdef uint32_t *held = <uint32_t *>calloc(cap, sizeof(uint32_t))
    cdef uint8_t *seen = <uint8_t *>calloc(cap, 1)
    if held == NULL or seen == NULL:
        free(held)
        free(seen)
        raise MemoryError()
    cdef uint64_t n = 0, dups = 0, i
    with nogil:
        while n + bulk <= cap and pool_get_bulk(p, held + n, bulk) == TM_OK:
            n += bulk
        while n < cap and pool_get(p, held + n) == TM_OK:
            n += 1
        for i in range(n):
            if held[i] >= cap or seen[held[i]]:
                dups += 1
            else:
                seen[held[i]] = 1
        if n:
            pool_put_bulk(p, held, <uint32_t>n)
    free(held)
    free(seen)
    return n, dups
