# cython: language_level=3
"""Compiled half of turbomem.shared: operations on a validated shared mapping.

turbomem/shared.py creates or attaches the mapping, validates its header and
hands this module a buffer over it plus the layout offsets.  Everything here
trusts those offsets (they were checked against the file size) but not the
control words inside the mapping: include/turbomem/shm.h bounds-checks every
index it reads from shared memory.
"""

from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "turbomem/ring.h" nogil:
    ctypedef struct tm_ring_headtail:
        uint32_t head
        uint32_t tail
    ctypedef struct tm_ring_t:
        uint32_t size
        uint32_t mask
        uint32_t capacity
        uint32_t flags
        tm_ring_headtail prod
        tm_ring_headtail cons
        uint32_t slots[1]  # flexible array in C
    unsigned TM_RING_SP, TM_RING_SC
    size_t tm_ring_memsize(uint32_t capacity)
    int tm_ring_init(tm_ring_t *r, uint32_t capacity, unsigned flags)
    uint32_t tm_ring_enqueue_burst(tm_ring_t *r, const uint32_t *objs, uint32_t n)
    uint32_t tm_ring_enqueue_bulk(tm_ring_t *r, const uint32_t *objs, uint32_t n)
    uint32_t tm_ring_dequeue_burst(tm_ring_t *r, uint32_t *objs, uint32_t n)
    uint32_t tm_ring_count(const tm_ring_t *r)

cdef extern from *:
    unsigned __builtin_clz(unsigned x) nogil

cdef extern from "turbomem/shm.h" nogil:
    ctypedef struct tm_shm_head_t:
        uint64_t word
    ctypedef struct tm_shm_ctl_t:
        tm_shm_head_t heads[3]
        uint64_t recovered
    ctypedef struct tm_shm_mag_t:
        uint64_t state
        uint32_t next
        uint32_t count
    ctypedef struct tm_shm_slot_t:
        uint64_t own
        int32_t tid
        uint32_t len
        uint64_t start_time
        uint64_t rec_start
    ctypedef struct tm_shm_ringctl_t:
        uint32_t data_seq
        uint32_t data_waiters
        uint32_t space_seq
        uint32_t space_waiters
    ctypedef struct tm_shm_pool_t:
        tm_shm_ctl_t *ctl
        tm_shm_mag_t *mags
        uint32_t *mag_hs
        uint32_t *owner
        tm_shm_slot_t *slots
        uint32_t *caches
        unsigned char *rings
        size_t ring_stride
        uint32_t capacity, cache_size, max_slots, nrings
        uint32_t mag_size, nmags
        uint32_t ring_capacity, ring_mask
    uint32_t TM_SHM_MAX_SLOTS, TM_SHM_MAX_RINGS, TM_SHM_MAX_MAGS
    int TM_SHM_EEMPTY, TM_SHM_ERANGE, TM_SHM_ENOTHELD, TM_SHM_ENOMEM, TM_SHM_EBUSY, TM_SHM_ECORRUPT
    int TM_K_FREE, TM_K_HELD, TM_K_CACHED, TM_K_RING
    int TM_DEPOT_STACKS, TM_OP_NONE, TM_M_ON, TM_M_OWNED
    uint32_t TM_OWN_KIND(uint32_t w)
    uint32_t TM_OWN_SLOT(uint32_t w)
    uint32_t TM_OWN_RINGNO(uint32_t w)
    uint32_t TM_H_OP(uint64_t h)
    uint32_t TM_H_TOP1(uint64_t h)
    uint32_t TM_M_KIND(uint64_t w)
    uint32_t TM_M_WHO(uint64_t w)
    int32_t TM_SLOT_PID(uint64_t own)
    uint32_t TM_SLOT_REC(uint64_t own)
    void tm_shm_mag_geometry(uint32_t capacity, uint32_t cache_size, uint32_t max_slots,
                             uint32_t *mag_size, uint32_t *nmags)
    tm_shm_ringctl_t *tm_shm_ringctl(const tm_shm_pool_t *p, uint32_t r)
    ctypedef struct tm_shm_pring_t:
        uint32_t size, mask, capacity, flags
        uint32_t prod_pos
        uint32_t cons_pos
        uint64_t *cells
    uint32_t TM_PRING_MPMC, TM_PRING_MAX
    size_t tm_shm_pring_memsize(uint32_t capacity)
    tm_shm_pring_t *tm_shm_pring(const tm_shm_pool_t *p, uint32_t r)
    uint32_t tm_shm_ring_count(const tm_shm_pool_t *p, uint32_t r)
    uint32_t TM_CELL_SEQ(uint64_t c)
    uint32_t TM_CELL_VAL(uint64_t c)
    int tm_shm_pool_init(tm_shm_pool_t *p, uint32_t ring_capacity)
    int tm_shm_get_bulk(tm_shm_pool_t *p, uint32_t s, uint32_t *out, uint32_t n)
    int tm_shm_put_bulk(tm_shm_pool_t *p, uint32_t s, const uint32_t *hs, uint32_t n, uint32_t *bad)
    int tm_shm_flush(tm_shm_pool_t *p, uint32_t s)
    long tm_shm_ring_enqueue(tm_shm_pool_t *p, uint32_t r, uint32_t s, const uint32_t *hs,
                             uint32_t n, uint32_t *bad)
    long tm_shm_ring_dequeue(tm_shm_pool_t *p, uint32_t r, uint32_t s, uint32_t *out, uint32_t n)
    long tm_shm_slot_claim(tm_shm_pool_t *p, int32_t pid, int32_t tid, uint64_t start)
    long long tm_shm_recover(tm_shm_pool_t *p, uint32_t s, int32_t pid, uint64_t start, uint32_t rec,
                             int32_t me, uint64_t me_start)
    long long tm_shm_release(tm_shm_pool_t *p, uint32_t s, int32_t me, uint64_t me_start)
    void tm_shm_notify(uint32_t *seq, uint32_t *waiters)
    uint32_t tm_shm_wait_begin(uint32_t *seq, uint32_t *waiters)
    void tm_shm_wait_sleep(uint32_t *seq, uint32_t s, long slice_ns)
    void tm_shm_wait_end(uint32_t *waiters)

MAX_SLOTS = TM_SHM_MAX_SLOTS
MAX_RINGS = TM_SHM_MAX_RINGS
RINGCTL_SIZE = sizeof(tm_shm_ringctl_t)
CTL_SIZE = sizeof(tm_shm_ctl_t)
SLOT_SIZE = sizeof(tm_shm_slot_t)
MAG_SIZE = sizeof(tm_shm_mag_t)
DEPOT_STACKS = ("full", "partial", "empty")


def mag_geometry(uint32_t capacity, uint32_t cache_size, uint32_t max_slots):
    """(mag_size, nmags) of a pool: shm.h's pure function, so that the layout
    and every attacher agree with the C code."""
    cdef uint32_t b, nm
    tm_shm_mag_geometry(capacity, cache_size, max_slots, &b, &nm)
    return b, nm
OWNER_KINDS = {TM_K_FREE: "free", TM_K_HELD: "held", TM_K_CACHED: "cached", TM_K_RING: "ring"}


def ring_memsize(uint32_t capacity):
    """Bytes of a ring.h ring of that capacity (0 if the capacity is invalid)."""
    return tm_ring_memsize(capacity)


def pool_ring_memsize(uint32_t capacity):
    """Bytes of a pool ring (shm.h) of that capacity (0 if invalid)."""
    return tm_shm_pring_memsize(capacity)


POOL_RING_FLAGS = TM_PRING_MPMC
POOL_RING_MAX = TM_PRING_MAX


# A sleeper wakes at least this often to run Python signal handlers, so
# Ctrl-C interrupts a blocking wait within ~50 ms.
DEF SLICE_NS = 50000000


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class _Mapped:
    """Holds the buffer export that keeps the mapping alive (mmap.close()
    refuses while it exists) and the base address."""
    cdef object _buf
    cdef unsigned char *base
    cdef Py_ssize_t size

    cdef int _bind(self, mm) except -1:
        cdef unsigned char[::1] view = mm
        self._buf = view
        self.base = &view[0]
        self.size = view.shape[0]
        return 0

    def address(self):
        self._alive()
        return <size_t>self.base

    def release(self):
        """Drop the buffer export (the caller then closes the mmap)."""
        self._buf = None
        self.base = NULL

    cdef int _alive(self) except -1:
        if self.base == NULL:
            raise ValueError("shared mapping is closed")
        return 0


cdef inline uint32_t *_handles_in(object arr, Py_ssize_t *n) except NULL:
    """arr is a C-contiguous uint32 ndarray prepared by shared.py."""
    cdef cnp.ndarray a = arr
    n[0] = cnp.PyArray_DIM(a, 0)
    return <uint32_t *>cnp.PyArray_DATA(a)


cdef class PoolView(_Mapped):
    """One process's pointers into a pool mapping."""
    cdef tm_shm_pool_t p
    cdef size_t objects_off

    def __cinit__(self, mm, dict lay, bint init, uint32_t ring_capacity):
        self._bind(mm)
        self.p.ctl = <tm_shm_ctl_t *>(self.base + <size_t>lay["off_ctl"])
        self.p.mags = <tm_shm_mag_t *>(self.base + <size_t>lay["off_mags"])
        self.p.mag_hs = <uint32_t *>(self.base + <size_t>lay["off_mag_hs"])
        self.p.mag_size = lay["mag_size"]
        self.p.nmags = lay["nmags"]
        self.p.owner = <uint32_t *>(self.base + <size_t>lay["off_owner"])
        self.p.slots = <tm_shm_slot_t *>(self.base + <size_t>lay["off_slots"])
        self.p.caches = <uint32_t *>(self.base + <size_t>lay["off_caches"])
        self.p.rings = self.base + <size_t>lay["off_rings"]
        self.p.ring_stride = lay["ring_stride"]
        self.p.capacity = lay["capacity"]
        self.p.cache_size = lay["cache_size"]
        self.p.max_slots = lay["max_slots"]
        self.p.nrings = lay["nrings"]
        self.objects_off = lay["off_objects"]
        cdef uint32_t rcap = lay["ring_capacity"]
        self.p.ring_capacity = rcap
        self.p.ring_mask = 0 if rcap <= 1 else (1u << (32 - __builtin_clz(rcap - 1))) - 1
        if init and tm_shm_pool_init(&self.p, ring_capacity) != 0:
            raise OSError("could not initialise the shared pool's depot or rings")

    def ring_fields(self, uint32_t r):
        """(size, mask, capacity, flags) of pool ring r, for attach validation."""
        self._alive()
        cdef tm_shm_pring_t *q = tm_shm_pring(&self.p, r)
        return (q.size, q.mask, q.capacity, q.flags)

    def claim_slot(self, int32_t pid, int32_t tid, uint64_t start):
        self._alive()
        return tm_shm_slot_claim(&self.p, pid, tid, start)

    def slots(self):
        """[(slot, pid, tid, start_time, cached)] of the claimed slots."""
        self._alive()
        out = []
        cdef uint32_t s
        cdef tm_shm_slot_t *sl
        for s in range(self.p.max_slots):
            sl = &self.p.slots[s]
            if sl.own != 0:
                out.append((s, TM_SLOT_PID(sl.own), sl.tid, sl.start_time, sl.len))
        return out

    def recovering(self):
        """{slot: (recoverer pid, its start time)} of the slots whose recovery
        (or release) is under way or was cut short by the recoverer's death."""
        self._alive()
        cdef uint32_t s
        return {s: (TM_SLOT_REC(self.p.slots[s].own), self.p.slots[s].rec_start)
                for s in range(self.p.max_slots) if TM_SLOT_REC(self.p.slots[s].own) != 0}

    def get(self, uint32_t slot):
        self._alive()
        cdef uint32_t h
        cdef int rc = tm_shm_get_bulk(&self.p, slot, &h, 1)
        return h if rc == 0 else rc

    def get_bulk(self, uint32_t slot, out):
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *o = _handles_in(out, &n)
        cdef int rc
        with nogil:
            rc = tm_shm_get_bulk(&self.p, slot, o, <uint32_t>n)
        return rc

    def put(self, uint32_t slot, uint32_t h):
        self._alive()
        cdef uint32_t bad = 0
        return tm_shm_put_bulk(&self.p, slot, &h, 1, &bad)

    def put_bulk(self, uint32_t slot, arr):
        """(rc, index of the offending handle)."""
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *hs = _handles_in(arr, &n)
        cdef uint32_t bad = 0
        cdef int rc
        with nogil:
            rc = tm_shm_put_bulk(&self.p, slot, hs, <uint32_t>n, &bad)
        return rc, bad

    def flush(self, uint32_t slot):
        self._alive()
        return tm_shm_flush(&self.p, slot)

    def recover(self, uint32_t slot, int32_t pid, uint64_t start, uint32_t rec, int32_t me,
                uint64_t me_start):
        """Recover `slot`, found dead as (pid, start) and marked by recoverer
        pid `rec` (0: none; else one found dead), as process (me, me_start).
        Returns the objects made available, or -1 if the slot changed hands."""
        self._alive()
        cdef long long freed
        with nogil:
            freed = tm_shm_recover(&self.p, slot, pid, start, rec, me, me_start)
        if freed == TM_SHM_ENOMEM:
            raise MemoryError("no memory for the recovery's scratch arrays")
        return freed

    def release_slot(self, uint32_t slot, int32_t me, uint64_t me_start):
        """This process's live slot detaching: give back all it holds."""
        self._alive()
        cdef long long freed
        with nogil:
            freed = tm_shm_release(&self.p, slot, me, me_start)
        if freed == TM_SHM_ENOMEM:
            raise MemoryError("no memory for the recovery's scratch arrays")
        return freed

    def owner_word(self, uint32_t h):
        self._alive()
        if h >= self.p.capacity:
            raise IndexError(h)
        return self.p.owner[h]

    def census(self):
        """Counts of objects by owner kind, and per slot: {'free': n, 'held': {slot: n}, ...},
        and of magazines by place."""
        self._alive()
        cdef uint32_t h, w, m
        cdef uint64_t st
        cdef dict held = {}, cached = {}, ring = {}, owned = {}
        cdef Py_ssize_t nfree = 0
        cdef list on = [0, 0, 0]
        for h in range(self.p.capacity):
            w = self.p.owner[h]
            if TM_OWN_KIND(w) == TM_K_FREE:
                nfree += 1
            elif TM_OWN_KIND(w) == TM_K_HELD:
                held[TM_OWN_SLOT(w)] = held.get(TM_OWN_SLOT(w), 0) + 1
            elif TM_OWN_KIND(w) == TM_K_CACHED:
                cached[TM_OWN_SLOT(w)] = cached.get(TM_OWN_SLOT(w), 0) + 1
            elif TM_OWN_KIND(w) == TM_K_RING:
                ring[TM_OWN_RINGNO(w)] = ring.get(TM_OWN_RINGNO(w), 0) + 1
        for m in range(self.p.nmags):
            st = self.p.mags[m].state
            if TM_M_KIND(st) == TM_M_ON and TM_M_WHO(st) < 3:
                on[TM_M_WHO(st)] += 1
            elif TM_M_KIND(st) == TM_M_OWNED:
                owned[TM_M_WHO(st)] = owned.get(TM_M_WHO(st), 0) + 1
        return {"free": nfree, "held": held, "cached": cached, "ring": ring,
                "magazines": {"full": on[0], "partial": on[1], "empty": on[2], "owned": owned},
                "recovered": self.p.ctl.recovered}

    def depot_audit(self):
        """Problems found walking the depot (exact only while nobody uses the
        pool): each magazine on exactly one stack, in the place its state
        names, holding only handles marked as in it, each handle once."""
        self._alive()
        problems = []
        cdef uint32_t k, m, m1, i, c, steps, h
        cdef uint64_t hd
        cdef bytearray seen = bytearray(self.p.nmags)
        cdef bytearray listed = bytearray(self.p.capacity)
        cdef Py_ssize_t nlisted = 0
        for k in range(<uint32_t>TM_DEPOT_STACKS):
            hd = self.p.ctl.heads[k].word
            if TM_H_OP(hd) != TM_OP_NONE:
                problems.append(f"{DEPOT_STACKS[k]} stack has an unfinished operation")
            m1 = TM_H_TOP1(hd)
            steps = 0
            while m1 != 0:
                if m1 > self.p.nmags or steps > self.p.nmags:
                    problems.append(f"{DEPOT_STACKS[k]} stack has a bad link")
                    break
                m = m1 - 1
                steps += 1
                if seen[m]:
                    problems.append(f"magazine {m} is twice on the stacks")
                    break
                seen[m] = 1
                st = self.p.mags[m].state
                if TM_M_KIND(st) != TM_M_ON or TM_M_WHO(st) != k:
                    problems.append(f"magazine {m} on the {DEPOT_STACKS[k]} stack has state {st:#x}")
                c = self.p.mags[m].count
                if c > self.p.mag_size or (k == 0 and c != self.p.mag_size) or \
                        (k == 1 and not 0 < c < self.p.mag_size) or (k == 2 and c != 0):
                    problems.append(f"magazine {m} on the {DEPOT_STACKS[k]} stack holds {c}")
                    c = min(c, self.p.mag_size)
                for i in range(c):
                    h = self.p.mag_hs[<size_t>m * self.p.mag_size + i]
                    if h >= self.p.capacity or self.p.owner[h] != m:
                        problems.append(f"magazine {m} lists handle {h}, not marked as in it")
                    elif listed[h]:
                        problems.append(f"handle {h} is listed twice in the depot")
                    else:
                        listed[h] = 1
                        nlisted += 1
                m1 = self.p.mags[m].next
        for m in range(self.p.nmags):
            if not seen[m]:
                st = self.p.mags[m].state
                problems.append(f"magazine {m} is on no stack (state {st:#x})")
        return problems, nlisted

    def ring_state(self, uint32_t r):
        self._alive()
        cdef tm_shm_pring_t *q = tm_shm_pring(&self.p, r)
        return {"count": tm_shm_ring_count(&self.p, r), "capacity": self.p.ring_capacity,
                "prod_pos": q.prod_pos, "cons_pos": q.cons_pos}

    def ring_handles(self, uint32_t r):
        """Handles published in ring r and not yet taken, oldest first, each
        once (a snapshot).  A cell a dead consumer left behind may show a
        handle that was taken and enqueued again: it is listed once."""
        self._alive()
        cdef tm_shm_pring_t *q = tm_shm_pring(&self.p, r)
        cdef uint32_t size = self.p.ring_mask + 1, i, pos, h, w
        cdef uint64_t c
        cdef set seen = set()
        cdef list found = []
        for i in range(size):
            c = q.cells[i]
            h = TM_CELL_VAL(c)
            if h >= self.p.capacity:
                continue
            w = self.p.owner[h]
            if TM_OWN_KIND(w) != TM_K_RING or TM_OWN_RINGNO(w) != r or h in seen:
                continue
            seen.add(h)
            pos = TM_CELL_SEQ(c) - 1
            found.append((<uint32_t>(pos - q.cons_pos), h))
        found.sort()
        return [h for _, h in found]

    def ring_enqueue(self, uint32_t r, uint32_t slot, arr, timeout):
        """Enqueue all of arr on ring r, waiting up to timeout (None: forever,
        0: no wait).  Returns (n or 0 on timeout or a negative code, bad)."""
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *hs = _handles_in(arr, &n)
        cdef uint32_t bad = 0, seq
        cdef long rc
        cdef tm_shm_ringctl_t *ctl = tm_shm_ringctl(&self.p, r)
        cdef double deadline = -1.0 if timeout is None else _now() + timeout
        cdef long slice_ns
        while True:
            rc = tm_shm_ring_enqueue(&self.p, r, slot, hs, <uint32_t>n, &bad)
            if rc != 0 or n == 0:
                return rc, bad
            if deadline >= 0 and _now() >= deadline:
                return 0, 0
            seq = tm_shm_wait_begin(&ctl.space_seq, &ctl.space_waiters)
            rc = tm_shm_ring_enqueue(&self.p, r, slot, hs, <uint32_t>n, &bad)
            if rc != 0:
                tm_shm_wait_end(&ctl.space_waiters)
                return rc, bad
            slice_ns = SLICE_NS
            if deadline >= 0 and (deadline - _now()) * 1e9 < slice_ns:
                slice_ns = max(<long>((deadline - _now()) * 1e9), 0)
            with nogil:
                tm_shm_wait_sleep(&ctl.space_seq, seq, slice_ns)
            tm_shm_wait_end(&ctl.space_waiters)
            PyErr_CheckSignals()
            self._alive()

    def ring_dequeue(self, uint32_t r, uint32_t slot, out, timeout):
        """Dequeue up to len(out) handles into out, waiting up to timeout for
        at least one.  Returns the count (0 on timeout) or a negative code."""
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *o = _handles_in(out, &n)
        cdef uint32_t seq
        cdef long rc
        cdef tm_shm_ringctl_t *ctl = tm_shm_ringctl(&self.p, r)
        cdef double deadline = -1.0 if timeout is None else _now() + timeout
        cdef long slice_ns
        while True:
            rc = tm_shm_ring_dequeue(&self.p, r, slot, o, <uint32_t>n)
            if rc != 0 or n == 0:
                return rc
            if deadline >= 0 and _now() >= deadline:
                return 0
            seq = tm_shm_wait_begin(&ctl.data_seq, &ctl.data_waiters)
            rc = tm_shm_ring_dequeue(&self.p, r, slot, o, <uint32_t>n)
            if rc != 0:
                tm_shm_wait_end(&ctl.data_waiters)
                return rc
            slice_ns = SLICE_NS
            if deadline >= 0 and (deadline - _now()) * 1e9 < slice_ns:
                slice_ns = max(<long>((deadline - _now()) * 1e9), 0)
            with nogil:
                tm_shm_wait_sleep(&ctl.data_seq, seq, slice_ns)
            tm_shm_wait_end(&ctl.data_waiters)
            PyErr_CheckSignals()
            self._alive()

    def objects(self, size_t size):
        """The object region as a writable memoryview (shared.py shapes it)."""
        self._alive()
        return memoryview(self._buf)[self.objects_off:self.objects_off + size]


cdef class RingView(_Mapped):
    """One process's pointers into a standalone shared ring mapping (ring.h,
    MPMC or SP/SC per its flags, plus futex words)."""
    cdef tm_shm_ringctl_t *ctl
    cdef tm_ring_t *ring
    cdef uint32_t size, mask, capacity, flags

    def __cinit__(self, mm, size_t off_ctl, size_t off_ring, bint init, uint32_t capacity,
                  unsigned flags):
        self._bind(mm)
        self.ctl = <tm_shm_ringctl_t *>(self.base + off_ctl)
        self.ring = <tm_ring_t *>(self.base + off_ring)
        self.capacity = capacity
        self.flags = flags
        self.size = 1 if capacity <= 1 else (1u << (32 - __builtin_clz(capacity - 1)))
        self.mask = self.size - 1
        if init and tm_ring_init(self.ring, capacity, flags) != 0:
            raise ValueError("invalid ring capacity or flags")

    cdef int _alive(self) except -1:
        if self.base == NULL:
            raise ValueError("shared mapping is closed")
        # ring.h indexes with the geometry stored in the ring: another process
        # scribbling it must get an exception here, not steer us out of bounds.
        if (self.ring.size != self.size or self.ring.mask != self.mask or
                self.ring.capacity != self.capacity or self.ring.flags != self.flags):
            raise ValueError("the shared ring's geometry was overwritten (corrupt control area)")
        return 0

    def fields(self):
        self._alive()
        return (self.ring.size, self.ring.mask, self.ring.capacity, self.ring.flags)

    def count(self):
        self._alive()
        return tm_ring_count(self.ring)

    def waiters(self):
        self._alive()
        return (self.ctl.data_waiters, self.ctl.space_waiters)

    def enqueue(self, arr, bint burst, timeout):
        """Enqueue arr (all, or as many as fit with burst), waiting up to
        timeout for room (None: forever; 0: no wait).  Returns the count."""
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *hs = _handles_in(arr, &n)
        cdef uint32_t got, seq
        cdef double deadline = -1.0 if timeout is None else _now() + timeout
        cdef long slice_ns
        while True:
            got = tm_ring_enqueue_burst(self.ring, hs, <uint32_t>n) if burst else \
                tm_ring_enqueue_bulk(self.ring, hs, <uint32_t>n)
            if got or n == 0:
                tm_shm_notify(&self.ctl.data_seq, &self.ctl.data_waiters)
                return got
            if deadline >= 0 and _now() >= deadline:
                return 0
            seq = tm_shm_wait_begin(&self.ctl.space_seq, &self.ctl.space_waiters)
            got = tm_ring_enqueue_burst(self.ring, hs, <uint32_t>n) if burst else \
                tm_ring_enqueue_bulk(self.ring, hs, <uint32_t>n)
            if got:
                tm_shm_wait_end(&self.ctl.space_waiters)
                tm_shm_notify(&self.ctl.data_seq, &self.ctl.data_waiters)
                return got
            slice_ns = SLICE_NS
            if deadline >= 0 and (deadline - _now()) * 1e9 < slice_ns:
                slice_ns = max(<long>((deadline - _now()) * 1e9), 0)
            with nogil:
                tm_shm_wait_sleep(&self.ctl.space_seq, seq, slice_ns)
            tm_shm_wait_end(&self.ctl.space_waiters)
            PyErr_CheckSignals()
            self._alive()

    def dequeue(self, out, timeout):
        """Dequeue up to len(out) into out, waiting up to timeout for at
        least one.  Returns the count (0 on timeout)."""
        self._alive()
        cdef Py_ssize_t n
        cdef uint32_t *o = _handles_in(out, &n)
        cdef uint32_t got, seq
        cdef double deadline = -1.0 if timeout is None else _now() + timeout
        cdef long slice_ns
        while True:
            got = tm_ring_dequeue_burst(self.ring, o, <uint32_t>n)
            if got or n == 0:
                if got:
                    tm_shm_notify(&self.ctl.space_seq, &self.ctl.space_waiters)
                return got
            if deadline >= 0 and _now() >= deadline:
                return 0
            seq = tm_shm_wait_begin(&self.ctl.data_seq, &self.ctl.data_waiters)
            got = tm_ring_dequeue_burst(self.ring, o, <uint32_t>n)
            if got:
                tm_shm_wait_end(&self.ctl.data_waiters)
                tm_shm_notify(&self.ctl.space_seq, &self.ctl.space_waiters)
                return got
            slice_ns = SLICE_NS
            if deadline >= 0 and (deadline - _now()) * 1e9 < slice_ns:
                slice_ns = max(<long>((deadline - _now()) * 1e9), 0)
            with nogil:
                tm_shm_wait_sleep(&self.ctl.data_seq, seq, slice_ns)
            tm_shm_wait_end(&self.ctl.data_waiters)
            PyErr_CheckSignals()
            self._alive()


# ---- the per-call hit path: SharedPool.get() and put() in one compiled call ----
#
# Each thread finds its slot in a small C thread-local table keyed by the
# pool's process-unique id; a miss (first call in this thread, more than
# TM_SHM_TLS_WAYS pools in use by one thread) asks SharedPool._slot(), which
# claims or finds the thread's lease, and caches the answer.  C thread-local
# storage starts empty in every new thread, so a thread never inherits a slot
# from an exited one (even when its pthread_t is reused).  After fork() the
# child's counter differs from every entry and from the pool's, so the first
# call goes the slow way, where SharedPool._check() voids the parent's slots.

cdef extern from *:
    """
    #include <pthread.h>
    #include <stdint.h>
    static unsigned long tm_shm_forks = 0;
    static void tm_shm__after_fork_child(void) { tm_shm_forks++; }
    static int tm_shm_install_atfork(void) { return pthread_atfork(NULL, NULL, tm_shm__after_fork_child); }
    #define TM_SHM_TLS_WAYS 8
    typedef struct { unsigned long long uid; unsigned long forks; uint32_t slot; } tm_shm_tls_ent;
    static __thread tm_shm_tls_ent tm_shm_tls[TM_SHM_TLS_WAYS];
    static __thread unsigned tm_shm_tls_next;
    /* This thread's slot in pool `uid`, or -1. */
    static inline long tm_shm_tls_get(unsigned long long uid) {
        for (int i = 0; i < TM_SHM_TLS_WAYS; i++)
            if (tm_shm_tls[i].uid == uid && tm_shm_tls[i].forks == tm_shm_forks)
                return (long)tm_shm_tls[i].slot;
        return -1;
    }
    /* Remember it (round robin over the ways). */
    static inline void tm_shm_tls_put(unsigned long long uid, uint32_t slot) {
        tm_shm_tls_ent *e = &tm_shm_tls[tm_shm_tls_next++ % TM_SHM_TLS_WAYS];
        e->uid = uid;
        e->forks = tm_shm_forks;
        e->slot = slot;
    }
    """
    unsigned long tm_shm_forks
    int tm_shm_install_atfork()
    long tm_shm_tls_get(unsigned long long uid)
    void tm_shm_tls_put(unsigned long long uid, uint32_t slot)

from cpython.long cimport PyLong_CheckExact
from cpython.exc cimport PyErr_Occurred, PyErr_Clear

cdef extern from "Python.h":
    # Declared without Cython's 'except? -1': an overflow is ours to clear
    # (the slow path then raises InvalidHandleError, as for any out-of-range handle).
    long _as_long_noexc "PyLong_AsLong"(object o)

if tm_shm_install_atfork() != 0:
    raise OSError("pthread_atfork failed: the shared pool cannot track fork()")

cdef unsigned long long _next_uid = 0


def fork_count():
    """How many fork()s this process descends from since the module loaded (0 in the original)."""
    return tm_shm_forks


cdef class PoolFast:
    """Base of turbomem.shared.SharedPool: get() and put() for one handle
    without a Python frame on the hit path.  Anything unusual (closed, after
    a fork, a handle that is not a plain int in range, the pool short, an
    error code) goes to SharedPool's Python methods, which decide and raise."""
    cdef PoolView _pv
    cdef unsigned long long _uid
    cdef unsigned long _forks_seen
    cdef bint _open
    cdef unsigned long long _fast_gets, _fast_puts

    def __cinit__(self, *args, **kwargs):
        global _next_uid
        _next_uid += 1
        self._uid = _next_uid
        self._open = False

    def _bind_view(self, PoolView v not None):
        self._pv = v
        self._forks_seen = tm_shm_forks
        self._fast_gets = self._fast_puts = 0
        self._open = True

    def _unbind_view(self):
        self._open = False

    def _fast_counts(self):
        """(gets, puts) counted on the compiled path since setup or the last fork."""
        return self._fast_gets, self._fast_puts

    def _forked(self):
        """Called by SharedPool._check() in a fork child: count afresh."""
        self._forks_seen = tm_shm_forks
        self._fast_gets = self._fast_puts = 0

    cdef inline long _cached_slot(self):
        return tm_shm_tls_get(self._uid)

    cdef long _slot_slow(self) except -1:
        cdef long slot = self._slot()  # SharedPool._slot: the thread's lease, claimed if need be
        tm_shm_tls_put(self._uid, <uint32_t>slot)
        return slot

    def get(self):
        """One free object's handle (PoolEmptyError when none is left)."""
        cdef long s
        cdef uint32_t h
        if not self._open or self._forks_seen != tm_shm_forks:
            return self._get_slow()
        s = self._cached_slot()
        if s < 0:
            s = self._slot_slow()
        if tm_shm_get_bulk(&self._pv.p, <uint32_t>s, &h, 1) != 0:
            return self._get_slow()  # nothing was taken: the slow path retries, recovers, raises
        self._fast_gets += 1
        return h

    def put(self, h):
        """Give object h back to the pool."""
        cdef long s, x
        cdef uint32_t hv, bad = 0
        cdef int rc
        if not self._open or self._forks_seen != tm_shm_forks or not PyLong_CheckExact(h):
            return self._put_slow(h)
        x = _as_long_noexc(h)
        if x == -1 and PyErr_Occurred():
            PyErr_Clear()
            return self._put_slow(h)  # too big for a long: the slow path says what is wrong
        if x < 0 or x > 0xFFFFFFFF:
            return self._put_slow(h)
        hv = <uint32_t>x
        s = self._cached_slot()
        if s < 0:
            s = self._slot_slow()
        rc = tm_shm_put_bulk(&self._pv.p, <uint32_t>s, &hv, 1, &bad)
        if rc != 0:
            self._raise_put(rc, hv)
        self._fast_puts += 1
