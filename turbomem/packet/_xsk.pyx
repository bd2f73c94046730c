# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hot loops of AF_XDP and TPACKET_V3 receive (include/turbomem/xsk.h).

Every loop runs without the GIL and holds the pool's region alive for its
duration (Pool._enter_nogil / _leave_nogil, the same anchor the pool's own
bulk calls take).  The Python layer (turbomem.packet.xdp / .tpacket) keeps
the ring mappings alive and serialises calls per socket; these classes only
check what would otherwise corrupt memory (closed pool, array sizes, handle
ranges).
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from turbomem._core cimport Pool, tm_pool_t, pool_get_bulk, pool_put, pool_put_bulk

import numpy as np
cimport numpy as cnp

cnp.import_array()

from turbomem.errors import InvalidHandleError, PoolClosedError


cdef extern from "turbomem/xsk.h" nogil:
    ctypedef struct tm_xsk_ring_t:
        uint32_t size
    void tm_xsk_ring_init(tm_xsk_ring_t *r, void *map, uint64_t off_prod, uint64_t off_cons,
                          uint64_t off_desc, uint64_t off_flags, uint32_t size, int we_produce)
    uint32_t tm_xsk_prod_free(const tm_xsk_ring_t *r)
    uint32_t tm_xsk_cons_avail(const tm_xsk_ring_t *r)
    int tm_xsk_needs_wakeup(const tm_xsk_ring_t *r)
    uint32_t tm_xsk_fill(tm_xsk_ring_t *fill, const uint32_t *handles, uint32_t n,
                         unsigned shift, uint8_t *owned)
    uint32_t tm_xsk_rx(tm_xsk_ring_t *rx, uint32_t max, unsigned shift, uint32_t capacity,
                       uint8_t *owned, uint32_t *handles, uint32_t *lengths, uint32_t *offsets,
                       uint64_t *bad)
    uint32_t tm_xsk_complete(tm_xsk_ring_t *comp, uint32_t max, unsigned shift, uint32_t capacity,
                             uint8_t *owned, uint32_t *handles, uint64_t *bad)
    uint32_t tm_xsk_tx(tm_xsk_ring_t *tx, const uint32_t *handles, const uint32_t *lengths,
                       uint32_t n, uint32_t offset, unsigned shift, uint8_t *owned)

    ctypedef struct tm_tp3_t:
        uint8_t *map
        uint32_t block_size
        uint32_t block_nr
        uint32_t block
        uint32_t left
        uint32_t next
    uint32_t tm_tp3_rx(tm_tp3_t *r, char *base, size_t stride, uint32_t obj_size,
                       const uint32_t *handles, uint32_t n, uint32_t *caplens,
                       uint32_t *wirelens, uint64_t *bad)
    int tm_tp3_ready(const tm_tp3_t *r)


cdef extern from "<sys/socket.h>" nogil:
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const void *addr, unsigned addrlen)
    ssize_t recvfrom(int fd, void *buf, size_t n, int flags, void *addr, void *addrlen)

cdef extern from "<errno.h>" nogil:
    int errno

DEF MSG_DONTWAIT = 0x40

# The ring roles (C constants, and the same numbers for the Python layer).
cdef enum:
    R_FILL = 0
    R_COMPLETION = 1
    R_RX = 2
    R_TX = 3
FILL, COMPLETION, RX, TX = R_FILL, R_COMPLETION, R_RX, R_TX


cdef class XskRings:
    """The four rings of one AF_XDP socket over one pool, plus frame ownership.

    ``owned[h]`` is 1 while frame h is with the kernel (on the fill or tx
    ring, in the kernel, or on the rx or completion ring not yet taken).
    """
    cdef tm_xsk_ring_t rings[4]
    cdef bint present[4]
    cdef Pool pool
    cdef unsigned shift
    cdef uint32_t capacity
    cdef cnp.ndarray _owned
    cdef uint8_t *owned
    cdef readonly uint64_t bad_descriptors
    cdef readonly uint64_t in_kernel
    cdef readonly uint64_t tx_inflight
    cdef uint32_t *scratch
    cdef cnp.ndarray _scratch

    def __cinit__(self, Pool pool not None, unsigned shift):
        if pool.closed:
            raise PoolClosedError(f"{pool!r} is closed")
        if (1 << shift) != pool.stride:
            raise ValueError("shift does not match the pool stride")
        self.pool = pool
        self.shift = shift
        self.capacity = pool.capacity
        self._owned = np.zeros(pool.capacity, dtype=np.uint8)
        self.owned = <uint8_t *>cnp.PyArray_DATA(self._owned)
        self._scratch = np.zeros(4096, dtype=np.uint32)
        self.scratch = <uint32_t *>cnp.PyArray_DATA(self._scratch)
        self.bad_descriptors = 0
        self.in_kernel = 0
        self.tx_inflight = 0
        for i in range(4):
            self.present[i] = False

    def attach(self, int which, uintptr_t map_addr, uint64_t off_prod, uint64_t off_cons,
               uint64_t off_desc, uint64_t off_flags, uint32_t size):
        """Point ring ``which`` at its mmap'd area (offsets from XDP_MMAP_OFFSETS)."""
        if which < 0 or which > 3:
            raise ValueError("bad ring")
        if size == 0 or size & (size - 1):
            raise ValueError(f"ring size must be a power of two, got {size}")
        tm_xsk_ring_init(&self.rings[which], <void *>map_addr, off_prod, off_cons, off_desc,
                         off_flags, size, which == R_FILL or which == R_TX)
        self.present[which] = True

    def detach_all(self):
        """Forget the ring mappings (the Python layer unmaps them next)."""
        for i in range(4):
            self.present[i] = False

    cdef int _need(self, int which) except -1:
        if not self.present[which]:
            raise ValueError("that ring is not set up on this socket")
        return 0

    def needs_wakeup(self, int which):
        self._need(which)
        return bool(tm_xsk_needs_wakeup(&self.rings[which]))

    def fill_free(self):
        self._need(R_FILL)
        return tm_xsk_prod_free(&self.rings[R_FILL])

    def rx_pending(self):
        self._need(R_RX)
        return tm_xsk_cons_avail(&self.rings[R_RX])

    def refill(self, uint32_t most):
        """Top the fill ring up from the pool (up to ``most`` frames).

        Takes what the pool can give in all-or-nothing bulk gets of
        decreasing size.  Returns how many frames went on the ring."""
        self._need(R_FILL)
        cdef uint32_t room, want, got = 0
        cdef int rc
        cdef tm_pool_t *p
        self.pool._enter_nogil()
        try:
            p = self.pool._c
            with nogil:
                room = tm_xsk_prod_free(&self.rings[R_FILL])
                if room > most:
                    room = most
                while room > 0:
                    want = room if room < 4096 else 4096
                    rc = pool_get_bulk(p, self.scratch, want)
                    while rc != 0 and want > 1:
                        want = want // 2
                        rc = pool_get_bulk(p, self.scratch, want)
                    if rc != 0:
                        break
                    tm_xsk_fill(&self.rings[R_FILL], self.scratch, want, self.shift, self.owned)
                    got += want
                    room -= want
        finally:
            self.pool._leave_nogil()
        self.in_kernel += got
        return got

    def rx(self, cnp.ndarray handles, cnp.ndarray lengths, cnp.ndarray offsets):
        """Take received frames into the (uint32, C-contiguous) arrays; returns the count."""
        self._need(R_RX)
        cdef Py_ssize_t n = _check_out(handles, lengths, offsets)
        cdef uint32_t k
        cdef uint64_t bad = 0
        cdef uint32_t *h = <uint32_t *>cnp.PyArray_DATA(handles)
        cdef uint32_t *ln = <uint32_t *>cnp.PyArray_DATA(lengths)
        cdef uint32_t *off = <uint32_t *>cnp.PyArray_DATA(offsets)
        self.pool._enter_nogil()
        try:
            with nogil:
                k = tm_xsk_rx(&self.rings[R_RX], <uint32_t>n, self.shift, self.capacity, self.owned,
                              h, ln, off, &bad)
        finally:
            self.pool._leave_nogil()
        self.bad_descriptors += bad
        self.in_kernel -= k
        return k

    def complete(self):
        """Return completed tx frames to the pool; returns how many went back.

        A frame the pool refuses (the caller already returned it while it was
        in flight: a double free) is skipped and reported after the others
        went back, so the pool's count stays exact."""
        self._need(R_COMPLETION)
        cdef uint32_t k, i, total = 0, refused = 0, first_refused = 0
        cdef uint64_t bad = 0
        cdef int rc = 0
        cdef tm_pool_t *p
        self.pool._enter_nogil()
        try:
            p = self.pool._c
            with nogil:
                while True:
                    k = tm_xsk_complete(&self.rings[R_COMPLETION], 4096, self.shift, self.capacity,
                                        self.owned, self.scratch, &bad)
                    if k == 0:
                        break
                    rc = pool_put_bulk(p, self.scratch, k)
                    if rc == 0:
                        total += k
                        continue
                    for i in range(k):  # all-or-nothing refused: one by one
                        if pool_put(p, self.scratch[i]) == 0:
                            total += 1
                        else:
                            if refused == 0:
                                first_refused = self.scratch[i]
                            refused += 1
        finally:
            self.pool._leave_nogil()
        self.bad_descriptors += bad
        self.in_kernel -= total + refused
        self.tx_inflight -= total + refused
        if refused:
            raise InvalidHandleError(
                f"{refused} completed frame(s) were already free in the pool (first: handle "
                f"{first_refused}): a handle was returned while the kernel was sending it")
        return total

    def tx(self, cnp.ndarray handles, cnp.ndarray lengths, uint32_t offset):
        """Queue frames for transmit (caller-checked uint32 arrays); returns how many."""
        self._need(R_TX)
        if handles.dtype != np.uint32 or lengths.dtype != np.uint32 \
                or not handles.flags.c_contiguous or not lengths.flags.c_contiguous \
                or handles.shape[0] != lengths.shape[0]:
            raise TypeError("handles and lengths must be C-contiguous uint32 arrays of one length")
        cdef Py_ssize_t n = handles.shape[0]
        cdef uint32_t k
        cdef const uint32_t *h = <const uint32_t *>cnp.PyArray_DATA(handles)
        cdef const uint32_t *ln = <const uint32_t *>cnp.PyArray_DATA(lengths)
        self.pool._enter_nogil()
        try:
            with nogil:
                k = tm_xsk_tx(&self.rings[R_TX], h, ln, <uint32_t>n, offset, self.shift, self.owned)
        finally:
            self.pool._leave_nogil()
        self.in_kernel += k
        self.tx_inflight += k
        return k

    def kick_tx(self, int fd):
        """sendto(fd, NULL, 0, MSG_DONTWAIT): make the kernel look at the tx ring."""
        cdef ssize_t r
        with nogil:
            r = sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)
        return 0 if r >= 0 else errno

    def kick_rx(self, int fd):
        """recvfrom(fd, NULL, 0, MSG_DONTWAIT): wake the kernel for the fill ring."""
        cdef ssize_t r
        with nogil:
            r = recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)
        return 0 if r >= 0 else errno

    def owned_array(self):
        """Read-only view of the ownership bytes (1: with the kernel)."""
        v = self._owned.view()
        v.setflags(write=False)
        return v

    def is_owned(self, uint32_t h):
        return h < self.capacity and self.owned[h] != 0

    def take_all_owned(self):
        """Every frame still marked as the kernel's, unmarked (for close, after
        the socket is gone and the kernel can no longer touch them)."""
        out = np.flatnonzero(self._owned).astype(np.uint32)
        self._owned[:] = 0
        self.in_kernel = 0
        self.tx_inflight = 0
        return out


cdef Py_ssize_t _check_out(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c) except -1:
    for x in (a, b, c):
        if x.dtype != np.uint32 or not x.flags.c_contiguous or not x.flags.writeable or x.ndim != 1:
            raise TypeError("output arrays must be writable C-contiguous 1-D uint32")
    if b.shape[0] < a.shape[0] or c.shape[0] < a.shape[0]:
        raise ValueError("output arrays are shorter than the handle array")
    return a.shape[0]


cdef class TPacketV3Ring:
    """The block walk of a TPACKET_V3 rx ring, copying packets into pool objects."""
    cdef tm_tp3_t r
    cdef bint live
    cdef readonly uint64_t bad_headers

    def __cinit__(self, uintptr_t map_addr, uint32_t block_size, uint32_t block_nr):
        if block_nr == 0 or block_size < 4096:
            raise ValueError("bad TPACKET_V3 geometry")
        self.r.map = <uint8_t *>map_addr
        self.r.block_size = block_size
        self.r.block_nr = block_nr
        self.r.block = 0
        self.r.left = 0
        self.r.next = 0
        self.live = True
        self.bad_headers = 0

    def detach(self):
        self.live = False

    def ready(self):
        """Is there a block (or the rest of one) to read?"""
        if not self.live:
            return False
        return self.r.left != 0 or tm_tp3_ready(&self.r) != 0

    def rx(self, Pool pool not None, cnp.ndarray handles, cnp.ndarray caplens, cnp.ndarray wirelens):
        """Copy up to len(handles) packets into those objects; returns the count.

        The caller owns ``handles`` (already checked to be in the pool)."""
        if not self.live:
            raise ValueError("the ring is unmapped")
        cdef Py_ssize_t n = _check_out(handles, caplens, wirelens)
        cdef uint32_t k
        cdef uint64_t bad = 0
        cdef const uint32_t *h = <const uint32_t *>cnp.PyArray_DATA(handles)
        cdef uint32_t *cl = <uint32_t *>cnp.PyArray_DATA(caplens)
        cdef uint32_t *wl = <uint32_t *>cnp.PyArray_DATA(wirelens)
        cdef Py_ssize_t i
        cdef char *base
        for i in range(n):
            if h[i] >= pool.capacity:
                raise InvalidHandleError(f"handle {h[i]} is outside the pool")
        pool._enter_nogil()
        try:
            base = <char *><uintptr_t>pool.address
            with nogil:
                k = tm_tp3_rx(&self.r, base, <size_t>pool.stride, <uint32_t>pool.obj_size,
                              h, <uint32_t>n, cl, wl, &bad)
        finally:
            pool._leave_nogil()
        self.bad_headers += bad
        return k


cdef extern from "<string.h>" nogil:
    void *memmove(void *dst, const void *src, size_t n)


def move_to_start(Pool pool not None, cnp.ndarray handles, cnp.ndarray lengths, cnp.ndarray offsets):
    """Move each packet from ``offsets[i]`` to byte 0 of its frame (for code that
    reads packets at the start of the object, like turbomem.parse).  One copy
    per packet inside an already-cached frame; plain recv() never does this."""
    cdef Py_ssize_t n = _check_out(handles, lengths, offsets)
    cdef uint32_t *h = <uint32_t *>cnp.PyArray_DATA(handles)
    cdef uint32_t *ln = <uint32_t *>cnp.PyArray_DATA(lengths)
    cdef uint32_t *off = <uint32_t *>cnp.PyArray_DATA(offsets)
    cdef Py_ssize_t i
    cdef size_t stride = <size_t>pool.stride
    cdef char *base
    for i in range(n):
        if h[i] >= pool.capacity or <size_t>off[i] + ln[i] > stride:
            raise ValueError(f"packet {i}: handle {h[i]}, offset {off[i]}, length {ln[i]} "
                             f"does not fit the pool's frames")
    pool._enter_nogil()
    try:
        base = <char *><uintptr_t>pool.address
        with nogil:
            for i in range(n):
                if off[i]:
                    memmove(base + h[i] * stride, base + h[i] * stride + off[i], ln[i])
                    off[i] = 0
    finally:
        pool._leave_nogil()
