# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, always_allow_keywords=False, binding=False
"""The compiled core: Pool over include/turbomem/pool.h (+ src/pool.c).

Everything here is the thin layer between Python objects and the C core:
argument checking, the one function that turns C return codes into
exceptions (``_raise_for``), zero-copy views of the region, and the nogil
entry points exported to other Cython modules through ``_core.pxd``.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_WRITABLE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t

cimport numpy as cnp

import operator
import os

import numpy as np

from turbomem import _checks
from turbomem import memory as _memory
from turbomem import smaps as _smaps
from turbomem.constants import HUGEPAGE_POLICIES
from turbomem.errors import (
    DoubleFreeError,
    InvalidHandleError,
    PoolClosedError,
    PoolEmptyError,
    TurbomemError,
    UseAfterFreeError,
)

cnp.import_array()

cdef extern from "turbomem/pool.h" nogil:
    ctypedef struct tm_pool_stats_t:
        uint64_t capacity, in_use, available
        uint64_t gets, puts, cache_hits, cache_misses, cas_retries
        uint64_t cached, threads
        int asymmetric

    unsigned TM_CACHE_MAX
    uint32_t TM_MAX_CAPACITY
    uint32_t TM_MAX_THREADS

    int tm_pool_create(tm_pool_t **out, uint32_t capacity, uint32_t cache_size,
                       void *base, size_t stride, size_t obj_size, unsigned flags)
    void tm_pool_destroy(tm_pool_t *p)
    int tm_pool_get(tm_pool_t *p, uint32_t *out)
    int tm_pool_put(tm_pool_t *p, uint32_t h)
    int tm_pool_get_bulk_ex(tm_pool_t *p, uint32_t *out, uint32_t n, uint32_t *bad)
    int tm_pool_put_bulk(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad)
    tm_cache_t *tm_pool_thread_cache(tm_pool_t *p)
    int tm_pool_cache_get(tm_pool_t *p, tm_cache_t *c, uint32_t *out)
    int tm_pool_cache_put(tm_pool_t *p, tm_cache_t *c, uint32_t h)
    int tm_pool_cache_get_bulk(tm_pool_t *p, tm_cache_t *c, uint32_t *out, uint32_t n, uint32_t *bad)
    int tm_pool_cache_put_bulk(tm_pool_t *p, tm_cache_t *c, const uint32_t *hs, uint32_t n, uint32_t *bad)
    void tm_pool_stats(tm_pool_t *p, tm_pool_stats_t *st)
    int tm_pool_is_in_use(tm_pool_t *p, uint32_t h)
    int tm_pool_asymmetric()

cdef extern from *:
    """
    /* 1 when o is an exact int in [0, cap), its value in *out; 0 when the
     * general conversion must decide (other types, big ints, bad values).
     * Reads the digit directly: PyLong_AsLongLongAndOverflow is a call. */
    static inline int tm_small_handle(PyObject *o, uint32_t cap, uint32_t *out) {
        if (!PyLong_CheckExact(o))
            return 0;
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            Py_ssize_t v = PyUnstable_Long_CompactValue((PyLongObject *)o);
            if (v >= 0 && (size_t)v < cap) {
                *out = (uint32_t)v;
                return 1;
            }
        }
    #else
        Py_ssize_t size = Py_SIZE(o);
        if (size == 1 && ((PyLongObject *)o)->ob_digit[0] < cap) {
            *out = (uint32_t)((PyLongObject *)o)->ob_digit[0];
            return 1;
        }
        if (size == 0 && cap) {
            *out = 0;
            return 1;
        }
    #endif
        return 0;
    }
    """
    int tm_small_handle(PyObject *o, uint32_t cap, uint32_t *out)

MAX_CACHE_SIZE = TM_CACHE_MAX
MAX_CAPACITY = TM_MAX_CAPACITY
MAX_THREADS = TM_MAX_THREADS
# Bulk calls at least this large release the GIL: a release costs ~60 ns,
# worth it only when the C work is several times that.
DEF NOGIL_BULK_MIN = 1024
# Pools up to this capacity intern their handles' ints for get() (<= 1.8 MB).
DEF INT_TABLE_MAX = 65536


# ---------------------------------------------------------------- errors ----

cdef int _raise_for(int rc, object pool, object handle=None) except -1:
    """The one place where a C return code becomes a Python exception."""
    if rc == TM_OK:
        return 0
    if rc == TM_EEMPTY:
        raise PoolEmptyError(f"{pool!r}: not enough free objects")
    if rc == TM_ERANGE:
        raise InvalidHandleError(f"handle {handle} is outside [0, {pool.capacity})")
    if rc == TM_EDOUBLEFREE:
        raise DoubleFreeError(f"handle {handle} is already free (double free, "
                              f"or a handle of another pool)")
    if rc == TM_EPOISON:
        err = UseAfterFreeError(f"object {handle} was written to while it was free "
                                f"(debug poison damaged); it is now handed out")
        err.handle = handle
        raise err
    if rc == TM_ENOMEM:
        raise MemoryError("the C core could not allocate its bookkeeping")
    if rc == TM_EINVAL:
        raise ValueError("invalid argument to the C core")
    raise TurbomemError(f"unknown C core error {rc}")


cdef inline object _closed_error(object what):
    return PoolClosedError(f"{what} is closed")


cdef inline long long _to_handle(object h) except -2:
    """A Python handle as a C integer, or InvalidHandleError.

    Accepts int and numpy integer scalars; refuses bool, numpy bool, float,
    str, None and arrays (even 0-d or one-element ones).  Out-of-range values
    are returned as -1 (the caller reports them with the pool's capacity).
    """
    cdef long long v
    cdef int overflow = 0
    if type(h) is not int:
        if not _checks.is_integer_scalar(h):
            raise InvalidHandleError(f"a handle is an int, not {type(h).__name__}: {h!r}")
        h = operator.index(h)
    v = PyLong_AsLongLongAndOverflow(h, &overflow)  # no exception machinery
    if overflow or v < 0 or v > <long long>0xFFFFFFFF:
        return -1
    return v


# ------------------------------------------------------------- the region ---

cdef class _MemoryState:
    """What the region's anchors share: the region and how many anchors live."""

    def __cinit__(self, object region):
        self.region = region
        self.anchors = 0
        self.pool_closed = False

    cdef void drop_anchor(self):
        """The last anchor of a closed pool unmaps the region."""
        self.anchors -= 1
        if self.anchors == 0 and self.pool_closed:
            self.region.close()


cdef class _RegionBuffer:
    """An anchor that exports the pool's memory through the buffer protocol.

    Every memoryview and numpy array of the pool holds one anchor (numpy keeps
    the exporter itself as its base, so each array gets its own anchor), and
    the region is unmapped only when the pool is closed AND the last anchor is
    gone: close() never pulls memory out from under a live view.
    """

    def __cinit__(self, _MemoryState state, Py_ssize_t nbytes):
        self.state = state
        self.addr = <char *><uintptr_t>state.region.addr
        self.nbytes = nbytes
        state.anchors += 1

    def __dealloc__(self):
        if self.state is not None:
            self.state.drop_anchor()

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if self.state.region.closed:
            raise BufferError("the pool's memory is unmapped")
        buf.buf = self.addr
        buf.obj = self
        buf.len = self.nbytes
        buf.readonly = 0
        buf.itemsize = 1
        if flags & PyBUF_FORMAT:
            buf.format = b"B"
        else:
            buf.format = NULL
        buf.ndim = 1
        buf.shape = &self.nbytes
        buf.strides = NULL
        buf.suboffsets = NULL
        buf.internal = NULL


# ------------------------------------------------------------ region hold --

cdef class _RegionHold:
    """``with pool.hold():`` -- the pool's memory and core stay alive inside.

    For code that hands pool memory to something that works without the GIL
    (a ctypes recvmmsg, a compiled copy): close() from another thread defers
    the unmap until the block ends.  Entering raises PoolClosedError on a
    closed pool.  Not reentrant: one ``with`` per object."""

    cdef Pool pool
    cdef bint held

    def __cinit__(self, Pool pool):
        self.pool = pool
        self.held = False

    def __enter__(self):
        if self.held:
            raise RuntimeError("this hold is already entered")
        region_acquire(self.pool)
        self.held = True
        return self.pool

    def __exit__(self, *exc):
        if self.held:
            self.held = False
            region_release(self.pool)
        return False


# ------------------------------------------------------------------ Pool ----

cdef class Pool:
    """A fixed-size object pool over one huge-page-backed region.

    ``Pool(obj_size, capacity, *, cache_size=None, align=64, hugepages="auto",
    numa_node=None, populate=True, debug=False, checked=True, stats=False)``

    Handles are ints in ``[0, capacity)``; object ``h`` lives at byte
    ``h * stride`` of the region.  ``cache_size=None`` means 256, or
    ``capacity`` for smaller pools; 0 disables the per-thread caches.

    ``checked=True`` (the default) keeps one state byte per object: a double
    free or a foreign handle raises.  ``checked=False`` is DPDK's contract for
    the C/cimport API (no per-object state); from Python, handles are still
    range-checked, but a double free is not detected.  ``stats=True`` keeps
    per-call counters (gets, puts, hits, misses); in_use/available are exact
    either way.
    """

    def __cinit__(self, *args, **kwargs):
        self._c = NULL
        self._ints = None
        self._closed = True  # until __init__ finishes
        self._busy = 0

    def __init__(self, obj_size, capacity, *, cache_size=None, align=64,
                 hugepages="auto", numa_node=None, populate=True, debug=None,
                 checked=True, stats=False):
        if self._memory is not None:
            # Even after close(): a second incarnation at another address
            # would strand every object (receivers, readers) built on the first.
            raise TurbomemError("Pool.__init__ called twice")
        obj_size = _positive_int("obj_size", obj_size)
        capacity = _positive_int("capacity", capacity)
        align = _positive_int("align", align)
        if capacity > TM_MAX_CAPACITY:
            raise ValueError(f"capacity must be at most {TM_MAX_CAPACITY} (2**32 - 2), got {capacity}")
        if align & (align - 1):
            raise ValueError(f"align must be a power of two, got {align}")
        if cache_size is None:
            cache_size = min(256, capacity)
        if isinstance(cache_size, bool):
            raise TypeError("cache_size must be an int, got bool")
        cache_size = operator.index(cache_size)
        if not 0 <= cache_size <= TM_CACHE_MAX:
            raise ValueError(f"cache_size must be in [0, {TM_CACHE_MAX}], got {cache_size}")
        if cache_size > capacity:
            raise ValueError(f"cache_size {cache_size} is larger than capacity {capacity}")
        if hugepages not in HUGEPAGE_POLICIES:
            raise ValueError(f"hugepages must be one of {', '.join(map(repr, HUGEPAGE_POLICIES))}, "
                             f"got {hugepages!r}")
        checked = _flag("checked", checked)
        stats = _flag("stats", stats)
        if debug is None:
            # The environment switch applies to checked pools only.
            debug = checked and os.environ.get("TURBOMEM_DEBUG", "") not in ("", "0")
        if debug and not checked:
            raise ValueError("debug=True needs checked=True (poisoning checks per-object state)")
        stride = (obj_size + align - 1) // align * align
        nbytes = stride * capacity
        if nbytes > (1 << 47):
            raise _memory.OutOfMemoryError(
                f"{capacity} objects of stride {stride} need {nbytes} bytes, "
                f"more than the 128 TiB user address space")

        region = _memory.create_region(nbytes, hugepages=hugepages,
                                       numa_node=numa_node, populate=populate)
        cdef tm_pool_t *c = NULL
        cdef unsigned flags = TM_POOL_POISON if debug else 0
        if not checked:
            flags |= TM_POOL_UNCHECKED
        if stats:
            flags |= TM_POOL_STATS
        rc = tm_pool_create(&c, <uint32_t>capacity, <uint32_t>cache_size,
                            <void *><uintptr_t>region.addr, <size_t>stride,
                            <size_t>obj_size, flags)
        if rc != TM_OK:
            region.close()
            _raise_for(rc, self)
        self._c = c
        self._region = region
        self._base = <char *><uintptr_t>region.addr
        self.capacity = capacity
        self.obj_size = obj_size
        self.stride = stride
        self.cache_size = cache_size
        self.debug = bool(debug)
        self.checked = checked
        self.keeps_stats = stats
        self._memory = _MemoryState(region)
        self._buffer = _RegionBuffer(self._memory, nbytes)
        self._whole_view = memoryview(self._buffer)
        self._closed = False

    def __dealloc__(self):
        if self._c != NULL:
            tm_pool_destroy(self._c)
            self._c = NULL
        # The region is unmapped by its own finalizer once the last view
        # (which holds _buffer, which holds the region) is gone.

    def __repr__(self):
        state = "closed" if self._closed else f"{self.available}/{self.capacity} free"
        return (f"<turbomem.Pool {self.obj_size} B x {self.capacity}, stride {self.stride}, "
                f"{state}>")

    def __reduce__(self):
        raise TypeError("a Pool cannot be pickled: its memory is private to this process")

    # --------------------------------------------------------- lifecycle --

    cdef int _enter_nogil(self) except -1:
        if self._closed:
            raise _closed_error(self)
        self._busy += 1
        # A call without the GIL holds an anchor on the region: close() from
        # another thread defers the unmap (debug mode reads and writes object
        # memory inside the call).
        self._memory.anchors += 1
        return 0

    cdef void _leave_nogil(self):
        self._busy -= 1
        if self._closed and self._busy == 0:
            self._destroy_core()
        self._memory.drop_anchor()

    cdef void _destroy_core(self):
        if self._c != NULL:
            tm_pool_destroy(self._c)
            self._c = NULL

    def close(self):
        """Release the pool.  Idempotent.

        Handles become meaningless and every call raises PoolClosedError.  The
        memory is unmapped now if no memoryview or array of it is alive, and
        otherwise when the last one is released (never under a live view).
        """
        if self._closed:
            return
        self._closed = True
        if self._busy == 0:
            self._destroy_core()
        self._memory.pool_closed = True
        view = self._whole_view
        self._whole_view = None
        if view is not None:
            view.release()  # slices taken by view() keep their own reference
        self._buffer = None  # our anchor: if it was the last, drop_anchor unmaps now

    @property
    def closed(self):
        return self._closed

    @property
    def memory_released(self):
        """True once the region is unmapped (after close and the last view)."""
        return self._region is None or self._region.closed

    def __enter__(self):
        if self._closed:
            raise _closed_error(self)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def hold(self):
        """A context manager that keeps the memory mapped (and the pool's core
        alive) until it exits, even if another thread calls close() meanwhile.

        Use it around anything that reads or writes pool memory without the
        GIL (a system call given pool addresses, a compiled loop).  Entering
        raises PoolClosedError if the pool is closed."""
        return _RegionHold(self)

    # ----------------------------------------------------------- get/put --

    def get(self):
        """One handle; PoolEmptyError when nothing is free."""
        cdef uint32_t h = 0
        cdef int rc = TM_EINVAL
        if not self._closed:
            rc = tm_pool_get(self._c, &h)
            if rc == TM_OK and self._ints is not None:
                return self._ints[h]  # a shared int: no allocation per get
        return self._get_rest(rc, h)

    cdef object _get_rest(self, int rc, uint32_t h):
        """get() beyond the hit path (kept out of it: the hot function then
        saves no registers): closed, errors, the first get's int table."""
        if self._closed:
            raise _closed_error(self)
        if rc == TM_EPOISON:
            _raise_handed_out(self, h, np.array([h], dtype=np.uint32))
        if rc != TM_OK:
            _raise_for(rc, self, h)
        if self._ints is not None:
            return self._ints[h]
        return self._first_int(h)

    def try_get(self):
        """One handle, or -1 when nothing is free (no exception cost)."""
        cdef uint32_t h = 0
        if self._closed:
            raise _closed_error(self)
        cdef int rc = tm_pool_get(self._c, &h)
        if rc == TM_OK:
            if self._ints is not None:
                return self._ints[h]
            return self._first_int(h)
        if rc == TM_EEMPTY:
            return -1
        if rc == TM_EPOISON:
            _raise_handed_out(self, h, np.array([h], dtype=np.uint32))
        _raise_for(rc, self, h)

    cdef object _first_int(self, uint32_t h):
        """The handle as a Python int.  Pools of at most INT_TABLE_MAX objects
        build a table of their handles' ints on the first single get (it costs
        28 bytes per handle), so that get() hands out a shared int instead of
        allocating one per call, as a deque free list hands out its objects."""
        if self.capacity <= INT_TABLE_MAX:
            self._ints = list(range(self.capacity))
        return h

    def put(self, h):
        """Return one handle.  InvalidHandleError / DoubleFreeError on misuse."""
        cdef uint32_t v
        cdef int rc
        if not self._closed and tm_small_handle(<PyObject *>h, self.capacity, &v):
            rc = tm_pool_put(self._c, v)
            if rc == TM_OK:
                return
            _raise_for(rc, self, h)
        self._put_rest(h)

    cdef object _put_rest(self, object h):
        """put() of anything the hit path does not take: closed, ints beyond
        one digit, other integer types, bad handles."""
        if self._closed:
            raise _closed_error(self)
        cdef int overflow = 0
        cdef long long v
        if type(h) is int:
            v = PyLong_AsLongLongAndOverflow(h, &overflow)
        else:
            v = _to_handle(h)
        if overflow or v < 0 or v >= self.capacity:
            raise InvalidHandleError(f"handle {h!r} is outside [0, {self.capacity})")
        cdef int rc = tm_pool_put(self._c, <uint32_t>v)
        if rc != TM_OK:
            _raise_for(rc, self, h)

    def get_bulk(self, n):
        """n distinct handles as a numpy uint32 array, all or nothing."""
        if self._closed:
            raise _closed_error(self)
        if type(n) is not int or n < 0:
            n = _checks.check_count(n)
        if n > self.capacity:  # before the C conversion: 2**70 is "too many", not OverflowError
            raise PoolEmptyError(f"{self!r}: {n} objects asked, capacity is {self.capacity}")
        cdef Py_ssize_t want = n
        cdef cnp.npy_intp dim = want
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_UINT32, 0)
        cdef uint32_t *data = <uint32_t *>cnp.PyArray_DATA(out)
        cdef uint32_t count = <uint32_t>want
        cdef uint32_t bad = 0
        cdef int rc
        if count >= NOGIL_BULK_MIN:
            self._enter_nogil()
            with nogil:
                rc = tm_pool_get_bulk_ex(self._c, data, count, &bad)
            self._leave_nogil()
        else:
            rc = tm_pool_get_bulk_ex(self._c, data, count, &bad)
        if rc == TM_EPOISON:
            # Every one of the n objects was handed out: the exception
            # carries them all, so none is left in use without a holder.
            _raise_handed_out(self, int(data[bad]), out)
        elif rc != TM_OK:
            _raise_for(rc, self)
        return out

    def put_bulk(self, handles):
        """Return many handles, all or nothing: every one is checked first.

        Takes a 1-D numpy integer array or any sequence of ints.  Other
        integer dtypes are converted after a range check; bools, floats and
        non-integer dtypes raise InvalidHandleError (HandleTypeError, also a
        TypeError).

        Copies: a uint32 C-contiguous array of fewer than 1024 handles is
        used in place.  From 1024 handles on (the call then runs without the
        GIL), and in debug mode, the handles are first copied to a private
        array: the C core reads each handle twice (check, then return), and
        another thread rewriting the caller's array in between, or debug
        poison landing on an array that lives in the pool, would otherwise
        return unchecked handles.  The copy costs 4 bytes per handle.
        """
        if self._closed:
            raise _closed_error(self)
        cdef cnp.ndarray arr = _handle_array(handles, self.capacity)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(arr, 0)
        if (count >= NOGIL_BULK_MIN or self.debug) and arr is handles:
            # See the docstring: only a private array is safe to read twice.
            # (A conversion made by _handle_array is already private.)
            arr = cnp.PyArray_NewCopy(arr, cnp.NPY_CORDER)
        cdef const uint32_t *data = <const uint32_t *>cnp.PyArray_DATA(arr)
        cdef uint32_t bad = 0
        cdef int rc
        cdef Py_ssize_t first_bad
        if not self.checked:
            # The C core trusts an unchecked caller; Python code gets the
            # range check (a stray handle must never reach the core's arrays).
            first_bad = _first_out_of_range(data, count, self.capacity)
            if first_bad >= 0:
                err = InvalidHandleError(f"handle {data[first_bad]} is outside [0, {self.capacity}) "
                                         f"(element {first_bad}; nothing was returned)")
                err.index = first_bad
                raise err
        if count >= NOGIL_BULK_MIN:
            self._enter_nogil()
            with nogil:
                rc = tm_pool_put_bulk(self._c, data, count, &bad)
            self._leave_nogil()
        else:
            rc = tm_pool_put_bulk(self._c, data, count, &bad)
        if rc != TM_OK:
            try:
                _raise_for(rc, self, int(data[bad]))
            except InvalidHandleError as err:
                err.index = int(bad)
                err.args = (f"{err.args[0]} (element {bad}; nothing was returned)",)
                raise

    # ------------------------------------------------------------- views --

    def view(self, h):
        """A writable memoryview of object h's obj_size bytes (zero copy)."""
        if self._closed:
            raise _closed_error(self)
        cdef long long v = _to_handle(h)
        if v < 0 or v >= self.capacity:
            raise InvalidHandleError(f"handle {h!r} is outside [0, {self.capacity})")
        cdef Py_ssize_t off = v * self.stride
        return self._whole_view[off:off + self.obj_size]

    def array(self):
        """numpy uint8 view of every object: shape (capacity, obj_size),
        strides (stride, 1), zero copy."""
        if self._closed:
            raise _closed_error(self)
        # numpy releases the buffer and keeps the exporter as its base: give
        # each array its own anchor so the region lives as long as the array.
        return np.ndarray(shape=(self.capacity, self.obj_size), dtype=np.uint8,
                          buffer=_RegionBuffer(self._memory, self._buffer.nbytes),
                          strides=(self.stride, 1))

    def buffer(self):
        """A writable memoryview of the whole pool (capacity * stride bytes)."""
        if self._closed:
            raise _closed_error(self)
        return memoryview(_RegionBuffer(self._memory, self._buffer.nbytes))

    @property
    def address(self):
        """Start address of object 0 (for C code and ctypes)."""
        if self._closed:
            raise _closed_error(self)
        return <uintptr_t>self._base

    # -------------------------------------------------------- accounting --

    @property
    def available(self):
        """Free objects, including those parked in per-thread caches."""
        return _read_stats(self).available

    @property
    def in_use(self):
        return _read_stats(self).in_use

    def is_in_use(self, h):
        """Whether handle h is currently handed out (a hint under concurrency)."""
        if self._closed:
            raise _closed_error(self)
        if not self.checked:
            raise TurbomemError("an unchecked pool keeps no per-object state (checked=False)")
        cdef long long v = _to_handle(h)
        return 0 <= v < self.capacity and tm_pool_is_in_use(self._c, <uint32_t>v) == 1

    def stats(self):
        """Counters summed over every thread's cache (exact when quiescent).

        gets/puts count objects; cache_hits/cache_misses count calls (a call
        is a hit when the thread's cache served it without the shared level);
        these per-call counters are kept only with ``stats=True`` (else 0).
        in_use/available are always exact when quiescent; cached is the number
        of free objects parked in thread caches."""
        cdef tm_pool_stats_t st = _read_stats(self)
        return {
            "capacity": st.capacity,
            "in_use": st.in_use,
            "available": st.available,
            "gets": st.gets,
            "puts": st.puts,
            "cache_hits": st.cache_hits,
            "cache_misses": st.cache_misses,
            "cas_retries": st.cas_retries,
            "cached": st.cached,
            "threads": st.threads,
            "cache_size": self.cache_size,
            "checked": self.checked,
            "per_call_stats": self.keeps_stats,
            "hit_path": "fence-free (membarrier steal)" if st.asymmetric
                        else "seq_cst (membarrier unavailable)",
        }

    def hugepage_report(self):
        """What the kernel really gave: huge-page coverage and page placement."""
        if self._closed:
            raise _closed_error(self)
        return _smaps.hugepage_report(self._region)

    @property
    def region(self):
        """The memory.Region behind the pool (policy, binding, advice)."""
        return self._region


cdef tm_pool_stats_t _read_stats(Pool pool) except *:
    cdef tm_pool_stats_t st
    if pool._closed:
        raise _closed_error(pool)
    tm_pool_stats(pool._c, &st)
    return st


cdef cnp.ndarray _handle_array(object handles, uint64_t limit):
    """handles as a C-contiguous 1-D uint32 array: zero copy when it already
    is one (values are then checked by the C core), else converted by the
    package's one handle coercion (turbomem._checks.coerce_handles)."""
    if (cnp.PyArray_CheckExact(handles)
            and cnp.PyArray_TYPE(<cnp.ndarray>handles) == cnp.NPY_UINT32
            and cnp.PyArray_NDIM(<cnp.ndarray>handles) == 1
            and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>handles)):
        if cnp.PyArray_DIM(<cnp.ndarray>handles, 0) > 0xFFFFFFFF:
            # a uint32 count: never let the length wrap
            raise InvalidHandleError(f"{cnp.PyArray_DIM(<cnp.ndarray>handles, 0)} handles: "
                                     f"one call takes at most {0xFFFFFFFF}")
        return <cnp.ndarray>handles
    return _checks.coerce_handles(handles, limit)


cdef int _raise_handed_out(Pool pool, object damaged, object handed_out) except -1:
    """Debug mode found a damaged object among those just handed out: raise
    with ``.handle`` (the damaged one) and ``.handles`` (all handed out, now
    the caller's to put back)."""
    try:
        _raise_for(TM_EPOISON, pool, damaged)
    except UseAfterFreeError as err:
        err.handles = handed_out
        if len(handed_out) > 1:
            err.args = (f"{err.args[0]}; all {len(handed_out)} objects of this call were handed "
                        f"out and are in .handles",)
        raise


cdef Py_ssize_t _first_out_of_range(const uint32_t *data, uint32_t n, uint32_t limit) noexcept:
    """Index of the first handle >= limit, or -1."""
    cdef uint32_t i, worst = 0
    for i in range(n):  # branch-free scan first: the common case is clean
        worst = worst if worst >= data[i] else data[i]
    if n == 0 or worst < limit:
        return -1
    for i in range(n):
        if data[i] >= limit:
            return i
    return -1


def _flag(name, value):
    if not isinstance(value, (bool, int)) or isinstance(value, int) and value not in (0, 1):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _positive_int(name, value):
    if not _checks.is_integer_scalar(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = operator.index(value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _first_not_in_use(Pool pool not None, const uint32_t[::1] handles):
    """Index of the first handle that is outside the pool or not handed out, or -1.

    For layers that read or write the objects of handles they are given
    (receive into, parse): a free handle there would touch an object that
    belongs to nobody, or soon to someone else."""
    if pool._closed:
        raise _closed_error(pool)
    cdef Py_ssize_t i
    cdef uint32_t h
    for i in range(handles.shape[0]):
        h = handles[i]
        if h >= pool.capacity or not tm_pool_is_in_use(pool._c, h):
            return i
    return -1


def hit_path_is_fence_free():
    """True when membarrier lets the cache hit path run without any fence."""
    return bool(tm_pool_asymmetric())


# ------------------------------------------------- the cimport (nogil) API --

cdef tm_pool_t *pool_ptr(Pool pool) except NULL:
    if pool._closed:
        raise _closed_error(pool)
    return pool._c

cdef int region_acquire(Pool pool) except -1:
    """Hold the pool's memory and core (with the GIL): PoolClosedError if closed."""
    return pool._enter_nogil()

cdef void region_release(Pool pool) noexcept:
    """Drop a hold taken by region_acquire (with the GIL); the last one after
    close() destroys the core and unmaps the region."""
    pool._leave_nogil()

cdef int pool_get(tm_pool_t *p, uint32_t *handle) noexcept nogil:
    return tm_pool_get(p, handle)

cdef int pool_put(tm_pool_t *p, uint32_t handle) noexcept nogil:
    return tm_pool_put(p, handle)

cdef int pool_get_bulk(tm_pool_t *p, uint32_t *handles, uint32_t n) noexcept nogil:
    return tm_pool_get_bulk_ex(p, handles, n, NULL)

cdef int pool_put_bulk(tm_pool_t *p, const uint32_t *handles, uint32_t n) noexcept nogil:
    return tm_pool_put_bulk(p, handles, n, NULL)

cdef tm_cache_t *pool_thread_cache(tm_pool_t *p) noexcept nogil:
    return tm_pool_thread_cache(p)

cdef int pool_cache_get(tm_pool_t *p, tm_cache_t *c, uint32_t *handle) noexcept nogil:
    return tm_pool_cache_get(p, c, handle)

cdef int pool_cache_put(tm_pool_t *p, tm_cache_t *c, uint32_t handle) noexcept nogil:
    return tm_pool_cache_put(p, c, handle)

cdef int pool_cache_get_bulk(tm_pool_t *p, tm_cache_t *c, uint32_t *handles, uint32_t n) noexcept nogil:
    return tm_pool_cache_get_bulk(p, c, handles, n, NULL)

cdef int pool_cache_put_bulk(tm_pool_t *p, tm_cache_t *c, const uint32_t *handles,
                             uint32_t n) noexcept nogil:
    return tm_pool_cache_put_bulk(p, c, handles, n, NULL)

cdef char *pool_object(Pool pool, uint32_t handle) noexcept nogil:
    return pool._base + <size_t>handle * <size_t>pool.stride


# ------------------------------------------------------------------ Ring ----

include "_ring.pxi"
