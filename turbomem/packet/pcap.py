"""Classic libpcap files, read into / written from pool objects in bursts.

    with PcapReader("trace.pcap", pool, burst=64) as reader:
        for handles, lengths, ts_ns, orig_lengths in reader:
            ...                              # packet i is in pool object handles[i]
            pool.put_bulk(handles)

Both magics (0xa1b2c3d4 microsecond, 0xa1b23c4d nanosecond) in both byte
orders are read; pcapng is not.  A record longer than ``obj_size`` is cut to
``obj_size`` bytes and counted in ``reader.truncated`` (or, with
``oversize="error"``, raises PcapError).

Corruption (bad magic or version, a record longer than the snaplen or than
256 KiB, a truncated record header or body) raises :class:`PcapError`, whose
message and ``offset`` attribute name the byte offset of the bad header.
Records read before the damage in the same burst are still delivered; the
error is raised by the next ``read_burst``.  Handles that hold no packet
always go back to the pool.
"""

from __future__ import annotations

import struct
import sys
import time

import numpy as np

from turbomem._handles import acquire, release
from turbomem.errors import TurbomemError
from turbomem.packet._pcapwalk import copy_records as _pcap_copy_records
from turbomem.packet.constants import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    MAGIC_NSEC,
    MAGIC_USEC,
    MAX_RECORD,
    PCAP_MAGICS,
)

_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"

__all__ = [
    "PcapError",
    "PcapReader",
    "PcapWriter",
    "MAGIC_USEC",
    "MAGIC_NSEC",
    "MAX_RECORD",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_RAW",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
]

_CHUNK = 1 << 20
_HDR_COLS = np.arange(16)


class PcapError(TurbomemError, ValueError):
    """A pcap file that is truncated or corrupt; ``offset`` is the byte offset."""

    def __init__(self, message: str, offset: int | None = None):
        if offset is not None:
            message = f"{message} (at byte offset {offset})"
        super().__init__(message)
        self.offset = offset


class PcapReader:
    """Iterate a pcap file as bursts ``(handles, lengths, timestamps_ns, orig_lengths)``.

    ``handles`` are pool objects now owned by the caller; ``lengths`` are the
    bytes stored in each (captured length, at most ``obj_size``);
    ``orig_lengths`` the length on the wire.  Attributes after the header:
    ``byteorder`` ('<' or '>'), ``nanosecond``, ``version``, ``snaplen``,
    ``linktype``; counters ``packets`` and ``truncated``.
    """

    def __init__(self, source, pool, burst: int = 64, *, oversize: str = "truncate"):
        if burst <= 0:
            raise ValueError(f"burst must be positive, got {burst}")
        if oversize not in ("truncate", "error"):
            raise ValueError("oversize must be 'truncate' or 'error'")
        self.pool = pool
        self.burst = int(burst)
        self.oversize = oversize
        self.packets = 0
        self.truncated = 0
        self._pending = None
        self._eof = False
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            self._file = open(source, "rb")
            self._owns = True
        else:
            self._file = source
            self._owns = False
        self._buf = bytearray(max(_CHUNK, 4 * (MAX_RECORD + 16)))
        self._mv = memoryview(self._buf)
        self._np_buf = np.frombuffer(self._buf, dtype=np.uint8)
        self._pos = 0
        self._end = 0
        self._file_off = 0
        self._pool_mv = None
        try:
            self._read_header()
            self._pool_mv = pool.buffer()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- header --

    def _read_header(self):
        self._fill(24)
        have = self._end - self._pos
        if have < 24:
            raise PcapError(f"truncated pcap file header: {have} of 24 bytes", 0)
        raw = bytes(self._mv[0:24])
        magic_le = struct.unpack_from("<I", raw)[0]
        if magic_le in PCAP_MAGICS:
            order = "<"
        elif struct.unpack_from(">I", raw)[0] in PCAP_MAGICS:
            order = ">"
        else:
            raise PcapError(f"bad pcap magic 0x{magic_le:08x} (pcapng and other formats "
                            "are not supported)", 0)
        magic, major, minor, _zone, _sigfigs, snaplen, network = struct.unpack(
            order + "IHHiIII", raw)
        if major != 2 or minor > 4:
            raise PcapError(f"unsupported pcap version {major}.{minor}", 4)
        self.byteorder = order
        self.nanosecond = magic == MAGIC_NSEC
        self.version = (major, minor)
        self.snaplen = snaplen
        self.linktype = network & 0xFFFF
        self._limit = min(snaplen, MAX_RECORD) if snaplen else MAX_RECORD
        self._incl = struct.Struct(order + "I")
        self._hdr_dtype = np.dtype([("s", order + "u4"), ("f", order + "u4"),
                                    ("incl", order + "u4"), ("orig", order + "u4")])
        self._pos = 24

    # ------------------------------------------------------------ buffers --

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available from _pos (fewer at EOF)."""
        if self._end - self._pos >= need or self._eof:
            return
        if self._pos:
            rest = self._end - self._pos
            self._mv[0:rest] = self._mv[self._pos:self._end]
            self._file_off += self._pos
            self._pos, self._end = 0, rest
        while self._end < need:
            got = self._file.readinto(self._mv[self._end:])
            if not got:
                self._eof = True
                return
            self._end += got

    # -------------------------------------------------------------- reads --

    def read_burst(self, max_packets: int | None = None):
        """Next burst, or None at the end of the file."""
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
        if self._file is None:
            raise ValueError("PcapReader is closed")
        n = self.burst if max_packets is None else min(int(max_packets), self.burst)
        self._fill(16)
        if self._end == self._pos or n <= 0:
            return None
        pool = self.pool
        handles = acquire(pool, n)
        n = len(handles)
        count = 0
        try:
            offsets, parts = [], []
            try:
                count = self._walk(handles, offsets, parts)
            except PcapError as err:
                count = len(offsets) + sum(len(p) for p in parts)
                if not count:
                    raise
                self._pending = err
            if count == 0:
                return None
            self.packets += count
            # decode the record headers of the burst all at once
            parts.append(self._headers_at(offsets))
            hdr = parts[0] if len(parts) == 1 else np.concatenate(parts)
            ts = hdr["s"].astype(np.int64) * 1_000_000_000
            ts += hdr["f"].astype(np.int64) * (1 if self.nanosecond else 1000)
            incl = hdr["incl"].astype(np.uint32)
            caps = np.minimum(incl, self.pool.obj_size)
            self.truncated += int((incl > self.pool.obj_size).sum())
            return handles[:count].copy(), caps, ts, hdr["orig"].astype(np.uint32)
        finally:
            release(pool, handles[count:])

    def _headers_at(self, offsets):
        at = np.array(offsets, dtype=np.intp).reshape(-1, 1) + _HDR_COLS
        return self._np_buf[at].view(self._hdr_dtype)[:, 0]

    def _walk(self, handles, offsets, parts) -> int:
        """Copy up to len(handles) records into the objects; returns how many.

        Whole records already in the buffer go through the compiled fast path
        (``turbomem.packet._pcapwalk.copy_records``, no GIL); the Python loop takes a single
        record only where that stops: a refill, an oversized or a bad record.
        ``offsets`` receives each record's offset in the buffer (valid until
        the next _fill, so they are decoded into ``parts`` before each one).
        """
        pool = self.pool
        obj_size = pool.obj_size
        pmv, buf, mv = self._pool_mv, self._buf, self._mv
        unpack_incl = self._incl.unpack_from
        limit = min(self._limit, obj_size)  # anything above goes the slow way
        swapped = self.byteorder != _NATIVE_ORDER
        handles = np.ascontiguousarray(handles, dtype=np.uint32)
        n = len(handles)
        fast_offsets = np.empty(n, dtype=np.intp)
        count = 0
        pos, end = self._pos, self._end
        try:
            while count < n:
                k, pos = _pcap_copy_records(self._np_buf, pos, end, pool, handles, count, limit,
                                            swapped, fast_offsets)
                if k:
                    offsets.extend(fast_offsets[:k].tolist())
                    count += k
                    if count == n:
                        break
                dst = int(handles[count]) * pool.stride
                if end - pos < 16:
                    pos, end = self._refill(pos, 16, offsets, parts)
                    left = end - pos
                    if left == 0:
                        break
                    if left < 16:
                        raise PcapError(f"truncated record header: {left} of 16 bytes",
                                        self._file_off + pos)
                (incl,) = unpack_incl(buf, pos + 8)
                body = pos + 16
                nxt = body + incl
                if incl > limit or nxt > end:
                    k, pos, end = self._slow_record(pos, incl, offsets, parts)
                    body = pos + 16
                    nxt = body + incl
                    pmv[dst:dst + k] = mv[body:body + k]
                else:
                    pmv[dst:dst + incl] = mv[body:nxt]
                offsets.append(pos)
                pos = nxt
                count += 1
        finally:
            self._pos = pos
        return count

    def _refill(self, pos, need, offsets, parts):
        self._pos = pos
        if offsets:
            parts.append(self._headers_at(offsets))
            offsets.clear()
        self._fill(need)
        return self._pos, self._end

    def _slow_record(self, pos, incl, offsets, parts):
        """A record that is oversized, bad, or not all in the buffer yet."""
        if incl > self._limit:
            what = (f"the snaplen {self.snaplen}" if self.snaplen and incl > self.snaplen
                    else "256 KiB")
            raise PcapError(f"record length {incl} exceeds {what}", self._file_off + pos)
        obj_size = self.pool.obj_size
        if incl > obj_size and self.oversize == "error":
            raise PcapError(f"record of {incl} bytes does not fit an object of "
                            f"{obj_size} bytes", self._file_off + pos)
        end = self._end
        if pos + 16 + incl > end:
            pos, end = self._refill(pos, 16 + incl, offsets, parts)
            if pos + 16 + incl > end:
                raise PcapError(f"truncated record body: {end - pos - 16} of "
                                f"{incl} bytes", self._file_off + pos)
        return min(incl, obj_size), pos, end

    def __iter__(self):
        while True:
            burst = self.read_burst()
            if burst is None:
                return
            yield burst

    def close(self) -> None:
        if self._pool_mv is not None:
            self._pool_mv.release()
            self._pool_mv = None
        if self._file is not None and self._owns:
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class PcapWriter:
    """Write a classic pcap file from pool objects.

    ``byteorder``: '=' (native, the usual), '<' or '>'.  Records longer than
    ``snaplen`` are cut to it (the original length is kept).
    """

    def __init__(self, dest, linktype: int = LINKTYPE_ETHERNET, snaplen: int = MAX_RECORD,
                 nanosecond: bool = False, *, byteorder: str = "="):
        if byteorder == "=":
            byteorder = "<" if sys.byteorder == "little" else ">"
        if byteorder not in "<>":
            raise ValueError("byteorder must be '=', '<' or '>'")
        if not 0 < snaplen <= MAX_RECORD:
            raise ValueError(f"snaplen must be in [1, {MAX_RECORD}]")
        self.byteorder = byteorder
        self.nanosecond = bool(nanosecond)
        self.snaplen = int(snaplen)
        self.linktype = int(linktype)
        self.packets = 0
        if isinstance(dest, (str, bytes)) or hasattr(dest, "__fspath__"):
            self._file = open(dest, "wb")
            self._owns = True
        else:
            self._file = dest
            self._owns = False
        self._hdr = np.dtype([("s", byteorder + "u4"), ("f", byteorder + "u4"),
                              ("incl", byteorder + "u4"), ("orig", byteorder + "u4")])
        magic = MAGIC_NSEC if nanosecond else MAGIC_USEC
        self._file.write(struct.pack(byteorder + "IHHiIII", magic, 2, 4, 0, 0,
                                     self.snaplen, self.linktype))

    def _headers(self, lengths, timestamps_ns, orig_lengths):
        n = len(lengths)
        if timestamps_ns is None:
            timestamps_ns = np.full(n, time.time_ns(), dtype=np.int64)
        ts = np.asarray(timestamps_ns, dtype=np.int64)
        if len(ts) != n:
            raise ValueError("one timestamp per packet is needed")
        incl = np.minimum(lengths, self.snaplen)
        hdr = np.empty(n, dtype=self._hdr)
        hdr["s"] = ts // 1_000_000_000
        frac = ts % 1_000_000_000
        hdr["f"] = frac if self.nanosecond else frac // 1000
        hdr["incl"] = incl
        hdr["orig"] = lengths if orig_lengths is None else orig_lengths
        return hdr.tobytes(), incl

    def write_burst(self, pool, handles, lengths, timestamps_ns=None, orig_lengths=None) -> None:
        """Append one record per handle (``lengths[i]`` bytes of object handles[i])."""
        hs = np.asarray(handles, dtype=np.int64).ravel()
        ls = np.asarray(lengths, dtype=np.int64).ravel()
        if len(hs) != len(ls):
            raise ValueError(f"{len(hs)} handles but {len(ls)} lengths")
        if not len(hs):
            return
        if int(hs.min()) < 0 or int(hs.max()) >= pool.capacity:
            raise ValueError("handle outside the pool")
        if int(ls.min()) < 0 or int(ls.max()) > pool.obj_size:
            raise ValueError(f"lengths must be in [0, obj_size={pool.obj_size}]")
        if orig_lengths is not None:
            orig_lengths = np.asarray(orig_lengths, dtype=np.int64).ravel()
        hdr, incl = self._headers(ls, timestamps_ns, orig_lengths)
        stride = pool.stride
        with pool.buffer() as whole:
            parts = []
            for i, (h, k) in enumerate(zip(hs.tolist(), incl.tolist())):
                parts.append(hdr[16 * i:16 * i + 16])
                parts.append(whole[h * stride:h * stride + k])
            self._file.write(b"".join(parts))
            del parts
        self.packets += len(hs)

    def write_packet(self, data, timestamp_ns: int | None = None,
                     orig_length: int | None = None) -> None:
        """Append one record from a bytes-like object."""
        data = memoryview(data).cast("B")
        hdr, incl = self._headers(np.array([len(data)]), None if timestamp_ns is None
                                  else [timestamp_ns],
                                  None if orig_length is None else [orig_length])
        self._file.write(hdr + bytes(data[:int(incl[0])]))
        self.packets += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            if self._owns:
                self._file.close()
            else:
                self._file.flush()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
