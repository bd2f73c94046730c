# Ring over include/turbomem/ring.h; included into _core.pyx (one compiled core).

from cpython.exc cimport PyErr_CheckSignals
from posix.time cimport clock_gettime, nanosleep, timespec, CLOCK_MONOTONIC

cdef extern from *:
    """
    /* Python programs often run more threads than cores: a ring waiter that
     * only pauses can keep a preempted publisher off the CPU for a long time. */
    #include <sched.h>
    #define TM_RING_YIELD() sched_yield()
    /* Ring._closed is read by waiters without the GIL while close() sets it.
     * close(): RELEASE store, so whatever the closing thread enqueued before
     * is published first; waiters: ACQUIRE load, paired with it, so a waiter
     * that sees the ring closed and then looks once more sees those handles. */
    static inline int tm_closed_load_acquire(const int *flag) {
        return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    }
    static inline void tm_closed_store_release(int *flag) {
        __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
    }
    """
    int tm_closed_load_acquire(const int *flag) nogil
    void tm_closed_store_release(int *flag) nogil

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
# a stage idling on an empty ring costs well under 1% of a core.  Every
# SIGNAL_CHECK_S the waiter takes the GIL back and runs PyErr_CheckSignals, so
# Ctrl-C (or any handler that raises) ends a wait within tens of milliseconds.
DEF WAIT_SPINS = 200
DEF WAIT_MIN_NS = 1000
DEF WAIT_MAX_NS = 200000
DEF SIGNAL_CHECK_S = 0.02

# _waiter_wait results
DEF WAIT_AGAIN = 0
DEF WAIT_TIMEOUT = 1
DEF WAIT_SIGNALS = 2
DEF WAIT_CLOSED = 3  # a consumer saw the ring closed (after its last look)


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef struct _Waiter:
    double deadline  # CLOCK_MONOTONIC seconds, or < 0 for no timeout
    double check_at  # when to look for pending signals next
    int spins
    long sleep_ns


cdef inline void _waiter_init(_Waiter *w, double timeout) noexcept nogil:
    """timeout: seconds (checked by _checks.check_timeout), or < 0 for none."""
    cdef double now = _now()
    w.deadline = -1 if timeout < 0 else now + timeout
    w.check_at = now + SIGNAL_CHECK_S
    w.spins = 0
    w.sleep_ns = WAIT_MIN_NS


cdef inline void _waiter_progress(_Waiter *w) noexcept nogil:
    """Something moved: go back to spinning before sleeping again."""
    w.spins = 0
    w.sleep_ns = WAIT_MIN_NS


cdef inline int _waiter_wait(_Waiter *w) noexcept nogil:
    """One step of waiting (spin, then sleep with doubling backoff)."""
    cdef timespec ts
    cdef double now = _now()
    if w.deadline >= 0 and now >= w.deadline:
        return WAIT_TIMEOUT
    if now >= w.check_at:
        w.check_at = now + SIGNAL_CHECK_S
        return WAIT_SIGNALS
    w.spins += 1
    if w.spins > WAIT_SPINS:
        ts.tv_sec = 0
        ts.tv_nsec = w.sleep_ns
        nanosleep(&ts, NULL)
        if w.sleep_ns < WAIT_MAX_NS:
            w.sleep_ns *= 2
    return WAIT_AGAIN


cdef object _closed_producer_error(Ring ring, uint32_t enqueued):
    """PoolClosedError for a waiting producer: ``.enqueued`` says how many of
    its handles went in (0 when the ring was closed before the call), so a
    producer always learns it, whenever close() came."""
    err = _closed_error(ring)
    err.enqueued = enqueued
    return err


cdef class Ring:
    """A lock-free bounded FIFO of uint32 handles (DPDK rte_ring style).

    ``Ring(capacity, *, single_producer=False, single_consumer=False)``

    Any number of threads may enqueue and dequeue at once, unless
    single_producer / single_consumer promise that only one thread at a time
    does that side (then the head moves without a CAS).  The *_wait variants
    release the GIL while they wait, see pending signals (Ctrl-C) within tens
    of milliseconds, and take ``timeout``: None (wait forever) or a finite
    number of seconds >= 0, checked before anything else happens.

    ``close()`` stops producers, never strands handles: every enqueue raises
    PoolClosedError afterwards, but what is queued stays in the ring and can
    still be dequeued (the non-waiting calls, ``len()``, and the *_wait
    calls, which return what is there and raise PoolClosedError only when
    the closed ring is empty).  The memory is freed when the Ring object is.
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
        # Waiters hold a reference to self, so none is inside a call here.
        if self._r != NULL:
            tm_ring_free(self._r)
            self._r = NULL

    def __repr__(self):
        if self._closed:
            return f"<turbomem.Ring {len(self)}/{self.capacity}, closed>"
        return f"<turbomem.Ring {len(self)}/{self.capacity}>"

    def __reduce__(self):
        raise TypeError("a Ring cannot be pickled")

    cdef int _check(self) except -1:
        """For the producer side (and __enter__): refused once closed."""
        if self._closed:
            raise _closed_error(self)
        return 0

    def close(self):
        """Stop producers.  Idempotent.

        Enqueues raise PoolClosedError from now on (a producer waiting in
        enqueue_burst_wait raises it with ``.enqueued``, the number of its
        handles that went in).  Handles already queued stay dequeuable, so
        nothing is lost; waiting consumers return them, and raise
        PoolClosedError once the ring is empty."""
        tm_closed_store_release(<int *>&self._closed)

    cdef void _leave_wait(self):
        self._busy -= 1

    @property
    def closed(self):
        return self._closed

    def __len__(self):
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
        """Take one handle; -1 when the ring is empty (also after close())."""
        cdef uint32_t h
        if tm_ring_dequeue(self._r, &h):
            return h
        return -1

    def enqueue_bulk(self, handles):
        """Add all of handles or none; returns whether they went in."""
        self._check()
        cdef cnp.ndarray arr = _handle_array(handles, 1 << 32)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(arr, 0)  # <= 2**32-1: checked
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
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(out, 0)
        if count == 0:
            return out
        if tm_ring_dequeue_bulk(self._r, <uint32_t *>cnp.PyArray_DATA(out), count):
            return out
        return None

    def dequeue_burst(self, n):
        """Up to n handles as a uint32 array (empty when the ring is)."""
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t got = tm_ring_dequeue_burst(self._r, <uint32_t *>cnp.PyArray_DATA(out),
                                                  <uint32_t>cnp.PyArray_DIM(out, 0))
        return out[:got] if got < cnp.PyArray_DIM(out, 0) else out

    # ---------------------------------------------------------- blocking --

    def enqueue_wait(self, h, timeout=None):
        """Add one handle, waiting (without the GIL) while the ring is full.

        Returns False if timeout seconds passed first; None waits forever.
        PoolClosedError (``.enqueued`` 0) if the ring is (or gets) closed
        before it went in."""
        timeout = _checks.check_timeout(timeout)
        if self._closed:
            raise _closed_producer_error(self, 0)
        cdef long long v = _to_handle(h)
        if v < 0:
            raise InvalidHandleError(f"handle {h!r} is not a uint32")
        cdef uint32_t obj = <uint32_t>v
        if tm_ring_enqueue(self._r, obj):
            return True
        cdef _Waiter w
        _waiter_init(&w, -1.0 if timeout is None else timeout)
        cdef int ok = 0, why = WAIT_AGAIN
        self._busy += 1
        try:
            while True:
                with nogil:
                    while not tm_closed_load_acquire(<int *>&self._closed):
                        if tm_ring_enqueue(self._r, obj):
                            ok = 1
                            break
                        why = _waiter_wait(&w)
                        if why != WAIT_AGAIN:
                            break
                if ok or why == WAIT_TIMEOUT or self._closed:
                    break
                PyErr_CheckSignals()
                why = WAIT_AGAIN
        finally:
            self._leave_wait()
        if not ok and self._closed:
            raise _closed_producer_error(self, 0)
        return bool(ok)

    def dequeue_wait(self, timeout=None):
        """Take one handle, waiting (without the GIL) while the ring is empty.

        Returns -1 if timeout seconds passed first; None waits forever.
        PoolClosedError when the ring is closed and empty."""
        timeout = _checks.check_timeout(timeout)
        cdef uint32_t h = 0
        if tm_ring_dequeue(self._r, &h):
            return h
        if self._closed:
            raise _closed_error(self)
        cdef _Waiter w
        _waiter_init(&w, -1.0 if timeout is None else timeout)
        cdef int ok = 0, why = WAIT_AGAIN
        self._busy += 1
        try:
            while True:
                with nogil:
                    while True:
                        if tm_ring_dequeue(self._r, &h):
                            ok = 1
                            break
                        if tm_closed_load_acquire(<int *>&self._closed):
                            # One more look after seeing the close: handles
                            # enqueued before it are visible now (ACQUIRE).
                            ok = tm_ring_dequeue(self._r, &h)
                            why = WAIT_CLOSED
                            break
                        why = _waiter_wait(&w)
                        if why != WAIT_AGAIN:
                            break
                # Only the inner loop decides "closed": a close() that lands
                # while we hold the GIL here is seen there, after a last look.
                if ok or why == WAIT_TIMEOUT or why == WAIT_CLOSED:
                    break
                PyErr_CheckSignals()
                why = WAIT_AGAIN
        finally:
            self._leave_wait()
        if ok:
            return h
        if why == WAIT_CLOSED:
            raise _closed_error(self)
        return -1

    def dequeue_burst_wait(self, n, timeout=None):
        """Up to n handles, waiting (without the GIL) until at least one is
        queued; an empty array if timeout seconds passed first.
        PoolClosedError when the ring is closed and empty."""
        timeout = _checks.check_timeout(timeout)
        cdef cnp.ndarray out = _new_handles(n)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(out, 0)
        cdef uint32_t *data = <uint32_t *>cnp.PyArray_DATA(out)
        cdef uint32_t got = tm_ring_dequeue_burst(self._r, data, count)
        if got == 0 and count > 0:
            got = self._wait_burst(data, count, timeout)
        return out[:got] if got < count else out

    def enqueue_burst_wait(self, handles, timeout=None):
        """Add all handles, waiting (without the GIL) for room as needed;
        returns how many went in before the timeout (all of them without one).

        If close() (before the call too) or a signal (Ctrl-C) ends the wait,
        the exception carries ``.enqueued``: the handles ``handles[:enqueued]``
        are in the ring, the rest are still the caller's."""
        timeout = _checks.check_timeout(timeout)
        if self._closed:
            raise _closed_producer_error(self, 0)
        cdef cnp.ndarray arr = _handle_array(handles, 1 << 32)
        cdef const uint32_t *data = <const uint32_t *>cnp.PyArray_DATA(arr)
        cdef uint32_t count = <uint32_t>cnp.PyArray_DIM(arr, 0)
        cdef uint32_t done = tm_ring_enqueue_burst(self._r, data, count)
        if done == count:
            return done
        cdef _Waiter w
        _waiter_init(&w, -1.0 if timeout is None else timeout)
        cdef uint32_t put
        cdef int why = WAIT_AGAIN
        self._busy += 1
        try:
            while True:
                with nogil:
                    while done < count and not tm_closed_load_acquire(<int *>&self._closed):
                        put = tm_ring_enqueue_burst(self._r, data + done, count - done)
                        done += put
                        if put:
                            _waiter_progress(&w)
                        else:
                            why = _waiter_wait(&w)
                            if why != WAIT_AGAIN:
                                break
                if done == count or why == WAIT_TIMEOUT or self._closed:
                    break
                PyErr_CheckSignals()
                why = WAIT_AGAIN
            if done < count and self._closed:
                raise _closed_producer_error(self, done)
        except BaseException as err:
            try:
                err.enqueued = done
            except AttributeError:
                pass
            raise
        finally:
            self._leave_wait()
        return done

    cdef uint32_t _wait_burst(self, uint32_t *data, uint32_t count, object timeout) except? 0:
        cdef uint32_t got = 0
        if self._closed:
            raise _closed_error(self)
        cdef _Waiter w
        _waiter_init(&w, -1.0 if timeout is None else timeout)
        cdef int why = WAIT_AGAIN
        self._busy += 1
        try:
            while True:
                with nogil:
                    while True:
                        got = tm_ring_dequeue_burst(self._r, data, count)
                        if got:
                            break
                        if tm_closed_load_acquire(<int *>&self._closed):
                            # One more look after seeing the close (see dequeue_wait).
                            got = tm_ring_dequeue_burst(self._r, data, count)
                            why = WAIT_CLOSED
                            break
                        why = _waiter_wait(&w)
                        if why != WAIT_AGAIN:
                            break
                if got or why == WAIT_TIMEOUT or why == WAIT_CLOSED:  # see dequeue_wait
                    break
                PyErr_CheckSignals()
                why = WAIT_AGAIN
        finally:
            self._leave_wait()
        if got == 0 and why == WAIT_CLOSED:
            raise _closed_error(self)
        return got


cdef cnp.ndarray _new_handles(object n):
    n = _checks.check_count(n)
    if n > 0xFFFFFFFF:
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
