# cython: language_level=3
"""The hot loop of turbomem.packet.pcap.PcapReader, compiled.

A cimport user of the pool core: it reaches the pool's memory through the
attributes turbomem/_core.pxd declares, and never includes pool.h itself.
"""

from libc.stdint cimport uint32_t
from libc.string cimport memcpy

from turbomem._core cimport Pool, pool_ptr


cdef extern from *:
    """
    static inline uint32_t tm_bswap32(uint32_t x) { return __builtin_bswap32(x); }
    """
    uint32_t tm_bswap32(uint32_t x) nogil


def copy_records(const unsigned char[::1] buf, Py_ssize_t pos, Py_ssize_t end, Pool pool not None,
                 const uint32_t[::1] handles, Py_ssize_t first, uint32_t limit, bint swapped,
                 Py_ssize_t[::1] offsets):
    """Copy whole pcap records found at buf[pos:end] into the objects handles[first:].

    Stops at the first record that is not wholly in the buffer, whose
    captured length exceeds `limit`, or whose handle is outside the pool (the
    caller's slow path handles and reports those).  offsets[k] receives each
    copied record's offset in buf.  Returns (records copied, new pos).
    Raises PoolClosedError on a closed pool."""
    pool_ptr(pool)  # raises PoolClosedError if the pool is closed
    if first < 0 or offsets.shape[0] < handles.shape[0] - first or end > buf.shape[0] or pos < 0:
        raise ValueError("bad arguments to copy_records")
    if limit > pool.obj_size:
        limit = <uint32_t>pool.obj_size
    cdef Py_ssize_t i = first, k = 0, n = handles.shape[0]
    cdef uint32_t incl, h
    cdef uint32_t capacity = pool.capacity
    cdef size_t stride = <size_t>pool.stride
    cdef char *base = pool._base
    with nogil:
        while i < n and end - pos >= 16:
            memcpy(&incl, &buf[pos + 8], 4)
            if swapped:
                incl = tm_bswap32(incl)
            if incl > limit or pos + 16 + <Py_ssize_t>incl > end:
                break
            h = handles[i]
            if h >= capacity:
                break  # never write outside the pool
            memcpy(base + <size_t>h * stride, &buf[pos + 16], incl)
            offsets[k] = pos
            k += 1
            i += 1
            pos += 16 + incl
    return k, pos
