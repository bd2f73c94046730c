# The cimport API of turbomem._core.
#
# Cython code reaches C speed like this:
#
#     from turbomem._core cimport Pool, tm_pool_t, pool_ptr, pool_get, pool_put
#     cdef tm_pool_t *p = pool_ptr(pool)       # raises PoolClosedError if closed
#     cdef uint32_t h
#     with nogil:
#         if pool_get(p, &h) == 0:
#             ...
#             pool_put(p, h)
#
# The functions below are compiled into turbomem._core and reached through its
# exported function table.  Do not call the inline C API of turbomem/pool.h from
# another extension module: the thread registry (src/pool.c) is compiled into
# _core with hidden visibility, so a second copy would be a second registry.
# Return codes: TM_OK 0, TM_EEMPTY -1, TM_ERANGE -2, TM_EDOUBLEFREE -3, ...
# (exported below, cimport them by name).  The caller keeps the Pool object
# alive and does not close it while inside.
#
# A Pool(checked=False) follows DPDK's contract on these entry points: no
# per-object state, no check that a handle was got or is returned once; the
# caller promises both.  (Pool.put/put_bulk from Python still range-check.)
#
# Looking the thread's cache up once: pool_get/pool_put find the calling
# thread's cache on every call.  A loop can look it up once, as DPDK code does
# with rte_mempool_default_cache(), and pass it in:
#
#     cdef tm_cache_t *c = pool_thread_cache(p)   # in the thread that loops
#     with nogil:
#         for ...:
#             if pool_cache_get(p, c, &h) == 0:
#                 ...
#                 pool_cache_put(p, c, h)
#
# The cache belongs to the thread that asked for it: use it in that thread
# only (another thread's calls through it would race with its owner), while
# the pool is open.  It is never NULL (a placeholder that takes the general
# path when the thread cannot have a cache).
#
# Holding the pool across GIL-free work: anything that reads or writes pool
# memory (or calls the pool) without the GIL brackets that work with
#
#     region_acquire(pool)       # with the GIL; raises PoolClosedError if closed
#     try:
#         with nogil:
#             ...                # pool_object(pool, h), pool_get(p, &h), a syscall on pool memory
#     finally:
#         region_release(pool)   # with the GIL
#
# close() from another thread meanwhile marks the pool closed at once, but the
# core is destroyed and the memory unmapped only when the last hold is
# released, so neither a memcpy nor the kernel ever touches unmapped memory.
# (Python code gets the same through ``with pool.hold():``.)

from libc.stdint cimport uint32_t, uint64_t

# The C core's return codes and pool flags (values as in turbomem/pool.h; the
# definitions are repeated verbatim so that a cimporting module needs no
# include path, and a mismatch with pool.h fails to compile in _core).
cdef extern from *:
    """
    #define TM_OK 0
    #define TM_EEMPTY (-1)
    #define TM_ERANGE (-2)
    #define TM_EDOUBLEFREE (-3)
    #define TM_ENOMEM (-4)
    #define TM_EINVAL (-5)
    #define TM_EPOISON (-6)
    #define TM_POOL_POISON 1u
    #define TM_POOL_UNCHECKED 2u
    #define TM_POOL_STATS 4u
    """
    enum:
        TM_OK
        TM_EEMPTY
        TM_ERANGE
        TM_EDOUBLEFREE
        TM_ENOMEM
        TM_EINVAL
        TM_EPOISON
        TM_POOL_POISON
        TM_POOL_UNCHECKED
        TM_POOL_STATS

cdef extern from *:
    """
    typedef struct tm_pool tm_pool_t;
    """
    ctypedef struct tm_pool_t


cdef extern from *:
    """
    typedef struct tm_ring tm_ring_t;
    """
    ctypedef struct tm_ring_t


cdef extern from *:
    """
    typedef struct tm_cache tm_cache_t;
    """
    ctypedef struct tm_cache_t


cdef class Pool:
    cdef tm_pool_t *_c
    cdef readonly uint32_t capacity
    cdef readonly Py_ssize_t obj_size
    cdef readonly Py_ssize_t stride
    cdef readonly Py_ssize_t cache_size
    cdef readonly bint debug
    cdef readonly bint checked
    cdef readonly bint keeps_stats
    cdef list _ints
    cdef char *_base
    cdef object _region
    cdef _MemoryState _memory
    cdef _RegionBuffer _buffer
    cdef object _whole_view
    cdef int _busy
    cdef bint _closed

    cdef int _enter_nogil(self) except -1
    cdef void _leave_nogil(self)
    cdef void _destroy_core(self)
    cdef object _first_int(self, uint32_t h)
    cdef object _get_rest(self, int rc, uint32_t h)
    cdef object _put_rest(self, object h)


cdef class _MemoryState:
    cdef object region
    cdef Py_ssize_t anchors
    cdef bint pool_closed

    cdef void drop_anchor(self)


cdef class _RegionBuffer:
    cdef _MemoryState state
    cdef char *addr
    cdef Py_ssize_t nbytes


# nogil entry points (return 0 or a negative TM_E* code).
cdef tm_pool_t *pool_ptr(Pool pool) except NULL
cdef int region_acquire(Pool pool) except -1
cdef void region_release(Pool pool) noexcept
cdef int pool_get(tm_pool_t *p, uint32_t *handle) noexcept nogil
cdef int pool_put(tm_pool_t *p, uint32_t handle) noexcept nogil
cdef int pool_get_bulk(tm_pool_t *p, uint32_t *handles, uint32_t n) noexcept nogil
cdef int pool_put_bulk(tm_pool_t *p, const uint32_t *handles, uint32_t n) noexcept nogil
cdef char *pool_object(Pool pool, uint32_t handle) noexcept nogil
cdef tm_cache_t *pool_thread_cache(tm_pool_t *p) noexcept nogil
cdef int pool_cache_get(tm_pool_t *p, tm_cache_t *c, uint32_t *handle) noexcept nogil
cdef int pool_cache_put(tm_pool_t *p, tm_cache_t *c, uint32_t handle) noexcept nogil
cdef int pool_cache_get_bulk(tm_pool_t *p, tm_cache_t *c, uint32_t *handles, uint32_t n) noexcept nogil
cdef int pool_cache_put_bulk(tm_pool_t *p, tm_cache_t *c, const uint32_t *handles, uint32_t n) noexcept nogil


cdef class Ring:
    cdef tm_ring_t *_r
    cdef readonly uint32_t capacity
    cdef readonly bint single_producer
    cdef readonly bint single_consumer
    cdef int _busy
    cdef bint _closed

    cdef int _check(self) except -1
    cdef void _leave_wait(self)
    cdef uint32_t _wait_burst(self, uint32_t *data, uint32_t count, object timeout) except? 0


# Ring entry points, callable without the GIL (1/0 or counts, as ring.h).
cdef tm_ring_t *ring_ptr(Ring ring) except NULL
cdef int ring_enqueue(tm_ring_t *r, uint32_t h) noexcept nogil
cdef int ring_dequeue(tm_ring_t *r, uint32_t *h) noexcept nogil
cdef uint32_t ring_enqueue_burst(tm_ring_t *r, const uint32_t *hs, uint32_t n) noexcept nogil
cdef uint32_t ring_dequeue_burst(tm_ring_t *r, uint32_t *hs, uint32_t n) noexcept nogil
