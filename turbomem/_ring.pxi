# Ring over include/turbomem/ring.h; included into _core.pyx (one compiled core).

from libc.errno cimport EINTR
from posix.time cimport clock_gettime, nanosleep, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    /* Python programs often run more threads than cores: a ring waiter that
     * only pauses can keep a preempted publisher off the CPU for a long time. */
    #include <sched.h>
    #define TM_RING_YIELD() sched_yield()
    """

cdef extern from "turbomem/ring.h" nogil:
    unsigned TM_RING_SP, TM_RING_SC
    uint32_t TM_RING_MAX_CAPACITY
    tm_ring_t *tm_ring_create(uint32_t capacity, unsigned flags)
    void tm_ring_free(tm_ring_t *r)
    uint32_t tm_ring_enqueue_bulk(tm_ring_t *r, const uint32_t *objs, uint32_t n)
    uint32_t tm_ring_dequeue_bulk(tm_ring_t *r, uint32_t *objs, uint32_t n)
    uint32_t tm_ring_enqueue_burst(tm_ring_t *r, const uint32_t *objs, uint32_t n)
    uint32_t tm_ring_dequeue_burst(tm_ring_t *r, uint32_t *objs, uint32_t n)
    int tm_ring_enqueue(tm_ring_t *r, uint32_t obj)
    int tm_ring_dequeue(tm_ring_t *r, uint32_t *obj)
    uint32_t tm_ring_count(const tm_ring_t *r)

RING_MAX_CAPACITY = TM_RING_MAX_CAPACITY

# Waiting: spin briefly (a handoff between running stages lands within a few
# microseconds), then sleep with exponential backoff capped at WAIT_MAX_NS, so
# a stage idling on an empty ring costs well under 1% of a core.
DEF WAIT_SPINS = 200
DEF WAIT_MIN_NS = 1000
DEF WAIT_MAX_NS = 200000


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef struct _Waiter:
    double deadline  # CLOCK_MONOTONIC seconds, or < 0 for no timeout
    int spins
    long sleep_ns


cdef inline void _waiter_init(_Waiter *w, double deadline) noexcept nogil:
    w.deadline = deadline
    w.spins = 0
    w.sleep_ns = WAIT_MIN_NS


cdef inline void _waiter_progress(_Waiter *w) noexcept nogil:
    """Something moved: go back to spinning before sleeping again."""
    w.spins = 0
    w.sleep_ns = WAIT_MIN_NS


cdef inline bint _waiter_wait(_Waiter *w) noexcept nogil:
    """One step of waiting (spin, then sleep with doubling backoff).
    False once the deadline has passed."""
    cdef timespec ts
    if w.deadline >= 0 and _now() >= w.deadline:
        return False
    w.spins += 1
    if w.spins > WAIT_SPINS:
        ts.tv_sec = 0
        ts.tv_nsec = w.sleep_ns
        nanosleep(&ts, NULL)
        if w.sleep_ns < WAIT_MAX_NS:
            w.sleep_ns *= 2
    return True


cdef class Ring:
    """A lock-free bounded FIFO of uint32 handles (DPDK rte_ring style).

    ``Ring(capacity, *, single_producer=False, single_consumer=False)``

    Any number of threads may enqueue and dequeue at once, unless
    single_producer / single_consumer promise that only one thread at a time
    does that side (then the head moves without a CAS).  The *_wait variants
    release the GIL while they wait.
    """

    def __cinit__(self, capacity, *, single_producer=False, single_consumer=False):
        self._r = NULL
        self._busy = 0
        self._closed = False
        capacity = _positive_int("capacity", capacity)
        if capacity > TM_RING_MAX_CAPACITY:
            raise ValueError(f"capacity must be at most {TM_RING_MAX_CAPACITY} (2**31), got {capacity}")
        cdef unsigned flags = (TM_RING_SP if single_producer else 0) | (TM_RING_SC if single_consumer else 0)
        self._r = tm_ring_create(<uint32_t>capacity, flags)
        if self._r == NULL:
            raise MemoryError(f"cannot allocate a ring of {capacity} slots")
        self.capacity = capacity
        self.single_producer = bool(single_producer)
        self.single_consumer = bool(single_consumer)

    def __dealloc__(self):
        if self._r != NULL:
            tm_ring_free(self._r)
            self._r = NULL

    def __repr__(self):
        if self._closed:
            return f"<turbomem.Ring capacity {self.capacity}, closed>"
        return f"<turbomem.Ring {len(self)}/{self.capacity}>"

    def __reduce__(self):
        raise TypeError("a Ring cannot be pickled")

    cdef int _check(self) except -1:
        if self._closed:
            raise _closed_error(self)
        return 0

    def close(self):
        """Free the ring.  Idempotent; waiters wake up and raise PoolClosedError."""
        if self._closed:
            return
        self._closed = True
        if self._busy == 0 and self._r != NULL:
            tm_ring_free(self._r)
            self._r = NULL

    cdef void _leave_wait(self):
        self._busy -= 1
        if self._closed and self._busy == 0 and self._r != NULL:
            tm_ring_free(self._r)
            self._r = NULL

    @property
    def closed(self):
        return self._closed

    def __len__(self):
        self._check()
        return tm_ring_count(self._r)

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------ non-blocking --

    def enqueue(self, h):
        """Add one handle; False when the ring is full."""
        self._check()
        cdef long long v = _to_handle(h)
        if v < 0:
            raise InvalidHandleError(f"handle {h!r} is not a uint32")
        return tm_ring_enqueue(self._r, <uint32_t>v) == 1

    def dequeue(self):
        """Take one handle; -1 when the ring is empty."""
        self._check()
        cdef uint32_t h
        if tm_ring_dequeue(self._r, &h):
            return h
        return -1

    def enqueue_bulk(self, handles):
        """Add all of handles or none; returns whether they went in."""
        self._check()
        cdef cnp.ndarray arr = _handle_array(handles, 1 << 32)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(arr, 0)
        if count == 0:
            return True
        return tm_ring_enqueue_bulk(self._r, <const uint32_t *>cnp.PyArray_DATA(arr), count) != 0

    def enqueue_burst(self, handles):
        """Add as many of handles (from the front) as fit; returns how many."""
        self._check()
        cdef cnp.ndarray arr = _handle_array(handles, 1 << 32)
        return tm_ring_enqueue_burst(self._r, <const uint32_t *>cnp.PyArray_DATA(arr),
                                     <uint32_t>cnp.PyArray_DIM(arr, 0))

    def dequeue_bulk(self, n):
        """Exactly n handles as a uint32 array, or None when fewer are queued."""
        self._check()
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(out, 0)
        if count == 0:
            return out
        if tm_ring_dequeue_bulk(self._r, <uint32_t *>cnp.PyArray_DATA(out), count):
            return out
        return None

    def dequeue_burst(self, n):
        """Up to n handles as a uint32 array (empty when the ring is)."""
        self._check()
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t got = tm_ring_dequeue_burst(self._r, <uint32_t *>cnp.PyArray_DATA(out),
                                                  <uint32_t>cnp.PyArray_DIM(out, 0))
        return out[:got] if got < cnp.PyArray_DIM(out, 0) else out

    # ---------------------------------------------------------- blocking --

    def enqueue_wait(self, h, timeout=None):
        """Add one handle, waiting (without the GIL) while the ring is full.

        Returns False if timeout seconds passed first; None waits forever."""
        self._check()
        cdef long long v = _to_handle(h)
        if v < 0:
            raise InvalidHandleError(f"handle {h!r} is not a uint32")
        cdef uint32_t obj = <uint32_t>v
        if tm_ring_enqueue(self._r, obj):
            return True
        cdef _Waiter w
        _waiter_init(&w, _deadline(timeout))
        cdef int ok = 0
        self._busy += 1
        with nogil:
            while not self._closed:
                if tm_ring_enqueue(self._r, obj):
                    ok = 1
                    break
                if not _waiter_wait(&w):
                    break
        self._leave_wait()
        if not ok and self._closed:
            raise _closed_error(self)
        return bool(ok)

    def dequeue_wait(self, timeout=None):
        """Take one handle, waiting (without the GIL) while the ring is empty.

        Returns -1 if timeout seconds passed first; None waits forever."""
        self._check()
        cdef uint32_t h = 0
        if tm_ring_dequeue(self._r, &h):
            return h
        cdef _Waiter w
        _waiter_init(&w, _deadline(timeout))
        cdef int ok = 0
        self._busy += 1
        with nogil:
            while not self._closed:
                if tm_ring_dequeue(self._r, &h):
                    ok = 1
                    break
                if not _waiter_wait(&w):
                    break
        self._leave_wait()
        if not ok and self._closed:
            raise _closed_error(self)
        return h if ok else -1

    def dequeue_burst_wait(self, n, timeout=None):
        """Up to n handles, waiting (without the GIL) until at least one is
        queued; an empty array if timeout seconds passed first."""
        self._check()
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(out, 0)
        cdef uint32_t *data = <uint32_t *>cnp.PyArray_DATA(out)
        cdef uint32_t got = tm_ring_dequeue_burst(self._r, data, count)
        if got == 0 and count > 0:
            got = self._wait_burst(data, count, _deadline(timeout))
        return out[:got] if got < count else out

    def enqueue_burst_wait(self, handles, timeout=None):
        """Add all handles, waiting (without the GIL) for room as needed;
        returns how many went in before the timeout (all of them without one)."""
        self._check()
        cdef cnp.ndarray arr = _handle_array(handles, 1 << 32)
        cdef const uint32_t *data = <const uint32_t *>cnp.PyArray_DATA(arr)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(arr, 0)
        cdef uint32_t done = tm_ring_enqueue_burst(self._r, data, count)
        if done == count:
            return done
        cdef _Waiter w
        _waiter_init(&w, _deadline(timeout))
        cdef uint32_t put
        self._busy += 1
        with nogil:
            while not self._closed and done < count:
                put = tm_ring_enqueue_burst(self._r, data + done, count - done)
                done += put
                if put:
                    _waiter_progress(&w)
                elif not _waiter_wait(&w):
                    break
        self._leave_wait()
        if done < count and self._closed:
            raise _closed_error(self)
        return done

    cdef uint32_t _wait_burst(self, uint32_t *data, uint32_t count, double deadline) except? 0:
        cdef uint32_t got = 0
        cdef _Waiter w
        _waiter_init(&w, deadline)
        self._busy += 1
        with nogil:
            while not self._closed:
                got = tm_ring_dequeue_burst(self._r, data, count)
                if got or not _waiter_wait(&w):
                    break
        self._leave_wait()
        if got == 0 and self._closed:
            raise _closed_error(self)
        return got


cdef double _deadline(object timeout) except? -2:
    if timeout is None:
        return -1
    timeout = float(timeout)
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    return _now() + timeout


cdef cnp.ndarray _new_handles(object n):
    n = operator.index(n)
    if n < 0 or n > 0xFFFFFFFF:
        raise ValueError(f"n must be in [0, 2**32), got {n}")
    cdef cnp.npy_intp dim = n
    return cnp.PyArray_EMPTY(1, &dim, cnp.NPY_UINT32, 0)


# ------------------------------------------------- the cimport (nogil) API --

cdef tm_ring_t *ring_ptr(Ring ring) except NULL:
    if ring._closed:
        raise _closed_error(ring)
    return ring._r

cdef int ring_enqueue(tm_ring_t *r, uint32_t h) noexcept nogil:
    return tm_ring_enqueue(r, h)

cdef int ring_dequeue(tm_ring_t *r, uint32_t *h) noexcept nogil:
    return tm_ring_dequeue(r, h)

cdef uint32_t ring_enqueue_burst(tm_ring_t *r, const uint32_t *hs, uint32_t n) noexcept nogil:
    return tm_ring_enqueue_burst(r, hs, n)

cdef uint32_t ring_dequeue_burst(tm_ring_t *r, uint32_t *hs, uint32_t n) noexcept nogil:
    return tm_ring_dequeue_burst(r, hs, n)
