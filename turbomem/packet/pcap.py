"""Classic libpcap files, read into / written from pool objects in bursts.

    with PcapReader("trace.pcap", pool, burst=64) as reader:
        for handles, lengths, ts_ns, orig_lengths in reader:
            ...                              # packet i is in pool object handles[i]
            pool.put_bulk(handles)

Both magics (0xa1b2c3d4 microsecond, 0xa1b23c4d nanosecond) in both byte
orders are read; pcapng is read by :mod:`turbomem.packet.pcapng`, and
``turbomem.packet.pcapng.open_capture`` picks the reader by the magic.  A record longer than ``obj_size`` is cut to
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

import os
import struct
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt

from turbomem._checks import check_count, coerce_handles, int_array
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

if TYPE_CHECKING:
    from turbomem._core import Pool

_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"

#: A path, or a binary file object the reader reads from / the writer writes to.
Source = Union[str, bytes, "os.PathLike[str]", IO[bytes]]
#: One burst: handles, captured lengths, timestamps (ns since the epoch), wire lengths.
Burst = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.uint32]]

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
_MAX_TS_NS = (1 << 32) * 1_000_000_000  # the header's seconds field is 32 bits
_HDR_COLS = np.arange(16)


class PcapError(TurbomemError, ValueError):
    """A pcap file that is truncated or corrupt; ``offset`` is the byte offset."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        if offset is not None:
            message = f"{message} (at byte offset {offset})"
        super().__init__(message)
        self.offset = offset


_R = TypeVar("_R", bound="_CaptureReader")


class _CaptureReader:
    """What the pcap and pcapng readers share: the read buffer over the file
    (``_buf``/``_mv``, ``_pos``/``_end``, ``_file_off``, ``_eof``), iteration
    by bursts, and closing (the pool's buffer view and the file if we opened it)."""

    _file: Optional[IO[bytes]]
    _owns: bool
    _pool_mv: Optional[memoryview]
    _buf: bytearray
    _mv: memoryview
    _pos: int
    _end: int
    _file_off: int
    _eof: bool

    def read_burst(self, max_packets: Optional[int] = None) -> Optional[Burst]:
        """Next burst, or None at the end of the file (each reader defines it)."""
        raise NotImplementedError

    def _reserve(self, need: int) -> None:
        """Grow the buffer to hold ``need`` bytes (readers with bounded records need not)."""

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available from _pos (fewer at EOF)."""
        if self._end - self._pos >= need or self._eof:
            return
        if self._pos:
            rest = self._end - self._pos
            self._mv[0:rest] = self._mv[self._pos:self._end]
            self._file_off += self._pos
            self._pos, self._end = 0, rest
        self._reserve(need)
        f = self._file
        if f is None:  # closed by another thread meanwhile
            raise ValueError(f"{type(self).__name__} is closed")
        while self._end < need:
            got = f.readinto(self._mv[self._end:])  # type: ignore[attr-defined]  # IO has no readinto
            if not got:
                self._eof = True
                return
            self._end += got

    def __iter__(self) -> Iterator[Burst]:
        while True:
            burst = self.read_burst()
            if burst is None:
                return
            yield burst

    def close(self) -> None:
        """Release the pool's buffer and close the file (if this reader opened it)."""
        if self._pool_mv is not None:
            self._pool_mv.release()
            self._pool_mv = None
        if self._file is not None and self._owns:
            self._file.close()
        self._file = None

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        self.close()
        return False


class PcapReader(_CaptureReader):
    """Iterate a pcap file as bursts ``(handles, lengths, timestamps_ns, orig_lengths)``.

    ``handles`` are pool objects now owned by the caller; ``lengths`` are the
    bytes stored in each (captured length, at most ``obj_size``);
    ``orig_lengths`` the length on the wire.  Attributes after the header:
    ``byteorder`` ('<' or '>'), ``nanosecond``, ``version``, ``snaplen``,
    ``linktype``; counters ``packets`` and ``truncated``.
    """

    pool: Pool
    burst: int
    oversize: str
    packets: int
    truncated: int
    byteorder: str
    nanosecond: bool
    version: tuple[int, int]
    snaplen: int
    linktype: int
    _file: Optional[IO[bytes]]
    _pool_mv: Optional[memoryview]
    _pending: Optional[PcapError]

    def __init__(self, source: Source, pool: Pool, burst: int = 64, *, oversize: str = "truncate") -> None:
        if check_count(burst, "burst") == 0:
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
        if isinstance(source, (str, bytes, os.PathLike)):
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

    def _read_header(self) -> None:
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
            raise PcapError(f"bad pcap magic 0x{magic_le:08x} (pcapng: use "
                            "turbomem.packet.pcapng.open_capture)", 0)
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

    # -------------------------------------------------------------- reads --

    def read_burst(self, max_packets: int | None = None) -> Optional[Burst]:
        """Next burst, or None at the end of the file.

        ``max_packets=0`` returns an empty burst (four empty arrays), never
        None: None means only "end of file"."""
        n = self.burst if max_packets is None else min(check_count(max_packets, "max_packets"),
                                                       self.burst)
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
        if self._file is None:
            raise ValueError("PcapReader is closed")
        if n == 0:
            return (np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.int64),
                    np.zeros(0, np.uint32))
        self._fill(16)
        if self._end == self._pos:
            return None
        pool = self.pool
        handles = acquire(pool, n)
        n = len(handles)
        count = 0
        try:
            offsets: list[int] = []
            parts: list[Any] = []
            try:
                count = self._walk(handles, offsets, parts)
            except PcapError as err:
                count = len(offsets) + sum([len(p) for p in parts])
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

    def _headers_at(self, offsets: list[int]) -> Any:
        at = np.array(offsets, dtype=np.intp).reshape(-1, 1) + _HDR_COLS
        return self._np_buf[at].view(self._hdr_dtype)[:, 0]

    def _walk(self, handles: npt.NDArray[np.uint32], offsets: list[int], parts: list[Any]) -> int:
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
        if pmv is None:  # closed by another thread since read_burst looked
            raise ValueError("PcapReader is closed")
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

    def _refill(self, pos: int, need: int, offsets: list[int], parts: list[Any]) -> tuple[int, int]:
        self._pos = pos
        if offsets:
            parts.append(self._headers_at(offsets))
            offsets.clear()
        self._fill(need)
        return self._pos, self._end

    def _slow_record(self, pos: int, incl: int, offsets: list[int], parts: list[Any]) -> tuple[int, int, int]:
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

class PcapWriter:
    """Write a classic pcap file from pool objects.

    ``byteorder``: '=' (native, the usual), '<' or '>'.  Records longer than
    ``snaplen`` are cut to it (the original length is kept).
    """

    byteorder: str
    nanosecond: bool
    snaplen: int
    linktype: int
    packets: int
    _file: Optional[IO[bytes]]

    def __init__(self, dest: Source, linktype: int = LINKTYPE_ETHERNET, snaplen: int = MAX_RECORD,
                 nanosecond: bool = False, *, byteorder: str = "=") -> None:
        if not isinstance(byteorder, str) or byteorder not in ("=", "<", ">"):
            raise ValueError(f"byteorder must be '=', '<' or '>', got {byteorder!r}")
        if byteorder == "=":
            byteorder = "<" if sys.byteorder == "little" else ">"
        if not 0 < check_count(snaplen, "snaplen") <= MAX_RECORD:
            raise ValueError(f"snaplen must be in [1, {MAX_RECORD}], got {snaplen}")
        if check_count(linktype, "linktype") > 0xFFFFFFFF:
            raise ValueError(f"linktype must fit 32 bits, got {linktype}")
        self.byteorder = byteorder
        self.nanosecond = bool(nanosecond)
        self.snaplen = int(snaplen)
        self.linktype = int(linktype)
        self.packets = 0
        if isinstance(dest, (str, bytes, os.PathLike)):
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

    def _headers(self, lengths: Any, timestamps_ns: Any, orig_lengths: Any) -> tuple[bytes, Any]:
        """Record headers; every field is range-checked (a pcap header holds
        32-bit seconds, fraction, and lengths: nothing may wrap)."""
        n = len(lengths)
        if timestamps_ns is None:
            timestamps_ns = np.full(n, time.time_ns(), dtype=np.int64)
        ts = int_array(timestamps_ns, 0, _MAX_TS_NS, "timestamp_ns").astype(np.int64)
        if len(ts) != n:
            raise ValueError(f"{n} packets but {len(ts)} timestamps")
        if orig_lengths is not None:
            orig_lengths = int_array(orig_lengths, 0, 1 << 32, "orig_length")
            if len(orig_lengths) != n:
                raise ValueError(f"{n} packets but {len(orig_lengths)} orig_lengths")
        incl = np.minimum(lengths, self.snaplen)
        hdr = np.empty(n, dtype=self._hdr)
        hdr["s"] = ts // 1_000_000_000
        frac = ts % 1_000_000_000
        hdr["f"] = frac if self.nanosecond else frac // 1000
        hdr["incl"] = incl
        hdr["orig"] = lengths if orig_lengths is None else orig_lengths
        return hdr.tobytes(), incl

    def write_burst(self, pool: Pool, handles: npt.ArrayLike, lengths: npt.ArrayLike,
                    timestamps_ns: Optional[npt.ArrayLike] = None,
                    orig_lengths: Optional[npt.ArrayLike] = None) -> None:
        """Append one record per handle (``lengths[i]`` bytes of object handles[i]).

        Handles are ints in [0, capacity) (InvalidHandleError otherwise),
        lengths ints in [0, obj_size], timestamps ints in [0, 2**32 * 10**9)
        nanoseconds, orig_lengths ints in [0, 2**32): anything else raises
        before a byte is written."""
        file = self._checked_file()
        hs = coerce_handles(handles, pool.capacity).astype(np.int64)
        ls = int_array(lengths, 0, pool.obj_size + 1, "length").astype(np.int64)
        if len(hs) != len(ls):
            raise ValueError(f"{len(hs)} handles but {len(ls)} lengths")
        hdr, incl = self._headers(ls, timestamps_ns, orig_lengths)
        if not len(hs):
            return
        stride = pool.stride
        with pool.buffer() as whole:
            parts: list[Any] = []
            for i, (h, k) in enumerate(zip(hs.tolist(), incl.tolist())):
                parts.append(hdr[16 * i:16 * i + 16])
                parts.append(whole[h * stride:h * stride + k])
            file.write(b"".join(parts))
            del parts
        self.packets += len(hs)

    def write_packet(self, data: Any, timestamp_ns: int | None = None,
                     orig_length: int | None = None) -> None:
        """Append one record from a bytes-like object (same checks as write_burst)."""
        file = self._checked_file()
        data = memoryview(data).cast("B")
        hdr, incl = self._headers(np.array([len(data)]), None if timestamp_ns is None
                                  else [timestamp_ns],
                                  None if orig_length is None else [orig_length])
        file.write(hdr + bytes(data[:int(incl[0])]))
        self.packets += 1

    def _checked_file(self) -> IO[bytes]:
        file = self._file
        if file is None:
            raise ValueError("PcapWriter is closed")
        return file

    def flush(self) -> None:
        """Flush the file."""
        self._checked_file().flush()

    def close(self) -> None:
        """Close the file (if this writer opened it; else flush it)."""
        if self._file is not None:
            if self._owns:
                self._file.close()
            else:
                self._file.flush()
            self._file = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        self.close()
        return False
