"""pcapng files (Wireshark's default format), read into pool objects in bursts.

    with PcapngReader("trace.pcapng", pool, burst=64) as reader:
        for handles, lengths, ts_ns, orig_lengths in reader:
            linktype = reader.linktype           # one link type per burst
            interfaces = reader.interface_ids    # which interface each packet came in on
            ...
            pool.put_bulk(handles)

    with open_capture(path, pool) as reader:     # pcap or pcapng, chosen by the magic
        ...

The bursts are the same tuples as :class:`turbomem.packet.pcap.PcapReader`'s,
so code written for one reads the other.  Read: section header blocks (several
sections, each in its own byte order), interface description blocks (per
interface: link type, snaplen, ``if_tsresol``, ``if_tsoffset``, ``if_name``),
enhanced packet blocks, simple packet blocks and the obsolete packet block.
Every other block (name resolution, interface statistics, decryption secrets,
custom) is skipped.  A burst never mixes link types: it ends early where the
link type changes, so ``reader.linktype`` holds for every packet in it.

A packet longer than ``obj_size`` is cut to ``obj_size`` bytes and counted in
``reader.truncated`` (or, with ``oversize="error"``, raises PcapError).
Corruption (a bad block length, a block that runs past the end of the file, an
unknown interface, a packet longer than its block) raises
:class:`~turbomem.packet.pcap.PcapError` with the byte offset of the bad block.
As with pcap, packets read before the damage are delivered first and the error
comes with the next ``read_burst``; handles that hold no packet always go back
to the pool.
"""

from __future__ import annotations

import os
import struct
from typing import IO, NamedTuple, Optional, Union

import numpy as np
import numpy.typing as npt

from turbomem._core import Pool
from turbomem._handles import acquire, release
from turbomem.packet.constants import (
    PCAPNG_BLOCK_EPB,
    PCAPNG_BLOCK_IDB,
    PCAPNG_BLOCK_PB,
    PCAPNG_BLOCK_SHB,
    PCAPNG_BLOCK_SPB,
    PCAPNG_BYTE_ORDER_MAGIC,
    PCAPNG_MAX_BLOCK,
    PCAPNG_OPT_END,
    PCAPNG_OPT_IF_NAME,
    PCAPNG_OPT_IF_TSOFFSET,
    PCAPNG_OPT_IF_TSRESOL,
)
from turbomem.packet.pcap import Burst, PcapError, PcapReader, Source, _CaptureReader

__all__ = ["Interface", "PcapngReader", "open_capture", "is_pcapng"]

_PACKET_BLOCKS = (PCAPNG_BLOCK_EPB, PCAPNG_BLOCK_SPB, PCAPNG_BLOCK_PB)
_CHUNK = 1 << 20


class Interface(NamedTuple):
    """One interface description block, as read."""

    linktype: int
    snaplen: int
    #: timestamp units per second (10**6 unless ``if_tsresol`` says otherwise)
    units_per_second: int
    #: seconds added to every timestamp (``if_tsoffset``)
    offset_seconds: int
    name: str
    #: which section of the file (0 for the first section header block)
    section: int

    def to_ns(self, ticks: int) -> int:
        """A raw 64-bit timestamp of this interface in nanoseconds since the epoch (floor)."""
        return (ticks * 1_000_000_000) // self.units_per_second + self.offset_seconds * 1_000_000_000


def _units_per_second(tsresol: int) -> int:
    """``if_tsresol``: high bit clear, 10**-v seconds; set, 2**-v seconds."""
    value = tsresol & 0x7F
    return (2 if tsresol & 0x80 else 10) ** value


def is_pcapng(head: bytes) -> bool:
    """True when ``head`` (the first 4 bytes of a file or more) is a pcapng section header."""
    return len(head) >= 4 and struct.unpack_from("<I", head)[0] == PCAPNG_BLOCK_SHB


class PcapngReader(_CaptureReader):
    """Iterate a pcapng file as bursts ``(handles, lengths, timestamps_ns, orig_lengths)``.

    ``handles`` are pool objects now owned by the caller; ``lengths`` the
    bytes stored in each (captured length, at most ``obj_size``);
    ``orig_lengths`` the length on the wire.  After each burst:
    ``linktype`` (shared by the whole burst) and ``interface_ids`` (one per
    packet, the index in ``interfaces`` of the current section).
    ``interfaces`` lists the current section's interfaces; ``byteorder`` is
    its byte order ('<' or '>').  Counters: ``packets``, ``truncated``,
    ``sections``, ``skipped_blocks``.
    """

    pool: Pool
    burst: int
    oversize: str
    packets: int
    truncated: int
    sections: int
    skipped_blocks: int
    linktype: Optional[int]
    interface_ids: npt.NDArray[np.uint32]
    interfaces: list[Interface]
    byteorder: str

    def __init__(self, source: Source, pool: Pool, burst: int = 64, *, oversize: str = "truncate") -> None:
        if burst <= 0:
            raise ValueError(f"burst must be positive, got {burst}")
        if oversize not in ("truncate", "error"):
            raise ValueError("oversize must be 'truncate' or 'error'")
        self.pool = pool
        self.burst = int(burst)
        self.oversize = oversize
        self.packets = 0
        self.truncated = 0
        self.sections = 0
        self.skipped_blocks = 0
        self.linktype = None
        self.interface_ids = np.zeros(0, dtype=np.uint32)
        self.interfaces = []
        self.byteorder = "<"
        self._pending: Optional[PcapError] = None
        self._eof = False
        self._buf = bytearray(_CHUNK)
        self._mv = memoryview(self._buf)
        self._pos = 0
        self._end = 0
        self._file_off = 0  # file offset of _buf[0]
        self._pool_mv: Optional[memoryview] = None
        self._file: Optional[IO[bytes]]
        if isinstance(source, (str, bytes, os.PathLike)):
            self._file = open(source, "rb")
            self._owns = True
        else:
            self._file = source
            self._owns = False
        try:
            self._fill(4)
            if not is_pcapng(bytes(self._mv[0:4])):
                raise PcapError("not a pcapng file: no section header block", 0)
            # Read the header blocks up to the first packet, so that linktype and
            # interfaces are known before the first burst (as with PcapReader).
            while True:
                block = self._block_at_start()
                if block is None or block[0] in _PACKET_BLOCKS:
                    break
                self._consume_control(block)
            if self.interfaces:
                self.linktype = self.interfaces[0].linktype
            self._pool_mv = pool.buffer()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ buffers --

    def _reserve(self, need: int) -> None:
        """A block may be larger than the buffer: grow it (pcapng blocks have no fixed bound)."""
        if need > len(self._buf):
            self._mv.release()
            self._buf.extend(bytes(need - len(self._buf)))
            self._mv = memoryview(self._buf)

    def _block_at_start(self) -> Optional[tuple[int, int]]:
        """(type, total length) of the block at _pos, all of it buffered; None at EOF.

        A section header block sets the byte order before its length is read.
        """
        self._fill(12)
        have = self._end - self._pos
        if have == 0:
            return None
        offset = self._file_off + self._pos
        if have < 12:
            raise PcapError(f"truncated block header: {have} of 12 bytes", offset)
        (btype,) = struct.unpack_from("<I", self._buf, self._pos)
        if btype == PCAPNG_BLOCK_SHB:  # the same bytes in both orders
            self._fill(12)
            (magic_le,) = struct.unpack_from("<I", self._buf, self._pos + 8)
            if magic_le == PCAPNG_BYTE_ORDER_MAGIC:
                order = "<"
            elif struct.unpack_from(">I", self._buf, self._pos + 8)[0] == PCAPNG_BYTE_ORDER_MAGIC:
                order = ">"
            else:
                raise PcapError(f"bad pcapng byte-order magic 0x{magic_le:08x}", offset + 8)
            self.byteorder = order
        order = self.byteorder
        btype, length = struct.unpack_from(order + "II", self._buf, self._pos)
        if length < 12 or length % 4:
            raise PcapError(f"bad block length {length} (block type 0x{btype:08x})", offset)
        if length > PCAPNG_MAX_BLOCK:
            raise PcapError(f"block length {length} exceeds {PCAPNG_MAX_BLOCK}", offset)
        self._fill(length)
        if self._end - self._pos < length:
            raise PcapError(f"truncated block: {self._end - self._pos} of {length} bytes", offset)
        (trailer,) = struct.unpack_from(order + "I", self._buf, self._pos + length - 4)
        if trailer != length:
            raise PcapError(f"block length {length} but trailing length {trailer}", offset)
        return btype, length

    # ---------------------------------------------------- control blocks --

    def _consume_control(self, block: tuple[int, int]) -> None:
        btype, length = block
        pos, order = self._pos, self.byteorder
        offset = self._file_off + pos
        if btype == PCAPNG_BLOCK_SHB:
            if length < 28:
                raise PcapError(f"section header block of {length} bytes (at least 28)", offset)
            major, minor = struct.unpack_from(order + "HH", self._buf, pos + 12)
            if major != 1:
                raise PcapError(f"unsupported pcapng version {major}.{minor}", offset + 12)
            self.interfaces = []  # interface numbers restart in every section
            self.sections += 1
        elif btype == PCAPNG_BLOCK_IDB:
            if length < 20:
                raise PcapError(f"interface description block of {length} bytes (at least 20)", offset)
            linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", self._buf, pos + 8)
            tsresol, tsoffset, name = 6, 0, ""
            for code, value in self._options(pos + 16, pos + length - 4, offset):
                if code == PCAPNG_OPT_IF_TSRESOL and len(value) >= 1:
                    tsresol = value[0]
                elif code == PCAPNG_OPT_IF_TSOFFSET and len(value) >= 8:
                    (tsoffset,) = struct.unpack_from(order + "q", value)
                elif code == PCAPNG_OPT_IF_NAME:
                    name = value.decode("utf-8", "replace").rstrip("\0")
            if (tsresol & 0x7F) > (63 if tsresol & 0x80 else 18):
                raise PcapError(f"if_tsresol 0x{tsresol:02x} is out of range", offset)
            self.interfaces.append(Interface(linktype, snaplen, _units_per_second(tsresol), tsoffset,
                                             name, self.sections - 1))
        else:
            self.skipped_blocks += 1
        self._pos += length

    def _options(self, start: int, stop: int, offset: int) -> list[tuple[int, bytes]]:
        out = []
        order = self.byteorder
        while start + 4 <= stop:
            code, size = struct.unpack_from(order + "HH", self._buf, start)
            if code == PCAPNG_OPT_END:
                break
            if start + 4 + size > stop:
                raise PcapError(f"option {code} of {size} bytes runs past its block", offset)
            out.append((code, bytes(self._buf[start + 4:start + 4 + size])))
            start += 4 + ((size + 3) & ~3)
        return out

    # ------------------------------------------------------------- packets --

    def _packet(self, btype: int, length: int) -> tuple[int, int, int, int, int]:
        """(interface, raw timestamp, captured length, wire length, data offset) of a packet block."""
        pos, order = self._pos, self.byteorder
        offset = self._file_off + pos
        if btype == PCAPNG_BLOCK_SPB:
            if length < 16:
                raise PcapError(f"simple packet block of {length} bytes (at least 16)", offset)
            if not self.interfaces:
                raise PcapError("simple packet block before any interface description", offset)
            (orig,) = struct.unpack_from(order + "I", self._buf, pos + 8)
            snaplen = self.interfaces[0].snaplen
            caplen = min(orig, length - 16, snaplen if snaplen else orig)
            return 0, -1, caplen, orig, pos + 12
        if length < 32:
            raise PcapError(f"packet block of {length} bytes (at least 32)", offset)
        if btype == PCAPNG_BLOCK_EPB:
            iface, hi, lo, caplen, orig = struct.unpack_from(order + "IIIII", self._buf, pos + 8)
        else:  # the obsolete packet block: a 16-bit interface id and a drop count
            iface, _drops, hi, lo, caplen, orig = struct.unpack_from(order + "HHIIII", self._buf, pos + 8)
        if iface >= len(self.interfaces):
            raise PcapError(f"packet on interface {iface}, but the section describes "
                            f"{len(self.interfaces)}", offset)
        if 28 + caplen + 4 > length:
            raise PcapError(f"captured length {caplen} runs past its block of {length} bytes", offset)
        return iface, (hi << 32) | lo, caplen, orig, pos + 28

    def read_burst(self, max_packets: Optional[int] = None) -> Optional[Burst]:
        """Next burst, or None at the end of the file."""
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
        if self._file is None or self._pool_mv is None:
            raise ValueError("PcapngReader is closed")
        n = self.burst if max_packets is None else min(int(max_packets), self.burst)
        if n <= 0:
            return None
        pool = self.pool
        handles = acquire(pool, n)
        n = len(handles)
        lengths = np.empty(n, dtype=np.uint32)
        orig = np.empty(n, dtype=np.uint32)
        stamps = np.empty(n, dtype=np.int64)
        ifaces = np.empty(n, dtype=np.uint32)
        obj_size, stride, pmv = pool.obj_size, pool.stride, self._pool_mv
        count = 0
        linktype = None
        try:
            try:
                while count < n:
                    block = self._block_at_start()
                    if block is None:
                        break
                    btype, length = block
                    if btype not in _PACKET_BLOCKS:
                        self._consume_control(block)
                        continue
                    iface, ticks, caplen, wire, data = self._packet(btype, length)
                    info = self.interfaces[iface]
                    if count and info.linktype != linktype:
                        break  # the next burst starts with the new link type
                    if caplen > obj_size:
                        if self.oversize == "error":
                            raise PcapError(f"packet of {caplen} bytes does not fit an object of "
                                            f"{obj_size} bytes", self._file_off + self._pos)
                        self.truncated += 1
                    k = min(caplen, obj_size)
                    dst = int(handles[count]) * stride
                    pmv[dst:dst + k] = self._mv[data:data + k]
                    linktype = info.linktype
                    lengths[count] = k
                    orig[count] = wire
                    stamps[count] = info.to_ns(ticks) if ticks >= 0 else 0  # SPB: no timestamp
                    ifaces[count] = iface
                    count += 1
                    self._pos += length
            except PcapError as err:
                if not count:
                    raise
                self._pending = err
            if count == 0:
                return None
            self.packets += count
            self.linktype = linktype
            self.interface_ids = ifaces[:count].copy()
            return handles[:count].copy(), lengths[:count].copy(), stamps[:count].copy(), orig[:count].copy()
        finally:
            release(pool, handles[count:])



def open_capture(source: Source, pool: Pool, burst: int = 64, *,
                 oversize: str = "truncate") -> Union[PcapReader, PcapngReader]:
    """A reader for a pcap or a pcapng file, chosen by its first four bytes.

    ``source`` is a path or a binary file object that can seek (it is
    rewound to where it was after the magic is read).
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(4)
    else:
        where = source.tell()
        head = source.read(4)
        source.seek(where)
    if is_pcapng(head):
        return PcapngReader(source, pool, burst, oversize=oversize)
    return PcapReader(source, pool, burst, oversize=oversize)
