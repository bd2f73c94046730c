"""Pools and rings shared between processes (issue 13).

One shared mapping holds everything: a 4 KB header, then the control area
(the depot of magazines, per-object owner words, per-thread slots and their
caches, rings), then the object region.  The mapping is a memfd (anonymous; passed to
other processes as a file descriptor) or, when a name is given, a file in
/dev/shm created with mode 0600.  It holds offsets only: each process maps it
wherever the kernel puts it and builds its own pointers.

Why a separate ``SharedPool`` class rather than ``Pool(shared=True)``: the
shared pool's contract differs where it matters.  Every handed-out object is
recorded (owner words) so a dead process's objects can be recovered; rings
that live in the pool move ownership with the handle; the core ``Pool``'s
per-thread caches are process-private structures (pointers, membarrier
handshake) that no other process could recover.  Same verbs (get, put,
get_bulk, put_bulk, view), different guarantees: a different class says so.

Attaching validates everything before touching the mapping: magic, layout
version, kind, endianness, a header checksum, and every size and offset
recomputed from the parameters and compared with the header and with the file
size.  Anything else raises :class:`~turbomem.errors.SharedFormatError`.
"""

from __future__ import annotations

import errno
import math
import mmap
import numbers
import os
import re
import stat
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, SupportsIndex

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from typing_extensions import Self

from . import _shm, _sys, procfs, smaps
from .errors import (
    DoubleFreeError,
    HugePageError,
    InvalidHandleError,
    OutOfMemoryError,
    PoolClosedError,
    PoolEmptyError,
    SharedFormatError,
    TurbomemError,
)

__all__ = ["SharedPool", "SharedRing", "SHM_DIR", "LAYOUT_VERSION", "MAGIC"]

MAGIC = b"TurboMem"
LAYOUT_VERSION = 2  # 2: the lock-free magazine depot (1: a free array under a robust mutex)
KIND_POOL = 1
KIND_RING = 2
KIND_NAMES = {KIND_POOL: "pool", KIND_RING: "ring"}
HEADER_SIZE = 4096
ENDIAN_MARK = 0x01020304
READY = 0x52454459  # "READY": written last by the creator
SHM_DIR = "/dev/shm"
FILE_PREFIX = "turbomem."
PAGE = mmap.PAGESIZE
HUGE_2M = 2 << 20
CACHE_LINE = 64
MAX_CAPACITY = (1 << 31) - 1
MAX_OBJ_SIZE = 1 << 30
MAX_CACHE = 4096
RING_FLAG_SP, RING_FLAG_SC = 1, 2

# The header, little-endian.  The checksum (FNV-1a 64) covers every byte
# before it except the `ready` word, which the creator writes last.
_HEADER = struct.Struct(
    "<8s I I I I Q I I"      # magic version kind header_size endian total_size ready flags
    " I I Q I I I I I I"     # capacity obj_size stride cache_size max_slots nrings ring_capacity ring_flags page_size
    " I I"                   # mag_size nmags
    " Q Q Q Q Q Q Q Q Q Q"   # off_ctl off_mags off_mag_hs off_owner off_slots off_caches off_rings ring_stride
                             # off_objects objects_size
)
_CHECKSUM = struct.Struct("<Q")
_FIELDS = ("magic version kind header_size endian total_size ready flags "
           "capacity obj_size stride cache_size max_slots nrings ring_capacity ring_flags page_size "
           "mag_size nmags off_ctl off_mags off_mag_hs off_owner off_slots off_caches off_rings ring_stride "
           "off_objects "
           "objects_size").split()
_READY_AT = 8 + 4 * 4 + 8  # byte offset of `ready`
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _checksum(header_bytes: bytes) -> int:
    data = bytearray(header_bytes[:_HEADER.size])
    data[_READY_AT:_READY_AT + 4] = b"\0\0\0\0"
    return _fnv1a(bytes(data))


def _up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def pool_layout(capacity: int, obj_size: int, cache_size: int, max_slots: int, nrings: int,
                ring_capacity: int, page_size: int) -> dict[str, int]:
    """Offsets of every region of a pool mapping; a pure function of the
    parameters, so attach recomputes it and compares with the header."""
    stride = _up(obj_size, CACHE_LINE)
    off = HEADER_SIZE
    lay = {"capacity": capacity, "obj_size": obj_size, "stride": stride, "cache_size": cache_size,
           "max_slots": max_slots, "nrings": nrings, "ring_capacity": ring_capacity,
           "page_size": page_size}
    lay["mag_size"], lay["nmags"] = _shm.mag_geometry(capacity, cache_size, max_slots)
    lay["off_ctl"] = off
    off = _up(off + _shm.CTL_SIZE, CACHE_LINE)
    lay["off_mags"] = off
    off = _up(off + _shm.MAG_SIZE * lay["nmags"], CACHE_LINE)
    lay["off_mag_hs"] = off
    off = _up(off + 4 * lay["mag_size"] * lay["nmags"], CACHE_LINE)
    lay["off_owner"] = off
    off = _up(off + 4 * capacity, CACHE_LINE)
    lay["off_slots"] = off
    off = _up(off + _shm.SLOT_SIZE * max_slots, CACHE_LINE)
    lay["off_caches"] = off
    off = _up(off + 4 * cache_size * max_slots, CACHE_LINE)
    ring_bytes = _shm.pool_ring_memsize(ring_capacity) if nrings else 0
    lay["ring_stride"] = _up(_shm.RINGCTL_SIZE + ring_bytes, CACHE_LINE) if nrings else 0
    lay["off_rings"] = off
    off += lay["ring_stride"] * nrings
    # Objects start on a 4 KB boundary whatever the page size: on hugetlb the
    # whole mapping is 2 MB pages anyway, and a 2 MB boundary here would cost
    # a whole extra huge page for every small pool.  Only the total must be a
    # multiple of the page size (ftruncate and mmap of a hugetlb file refuse
    # anything else).
    lay["off_objects"] = _up(off, PAGE)
    lay["objects_size"] = stride * capacity
    lay["total_size"] = _up(lay["off_objects"] + lay["objects_size"], page_size)
    return lay


def ring_layout(capacity: int, page_size: int) -> dict[str, int]:
    """Offsets of every region of a ring mapping (header, control words, ring)."""
    lay = {"capacity": capacity, "obj_size": 0, "stride": 0, "cache_size": 0, "max_slots": 0,
           "nrings": 1, "ring_capacity": capacity, "page_size": page_size}
    lay["off_ctl"] = HEADER_SIZE
    lay["off_rings"] = HEADER_SIZE
    lay["ring_stride"] = _up(_shm.RINGCTL_SIZE + _shm.ring_memsize(capacity), CACHE_LINE)
    for k in ("mag_size", "nmags", "off_mags", "off_mag_hs", "off_owner", "off_slots", "off_caches",
              "objects_size"):
        lay[k] = 0
    lay["off_objects"] = _up(HEADER_SIZE + lay["ring_stride"], page_size)
    lay["total_size"] = lay["off_objects"]
    return lay


def _pack_header(kind: int, lay: dict, flags: int, ring_flags: int) -> bytes:
    vals = dict(lay, magic=MAGIC, version=LAYOUT_VERSION, kind=kind, header_size=HEADER_SIZE,
                endian=ENDIAN_MARK, ready=0, flags=flags, ring_flags=ring_flags)
    body = _HEADER.pack(*(vals[f] for f in _FIELDS))
    return body + _CHECKSUM.pack(_checksum(body))


def _bad(what: str, why: str) -> SharedFormatError:
    return SharedFormatError(f"{what}: {why}")


def parse_header(raw: bytes, file_size: int, kind: int, what: str) -> dict[str, int]:
    """Validate a header against the file size; return the layout.  Every
    check that fails raises SharedFormatError saying which."""
    if file_size < HEADER_SIZE or len(raw) < _HEADER.size + _CHECKSUM.size:
        raise _bad(what, f"too small to be a TurboMem {KIND_NAMES[kind]} "
                         f"({file_size} bytes; a header alone is {HEADER_SIZE}): truncated or foreign")
    vals = dict(zip(_FIELDS, _HEADER.unpack_from(raw)))
    if vals["magic"] != MAGIC:
        raise _bad(what, f"not a TurboMem shared {KIND_NAMES[kind]} (magic {vals['magic']!r})")
    if vals["endian"] != ENDIAN_MARK:
        raise _bad(what, "written by a machine of other byte order or corrupt (endian mark "
                         f"{vals['endian']:#x})")
    if vals["version"] != LAYOUT_VERSION:
        raise _bad(what, f"layout version {vals['version']}, this TurboMem reads version {LAYOUT_VERSION}")
    if vals["kind"] != kind:
        got = KIND_NAMES.get(vals["kind"], f"unknown kind {vals['kind']}")
        raise _bad(what, f"is a TurboMem {got}, not a {KIND_NAMES[kind]}")
    (stored,) = _CHECKSUM.unpack_from(raw, _HEADER.size)
    if stored != _checksum(raw):
        raise _bad(what, "header checksum mismatch (corrupt header)")
    if vals["header_size"] != HEADER_SIZE:
        raise _bad(what, f"header size {vals['header_size']} != {HEADER_SIZE}")
    if vals["ready"] != READY:
        raise _bad(what, "not ready: its creator died or is still initialising it")
    page = vals["page_size"]
    if page not in (PAGE, HUGE_2M):
        raise _bad(what, f"page size {page} is neither {PAGE} nor {HUGE_2M}")
    cap = vals["capacity"]
    if kind == KIND_POOL:
        if not 1 <= cap <= MAX_CAPACITY:
            raise _bad(what, f"capacity {cap} outside [1, {MAX_CAPACITY}]")
        if not 1 <= vals["obj_size"] <= MAX_OBJ_SIZE:
            raise _bad(what, f"object size {vals['obj_size']} outside [1, {MAX_OBJ_SIZE}]")
        if not 0 <= vals["cache_size"] <= min(MAX_CACHE, cap):
            raise _bad(what, f"cache size {vals['cache_size']} outside [0, {min(MAX_CACHE, cap)}]")
        if not 1 <= vals["max_slots"] <= _shm.MAX_SLOTS:
            raise _bad(what, f"max_slots {vals['max_slots']} outside [1, {_shm.MAX_SLOTS}]")
        if not 0 <= vals["nrings"] <= _shm.MAX_RINGS:
            raise _bad(what, f"ring count {vals['nrings']} outside [0, {_shm.MAX_RINGS}]")
        if vals["nrings"] and _shm.pool_ring_memsize(vals["ring_capacity"]) == 0:
            raise _bad(what, f"ring capacity {vals['ring_capacity']} is invalid")
        expect = pool_layout(cap, vals["obj_size"], vals["cache_size"], vals["max_slots"],
                             vals["nrings"], vals["ring_capacity"], page)
    else:
        if _shm.ring_memsize(cap) == 0 or vals["ring_capacity"] != cap:
            raise _bad(what, f"ring capacity {cap} is invalid")
        if vals["ring_flags"] & ~(RING_FLAG_SP | RING_FLAG_SC):
            raise _bad(what, f"unknown ring flags {vals['ring_flags']:#x}")
        expect = ring_layout(cap, page)
    for key, want in expect.items():
        if vals[key] != want:
            raise _bad(what, f"{key} is {vals[key]}, the layout for these parameters needs {want} "
                             "(corrupt header)")
    if file_size != vals["total_size"]:
        state = "truncated" if file_size < vals["total_size"] else "longer than its header says"
        raise _bad(what, f"file is {file_size} bytes, header says {vals['total_size']}: {state}")
    vals.pop("magic")
    return vals


# ------------------------------------------------------------ mapping ----

def _shm_path(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"shared name must match [A-Za-z0-9_.-]{{1,200}}, got {name!r}")
    return os.path.join(SHM_DIR, FILE_PREFIX + name)


def _hugetlb_pages_free() -> int:
    pool = procfs.hugetlb_pool()
    return max(pool.free - pool.reserved, 0)


class _Mapping:
    """fd + mmap + where the pages came from.  Owns both."""

    def __init__(self, fd: int, size: int, name: str | None, backing: str, reason: str) -> None:
        self.fd: int = fd
        self.size: int = size
        self.name: str | None = name
        self.backing: str = backing
        self.reason: str = reason
        self.requested: str = "attached"  # the hugepages= the creator passed; set by it
        self.numa_node: int | None = None
        self.numa_status: str = "attached: the creator placed the pages (page_nodes says where)"
        self.populate: str = "no (attached)"
        self._mm: mmap.mmap | None = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if backing != "hugetlb" and hasattr(mmap, "MADV_HUGEPAGE"):
            try:  # honoured only when shmem_enabled is "advise" (or "within_size"/"always")
                self._mm.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass

    @property
    def mm(self) -> mmap.mmap:
        """The mapping; ValueError once close() has run."""
        if self._mm is None:
            raise ValueError("mapping is closed")
        return self._mm

    def close(self) -> None:
        """Unmap and close the fd (idempotent)."""
        if self._mm is not None:
            self._mm.close()  # BufferError while a view is exported: caller decides
            self._mm = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_SHMEM_THP_MODES = ("always", "within_size", "advise", "force")


def _choose_backing(hugepages: str, name: str | None, pages_2m: int,
                    numa_node: int | None = None) -> tuple[str, str]:
    """('hugetlb' | 'shmem', why) for a mapping of pages_2m 2 MB pages.

    'auto' takes hugetlb pages for an anonymous pool when enough are free and
    4 KB (or shmem THP) pages otherwise, saying why; 'hugetlb' and 'thp'
    insist, as Pool's do, and raise HugePageError saying what is missing."""
    shmem = procfs.shmem_thp_mode()
    thp_ok = shmem in _SHMEM_THP_MODES
    thp_note = (f"shmem_enabled={shmem}: transparent huge pages possible for shared memory" if thp_ok else
                f"shmem_enabled={shmem}: shared memory gets 4 KB pages (transparent huge pages for "
                "shared memory are off)")
    if hugepages == "none":
        return "shmem", "hugepages='none' requested; " + thp_note
    if hugepages == "thp":
        if not thp_ok:
            raise HugePageError(errno.EOPNOTSUPP, f"hugepages='thp' needs transparent huge pages for shared "
                                f"memory, but {procfs.THP_DIR / 'shmem_enabled'} is {shmem!r}; use "
                                "hugepages='auto' to accept 4 KB pages, or 'hugetlb'")
        return "shmem", "hugepages='thp' requested; " + thp_note
    if name is not None:
        if hugepages == "hugetlb":
            raise HugePageError(errno.EINVAL, _NAMED_NO_HUGETLB + "; create it with name=None (memfd "
                                "MFD_HUGETLB) and hand it to other processes through multiprocessing or "
                                "pickle (the descriptor travels)")
        return "shmem", f"no hugetlb ({_NAMED_NO_HUGETLB}); {thp_note}"
    free = _hugetlb_pages_free()
    if numa_node is not None and len(procfs.node_ids()) > 1:
        # Bound to one node, the pages must be free there (the global count
        # would promise pages the binding cannot use).
        node_free = procfs.hugetlb_node_free(numa_node)
        if node_free is not None:
            free = min(free, node_free)
    if free >= pages_2m:
        return "hugetlb", f"memfd MFD_HUGETLB: {free} free 2 MB hugetlb pages, {pages_2m} needed"
    if hugepages == "hugetlb":
        pool = procfs.hugetlb_pool()
        raise HugePageError(errno.ENOMEM, f"hugepages='hugetlb': {pages_2m} free 2 MB hugetlb pages needed, "
                            f"{free} free ({pool.total} configured, {pool.reserved} reserved by other "
                            f"mappings); reserve more as root with: echo {pool.total + pages_2m - free} > "
                            "/proc/sys/vm/nr_hugepages")
    return "shmem", f"no hugetlb ({free} free 2 MB hugetlb pages, {pages_2m} needed); {thp_note}"


# Why a named pool never gets hugetlb pages (docs/shared.md, "Huge pages").
_NAMED_NO_HUGETLB = ("a named pool is a file in /dev/shm (tmpfs), which cannot hold hugetlb pages, "
                     "and a memfd has no name another process could open")


def _memfd(kind: int, huge: bool) -> int:
    flags = os.MFD_CLOEXEC | (os.MFD_HUGETLB if huge else 0)
    return os.memfd_create(f"turbomem-{KIND_NAMES[kind]}", flags)


class _Placement:
    """What memory._bind_numa reads and writes (a Region's NUMA fields)."""

    def __init__(self, addr: int, size: int) -> None:
        self.addr, self.size = addr, size
        self.numa_node: int | None = None
        self.numa_status = "not bound"


def _place(m: _Mapping, explicit_node: int | None) -> None:
    """Bind the fresh mapping to a node (mbind MPOL_BIND before the first
    touch, as Pool does) and fault every page in now.  Populating is what
    makes the binding hold for a shared mapping: a tmpfs file keeps the policy
    for every process (shared policy), but a hugetlb mapping's policy is this
    process's alone, so the pages must be allocated here, not at some other
    process's first touch.  It also turns a full /dev/shm or a hugetlb
    shortage into an exception now instead of a SIGBUS later."""
    from . import memory

    addr = _sys.buffer_address(m.mm)
    pl = _Placement(addr, m.size)
    memory._bind_numa(pl, explicit_node)  # type: ignore[arg-type]  # duck-types Region's NUMA fields
    m.numa_node, m.numa_status = pl.numa_node, pl.numa_status
    try:
        _sys.madvise(addr, m.size, _sys.MADV_POPULATE_WRITE, advice_name="MADV_POPULATE_WRITE")
        m.populate = "MADV_POPULATE_WRITE"
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # kernel older than 5.14: touch one byte per page
            page = HUGE_2M if m.backing == "hugetlb" else PAGE
            m.mm[::page] = bytes(len(range(0, m.size, page)))
            m.populate = "touch"
            return
        if exc.errno in (errno.ENOMEM, errno.EFAULT, errno.ENOSPC):
            raise OutOfMemoryError(f"populating the shared mapping of {m.size} bytes ({m.backing}"
                                   f"{', bound to node %d' % m.numa_node if m.numa_node is not None else ''}) "
                                   f"failed: {exc.strerror} (/dev/shm full, or no pages on the node)") from exc
        raise


def _create_mapping(kind: int, lay_for_page, name: str | None, hugepages: str, mode: int,
                    flags: int, ring_flags: int, numa_node: int | None = None,
                    place: bool = False) -> tuple[_Mapping, dict]:
    if hugepages not in ("auto", "thp", "hugetlb", "none"):
        raise ValueError(f"hugepages must be 'auto', 'thp', 'hugetlb' or 'none', got {hugepages!r}")
    path: str | None = None
    if name is not None:
        path = _shm_path(name)
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits in [0, 0o777], got {mode!r}")
    lay_small, lay_huge = lay_for_page(PAGE), lay_for_page(HUGE_2M)
    # The page count comes from the hugetlb layout itself (its total is what
    # ftruncate and mmap will ask the kernel for).
    backing, reason = _choose_backing(hugepages, name, lay_huge["total_size"] // HUGE_2M, numa_node)
    if backing == "hugetlb":
        fd = -1
        try:
            fd = _memfd(kind, True)
            # ftruncate sets the size only (a multiple of 2 MB, or EINVAL); the
            # pages are reserved at mmap time: ENOMEM there, never SIGBUS later.
            os.ftruncate(fd, lay_huge["total_size"])
            m = _Mapping(fd, lay_huge["total_size"], None, backing, reason)
            m.requested = hugepages
            if place:
                try:
                    _place(m, numa_node)
                except BaseException:
                    m.close()
                    fd = -1
                    raise
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            why = (f"memfd MFD_HUGETLB of {lay_huge['total_size']} bytes refused ({exc.strerror}: the free "
                   "2 MB pages went to another mapping, or the kernel has no hugetlb memfd)")
            if hugepages == "hugetlb":
                raise HugePageError(exc.errno or errno.ENOMEM, "hugepages='hugetlb': " + why) from exc
            backing, reason = "shmem", why + "; 4 KB pages"
        else:
            m.mm[:HEADER_SIZE] = _pack_header(kind, lay_huge, flags, ring_flags).ljust(HEADER_SIZE, b"\0")
            return m, lay_huge
    lay = lay_small
    if path is None:
        fd = _memfd(kind, False)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
    try:
        os.ftruncate(fd, lay["total_size"])
        m = _Mapping(fd, lay["total_size"], name, backing, reason)
        m.requested = hugepages
        fd = -1  # m owns it now
        if place:
            _place(m, numa_node)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        else:
            m.close()
        if path:
            os.unlink(path)
        raise
    m.mm[:HEADER_SIZE] = _pack_header(kind, lay, flags, ring_flags).ljust(HEADER_SIZE, b"\0")
    return m, lay


def _mark_ready(m: _Mapping) -> None:
    m.mm[_READY_AT:_READY_AT + 4] = struct.pack("<I", READY)


def _open_checked(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(f"no shared TurboMem object at {path}") from None
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise _bad(path, "is a symbolic link; refusing to follow it") from None
        if exc.errno == 21:  # EISDIR
            raise _bad(path, "is a directory") from None
        raise
    return fd


def _attach_mapping(fd: int, kind: int, what: str, owned_name: str | None) -> tuple[_Mapping, dict]:
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(what, "is not a regular file")
        if st.st_uid != os.geteuid():
            raise _bad(what, f"belongs to uid {st.st_uid}, not to this user ({os.geteuid()})")
        raw = os.pread(fd, _HEADER.size + _CHECKSUM.size, 0) if st.st_size else b""
        vals = parse_header(raw, st.st_size, kind, what)
        huge = vals["page_size"] == HUGE_2M
        m = _Mapping(fd, vals["total_size"], owned_name, "hugetlb" if huge else "shmem",
                     "attached: the creator chose the backing" +
                     (" (its header says 2 MB hugetlb pages)" if huge else " (its header says 4 KB pages)"))
        # Map the creator's pages into this process now (they exist: the
        # creator populated them), so page_nodes can say where they are and
        # the first use here takes no page faults.
        try:
            _sys.madvise(_sys.buffer_address(m.mm), m.size, _sys.MADV_POPULATE_WRITE,
                         advice_name="MADV_POPULATE_WRITE")
            m.populate = "MADV_POPULATE_WRITE (attached)"
        except OSError as exc:
            m.populate = f"no (attached; MADV_POPULATE_WRITE: {_sys.errno_name(exc.errno or 0)})"
    except BaseException:
        os.close(fd)
        raise
    return m, vals


def hugepage_report(m: _Mapping, address: int) -> dict[str, Any]:
    """What the mapping got, measured in /proc/self/smaps, and why.

    ``page_size`` is the kernel's page size for the mapping (smaps
    KernelPageSize); ``hugetlb`` says smaps shows a hugetlb VMA (every byte of
    it is on 2 MB pages, reserved at mmap time), ``hugetlb_faulted`` how much
    of it is touched (Shared_Hugetlb); ``huge_bytes`` counts bytes on huge
    pages of either kind (hugetlb, or shmem THP: ShmemPmdMapped)."""
    maps = procfs.mappings_for(address, address + m.size)
    hugetlb = bool(maps) and all(mp.is_hugetlb for mp in maps)
    faulted = sum(mp.fields.get("Shared_Hugetlb", 0) + mp.fields.get("Private_Hugetlb", 0) for mp in maps)
    if hugetlb:
        huge = sum(min(mp.end, address + m.size) - max(mp.start, address) for mp in maps)
    else:
        huge = sum(mp.fields.get("ShmemPmdMapped", 0) + mp.fields.get("FilePmdMapped", 0) for mp in maps)
    kernel_page = max((mp.fields.get("KernelPageSize", 0) for mp in maps), default=0)
    page = kernel_page or (HUGE_2M if m.backing == "hugetlb" else PAGE)
    return {"backing": ("memfd" if m.name is None else "/dev/shm file") +
                       (" MFD_HUGETLB" if m.backing == "hugetlb" else ""),
            "requested": m.requested,
            "page_size": page,
            "hugetlb": hugetlb,
            "hugetlb_pages": m.size // HUGE_2M if hugetlb else 0,
            "hugetlb_faulted": faulted,
            "huge_bytes": huge,
            "smaps_found": bool(maps),
            "size": m.size,
            "shmem_enabled": procfs.shmem_thp_mode(),
            "reason": m.reason,
            "numa_node": m.numa_node,
            "numa_status": m.numa_status,
            "page_nodes": smaps.page_nodes(address, m.size, page),
            "populate": m.populate}


def _validate_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a real number of seconds or None, got {type(timeout).__name__}")
    t = float(timeout)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"timeout must be finite and >= 0 (or None), got {timeout!r}")
    return t


def _handles(handles, what: str = "handles") -> np.ndarray:
    """A C-contiguous uint32 copy-free view when possible; ints checked."""
    if isinstance(handles, np.ndarray):
        if handles.ndim != 1:
            raise ValueError(f"{what} must be one-dimensional")
        if handles.dtype == np.uint32:
            return np.ascontiguousarray(handles)
        if handles.dtype.kind not in "iu":
            raise TypeError(f"{what} must hold integers, got dtype {handles.dtype}")
        if handles.size and (handles.min() < 0 or handles.max() > 0xFFFFFFFF):
            raise InvalidHandleError(f"{what} hold a value outside [0, 2**32)")
        return handles.astype(np.uint32)
    seq = list(handles)
    for v in seq:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{what} must be integers, got {type(v).__name__}")
        if not 0 <= int(v) <= 0xFFFFFFFF:
            raise InvalidHandleError(f"handle {v} is outside [0, 2**32)")
    return np.array(seq, dtype=np.uint32)


def _one_handle(h) -> int:
    if type(h) is int and 0 <= h <= 0xFFFFFFFF:  # the common case, without the ABC check
        return h
    if isinstance(h, bool) or not isinstance(h, numbers.Integral):
        raise TypeError(f"a handle is an int, got {type(h).__name__}")
    h = int(h)
    if not 0 <= h <= 0xFFFFFFFF:
        raise InvalidHandleError(f"handle {h} is outside [0, 2**32)")
    return h


def _rebuild(cls: Any, name: str | None, dupfd: Any) -> Any:
    """Unpickle a SharedPool or SharedRing: attach by name, or to the descriptor."""
    if name is not None:
        return cls.attach(name)
    return _attach_fd(cls, dupfd.detach(), None)


def _reduce_fd(obj):
    from multiprocessing.reduction import DupFd
    return DupFd(obj._m.fd)


class _SharedMapping:
    """What SharedPool and SharedRing share as owners of one mapping: its
    name, close state, unlink, context management, pickling (the name or a
    descriptor, never the memory) and the huge-page report."""

    _m: _Mapping
    _v: Any
    _closed: bool

    def _check(self) -> None:
        """Raise unless this object is open (each class says what else it checks)."""
        raise NotImplementedError

    @property
    def name(self) -> str | None:
        """The /dev/shm name, or None for a memfd."""
        return self._m.name

    @property
    def closed(self) -> bool:
        """True once close() has run in this process."""
        return self._closed

    def close(self) -> None:
        """Detach this process from the mapping (each class says what that gives back)."""
        raise NotImplementedError

    def unlink(self) -> None:
        """Remove the name from /dev/shm (attached processes keep working)."""
        if self._m.name is not None:
            try:
                os.unlink(_shm_path(self._m.name))
            except FileNotFoundError:
                pass

    def hugepage_report(self) -> dict[str, Any]:
        """Page size and huge-page coverage of the mapping, and why."""
        self._check()
        return hugepage_report(self._m, self._v.address())

    def __enter__(self) -> Self:
        """The object itself: ``with`` closes it at the end."""
        return self

    def __exit__(self, *exc: object) -> None:
        """close()."""
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[Any, str | None, Any]]:
        """Pickle as the name, or as a descriptor multiprocessing duplicates: never the memory."""
        self._check()
        return (_rebuild, (type(self), self._m.name, None if self._m.name else _reduce_fd(self)))


# Bumped in every fork child: thread-slot leases from the parent are void there.
_fork_generation = 0


def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Lease:
    """A thread's slot in one pool.  Dropped with the thread's local storage
    at thread exit: the cache goes back to the shared level and the slot to
    this process's spare list."""

    __slots__ = ("pool_ref", "slot", "gen", "__weakref__")

    def __init__(self, pool, slot, gen):
        self.pool_ref = weakref.ref(pool)
        self.slot = slot
        self.gen = gen

    def __del__(self):
        pool = self.pool_ref()
        if pool is not None and self.gen == _fork_generation:
            pool._lease_returned(self.slot)


def _me() -> tuple[int, int]:
    st = procfs.process_state("self")
    return os.getpid(), (st.start_time if st else 0)


def _liveness(pid: int, start: int) -> tuple[bool, str]:
    """Whether pid still names the process that claimed a slot, and how that
    was decided.

    With a pidfd (Linux 5.3+): open one for pid, then read the start time;
    the pidfd pins the process it was opened on, and a matching start time
    means that process is the slot's owner (pids are unique among processes
    that exist, zombies included), so polling the pidfd (readable once the
    process has exited, zombie or reaped) answers for the owner itself, with
    no window in which the pid could be recycled between the checks.  A
    different start time means the pid was reused: the owner is dead.
    Without pidfd_open (ENOSYS, or seccomp's EPERM): kill(pid, 0), the state
    letter from /proc/PID/stat (Z, X: dead) and the same start-time guard.
    start == 0 is a slot still being claimed: judged by the pid alone."""
    if not 0 < pid <= 0x7FFFFFFF:  # 0: none; beyond: not a pid (a scribbled word)
        return False, "no pid"
    try:
        fd = _sys.pidfd_open(pid)
    except ProcessLookupError:
        return False, "pidfd: no such process"
    except OSError:
        return _liveness_by_kill(pid, start)
    try:
        st = procfs.process_state(pid)
        if st is None:
            return False, "pidfd: no such process"
        if start and st.start_time != start:
            return False, f"pidfd: pid reused (start time {st.start_time}, the slot's owner started at {start})"
        if _sys.pidfd_exited(fd):
            return False, "pidfd: exited"
        return True, "pidfd: running"
    finally:
        os.close(fd)


def _liveness_by_kill(pid: int, start: int) -> tuple[bool, str]:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, "kill(0): no such process"
    except PermissionError:
        pass  # exists, belongs to someone else
    st = procfs.process_state(pid)
    if st is None or st.state in ("Z", "X", "x"):
        return False, "kill(0): exited"
    if start and st.start_time != start:
        return False, f"kill(0): pid reused (start time {st.start_time}, the slot's owner started at {start})"
    return True, "kill(0): running"


def _is_alive(pid: int, start: int) -> bool:
    """pid still names the process that claimed the slot (see _liveness)."""
    return _liveness(pid, start)[0]



# ---- creating and attaching (one way for pools and rings) ----------------------

def _finish_create(m: _Mapping, name: str | None, setup: Callable[[], None]) -> None:
    """Build the creator's view of the fresh mapping m (setup), then mark it
    ready for attachers; on failure close it and remove the name."""
    try:
        setup()
    except BaseException:
        m.close()
        if name:
            os.unlink(_shm_path(name))
        raise
    _mark_ready(m)


def _ring_geometry(capacity: int, flags: int) -> tuple[int, int, int, int]:
    """(size, mask, capacity, flags) that ring.h (and shm.h's pool rings) store
    for a ring of `capacity`."""
    size = 1 if capacity == 1 else 1 << (capacity - 1).bit_length()
    return size, size - 1, capacity, flags


def _attach_named(cls: Any, name: str) -> Any:
    path = _shm_path(name)
    return _attach_fd(cls, _open_checked(path), name, path)


def _attach_fd(cls: Any, fd: int, name: str | None, what: str | None = None) -> Any:
    """A cls (SharedPool or SharedRing) over the mapping of fd, validated:
    the header by _attach_mapping, the structures by cls._attach_setup."""
    what = what or f"descriptor {fd}"
    m, vals = _attach_mapping(fd, cls._KIND, what, name)
    self = cls.__new__(cls)
    try:
        self._attach_setup(m, vals, what)
    except BaseException:
        self._abandon()
        m.close()
        raise
    return self


class SharedPool(_SharedMapping, _shm.PoolFast):
    """A fixed-size object pool in one shared mapping, usable from several
    processes at once and recovered when one of them dies.

    ``SharedPool(obj_size, capacity, *, name=None, cache_size=None (32), rings=0,
    ring_capacity=1024, max_slots=64, hugepages="auto", mode=0o600, numa_node=None)``

    ``numa_node``: as Pool's (None: the calling thread's node); the creator
    binds the mapping there before the first touch and faults every page in,
    so the pages stay there whichever process touches them first.
    ``hugepage_report()`` says where they are (``page_nodes``).

    name=None: an anonymous memfd (pass the pool to children through
    multiprocessing: it sends the descriptor).  A name creates
    /dev/shm/turbomem.NAME (O_EXCL, mode 0600 by default); others use
    ``SharedPool.attach(name)``.  ``rings`` multi-producer/multi-consumer
    rings of ``ring_capacity`` handles live in the same mapping and move
    ownership with the handle (``pool.ring(i)``).  The first two arguments
    are in ``Pool``'s order: object size, then number of objects.
    """

    def __init__(self, obj_size: int, capacity: int, *, name: str | None = None, cache_size: int | None = None,
                 rings: int = 0, ring_capacity: int = 1024, max_slots: int = 64, hugepages: str = "auto",
                 mode: int = 0o600, numa_node: int | None = None) -> None:
        from .memory import check_numa_node

        node = check_numa_node(numa_node)
        if cache_size is None:
            cache_size = min(32, capacity) if isinstance(capacity, int) and capacity > 0 else 0
        for key, v, lo, hi in (("capacity", capacity, 1, MAX_CAPACITY),
                               ("obj_size", obj_size, 1, MAX_OBJ_SIZE),
                               ("cache_size", cache_size, 0, MAX_CACHE),
                               ("rings", rings, 0, _shm.MAX_RINGS),
                               ("max_slots", max_slots, 1, _shm.MAX_SLOTS)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{key} must be an int, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise ValueError(f"{key} must be in [{lo}, {hi}], got {v}")
        if cache_size > capacity:
            raise ValueError(f"cache_size {cache_size} is larger than capacity {capacity}")
        if rings and (isinstance(ring_capacity, bool) or not isinstance(ring_capacity, numbers.Integral)
                      or _shm.pool_ring_memsize(ring_capacity) == 0):
            raise ValueError(f"ring_capacity must be an int in [1, {_shm.POOL_RING_MAX}], got {ring_capacity!r}")
        ring_capacity = int(ring_capacity) if rings else 0
        m, lay = _create_mapping(
            KIND_POOL,
            lambda page: pool_layout(int(capacity), int(obj_size), int(cache_size), int(max_slots),
                                     int(rings), ring_capacity, page),
            name, hugepages, mode, 0, 0, node, place=True)
        _finish_create(m, name, lambda: self._setup(m, lay, init=True))

    _KIND = KIND_POOL

    @classmethod
    def attach(cls, name: str) -> SharedPool:
        """Attach to the pool another process created with ``name``."""
        return _attach_named(cls, name)

    def _attach_setup(self, m: _Mapping, vals: dict, what: str) -> None:
        self._setup(m, vals, init=False)
        cap = vals["ring_capacity"]
        for r in range(vals["nrings"]):
            if self._v.ring_fields(r) != _ring_geometry(cap, _shm.POOL_RING_FLAGS):
                raise _bad(what, f"ring {r}'s geometry disagrees with the header (corrupt)")

    def _abandon(self) -> None:
        self._closed = True
        self._unbind_view()
        if getattr(self, "_v", None) is not None:
            self._v.release()

    def _setup(self, m: _Mapping, lay: dict, init: bool) -> None:
        self._m = m
        self._lay = lay
        self._closed = False
        self._v = _shm.PoolView(m.mm, lay, init, lay["ring_capacity"])
        self._bind_view(self._v)
        self.capacity: int = lay["capacity"]
        self.obj_size: int = lay["obj_size"]
        self.stride: int = lay["stride"]
        self.cache_size: int = lay["cache_size"]
        self.nrings: int = lay["nrings"]
        self._rings = [PoolRing(self, i) for i in range(self.nrings)]  # one each: they keep stall times
        self._local = threading.local()
        self._lock = threading.Lock()
        self._spare: list[int] = []
        self._mine: list[int] = []
        self._gen = _fork_generation
        self._stats = {"gets": 0, "puts": 0, "empty": 0, "recovered_by_me": 0}
        self._objects: npt.NDArray[np.uint8] | None = None

    # ---- slots (one per thread of this process) ------------------------------

    def _slot(self) -> int:
        try:
            lease = self._local.lease
            if lease.gen == _fork_generation:
                return lease.slot
        except AttributeError:
            pass
        return self._claim()

    def _claim(self) -> int:
        self._check()
        with self._lock:
            slot = self._spare.pop() if self._spare else -1
        if slot < 0:
            pid, start = _me()
            slot = self._v.claim_slot(pid, threading.get_native_id(), start)
            if slot < 0:
                self.recover()
                slot = self._v.claim_slot(pid, threading.get_native_id(), start)
            if slot < 0:
                raise TurbomemError(f"all {self._lay['max_slots']} thread slots of the shared pool "
                                    "are taken by live threads (raise max_slots)")
            with self._lock:
                self._mine.append(slot)
        self._local.lease = _Lease(self, slot, _fork_generation)
        return slot

    def _lease_returned(self, slot: int) -> None:
        if self._closed:
            return
        try:
            self._v.flush(slot)
        except ValueError:
            return
        with self._lock:
            self._spare.append(slot)

    def _check(self):
        if self._closed:
            raise PoolClosedError("shared pool is closed")
        if self._gen != _fork_generation:  # a fork child: nothing of the parent's is ours
            self._gen = _fork_generation
            self._lock = threading.Lock()
            self._spare, self._mine = [], []
            self._stats = dict.fromkeys(self._stats, 0)
            self._forked()

    # ---- objects ---------------------------------------------------------------

    # get() and put() are _shm.PoolFast's (compiled); these are their slow paths.

    def _get_slow(self) -> int:
        self._check()
        r = self._v.get(self._slot())
        if r < 0:
            r = self._short(lambda: self._v.get(self._slot()), 1)
        self._stats["gets"] += 1
        return r

    def get_bulk(self, n: SupportsIndex) -> npt.NDArray[np.uint32]:
        """Exactly n handles (all or nothing) as a uint32 array."""
        self._check()
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= int(n) <= self.capacity:
            raise ValueError(f"n must be an int in [0, {self.capacity}], got {n!r}")
        out = np.empty(int(n), dtype=np.uint32)
        if n:
            rc = self._v.get_bulk(self._slot(), out)
            if rc < 0:
                self._short(lambda: self._v.get_bulk(self._slot(), out), n)
        self._stats["gets"] += int(n)
        return out

    def _short(self, retry, n):
        """The pool looked empty: give back what dead processes held, retry once."""
        rc = -1
        if self.recover()["objects"]:
            rc = retry()
        if rc < 0:
            self._stats["empty"] += 1
            raise PoolEmptyError(f"no {n} free object(s) in the shared pool (capacity {self.capacity}, "
                                 f"{self.available} free)")
        return rc

    def _put_slow(self, h: SupportsIndex) -> None:
        self._check()
        h = _one_handle(h)
        rc = self._v.put(self._slot(), h)
        if rc:
            self._raise_put(rc, h)
        self._stats["puts"] += 1

    def put_bulk(self, handles: npt.NDArray[np.integer[Any]] | Iterable[SupportsIndex]) -> None:
        """Return every handle, all or nothing."""
        self._check()
        arr = _handles(handles)
        if arr.size:
            rc, bad = self._v.put_bulk(self._slot(), arr)
            if rc:
                self._raise_put(rc, int(arr[bad]), bad)
        self._stats["puts"] += int(arr.size)

    def _raise_put(self, rc, h, index=None):
        at = f" (index {index})" if index is not None else ""
        if rc == -2:
            raise InvalidHandleError(f"handle {h}{at} is outside [0, {self.capacity})")
        if rc == -4:
            raise DoubleFreeError(f"handle {h}{at} is already free")
        if rc == -3:
            raise InvalidHandleError(f"handle {h}{at} is not handed out (it is {self.owner(h)[0]})")
        raise TurbomemError(f"shared pool error {rc}")

    def owner(self, h: SupportsIndex) -> tuple[str, int]:
        """(kind, slot or ring) of object h: ('free', -1), ('held', slot),
        ('cached', slot), ('ring', ring index)."""
        self._check()
        w = self._v.owner_word(_one_handle(h))
        kind = _shm.OWNER_KINDS.get(w >> 28, "corrupt")
        if kind == "free":  # in a depot magazine (w is its index)
            return ("free", -1)
        return (kind, (w >> 12) & 0xFFFF if kind == "ring" else w & 0xFFF)

    def view(self, h: SupportsIndex) -> memoryview:
        """The object's bytes (writable, obj_size long).  Valid until close()."""
        self._check()
        h = _one_handle(h)
        if h >= self.capacity:
            raise InvalidHandleError(f"handle {h} is outside [0, {self.capacity})")
        return self.objects()[h, :self.obj_size].data

    def objects(self) -> npt.NDArray[np.uint8]:
        """The object region as a (capacity, stride) uint8 array (no copy)."""
        self._check()
        if self._objects is None:
            mv = self._v.objects(self.capacity * self.stride)
            self._objects = np.frombuffer(mv, dtype=np.uint8).reshape(self.capacity, self.stride)
        return self._objects

    # ---- rings -------------------------------------------------------------------

    def ring(self, index: SupportsIndex) -> PoolRing:
        """Ring ``index`` (0 <= index < nrings) of this pool."""
        self._check()
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= int(index) < self.nrings:
            raise IndexError(f"ring index must be in [0, {self.nrings}), got {index!r}")
        return self._rings[int(index)]

    # ---- recovery and accounting -------------------------------------------------

    def recover(self) -> dict[str, Any]:
        """Give back every object (and ring side) held by dead processes, and
        finish recoveries whose recoverer died half-way."""
        self._check()
        slots, objects = [], 0
        me, me_start = _me()
        marks = self._v.recovering()
        for s, pid, _tid, start, _len in self._v.slots():
            rec, rec_start = marks.get(s, (0, 0))
            if pid == me or _is_alive(pid, start):
                continue
            if rec and (rec == me or _is_alive(rec, rec_start)):
                continue  # a live recoverer is at work on it
            freed = self._v.recover(s, pid, start, rec, me, me_start)
            if freed >= 0:
                slots.append({"slot": s, "pid": pid, "objects": freed})
                objects += freed
        self._stats["recovered_by_me"] += objects
        return {"slots": slots, "objects": objects}

    def census(self) -> dict[str, Any]:
        """Every object by where it is (an O(capacity) scan)."""
        self._check()
        return self._v.census()

    def audit(self) -> dict[str, Any]:
        """Check that every object is in exactly one place (a depot magazine,
        a cache, a ring, or a holder), that the depot's stacks and magazines
        agree with the owner words, and that each magazine is on one stack.
        Exact only while no other process (or thread) uses the pool."""
        self._check()
        c = self._v.census()
        problems, listed = self._v.depot_audit()
        if listed != c["free"]:
            problems.append(f"depot magazines list {listed} handles, owner words say {c['free']} are in them")
        seen: dict[int, int] = {}
        for r in range(self.nrings):
            for h in self._v.ring_handles(r):
                seen[h] = seen.get(h, 0) + 1
                if (self._v.owner_word(h) >> 28) != 3:
                    problems.append(f"handle {h} in ring {r} is not marked as in a ring")
        if any(v > 1 for v in seen.values()):
            problems.append("a handle is twice in the rings")
        total = c["free"] + sum(c["held"].values()) + sum(c["cached"].values()) + sum(c["ring"].values())
        if total != self.capacity:
            problems.append(f"owner words account for {total} of {self.capacity} objects")
        return {"ok": not problems, "problems": problems, "census": c, "in_rings": len(seen)}

    @property
    def available(self) -> int:
        c = self.census()
        return c["free"] + sum(c["cached"].values())

    @property
    def in_use(self) -> int:
        return self.capacity - self.available

    def stats(self) -> dict[str, Any]:
        """This process's counters (each process keeps its own) and the
        pool-wide census."""
        self._check()
        c = self.census()
        fast_gets, fast_puts = self._fast_counts()
        return {**self._stats, "gets": self._stats["gets"] + fast_gets, "puts": self._stats["puts"] + fast_puts,
                "capacity": self.capacity, "available": c["free"] + sum(c["cached"].values()),
                "in_use": self.capacity - c["free"] - sum(c["cached"].values()),
                "processes": len({pid for _s, pid, *_ in self._v.slots()}),
                "recovered_total": c["recovered"], "magazines": c["magazines"]}

    # ---- lifecycle -----------------------------------------------------------------

    @property
    def fd(self) -> int:
        self._check()
        return self._m.fd

    def close(self) -> None:
        """Detach this process: its caches go back, objects its threads still
        hold are given back (this process can no longer reach them), and the
        mapping is unmapped here.  Other processes are not affected."""
        if self._closed:
            return
        if self._gen == _fork_generation:
            pid, start = _me()
            for s, spid, _tid, _sstart, _len in self._v.slots():
                if spid == pid and s in self._mine:
                    self._v.release_slot(s, pid, start)
        self._closed = True
        self._unbind_view()
        self._objects = None
        self._local = threading.local()
        self._v.release()
        try:
            self._m.close()
        except BufferError:
            # A view from view()/objects() is still alive: the mapping stays
            # until the last one goes (mmap frees it then); never unmap under it.
            os.close(self._m.fd)
            self._m.fd = -1

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"capacity={self.capacity}, obj_size={self.obj_size}"
        return f"<SharedPool {self._m.name or 'memfd'} {state}>"


class PoolRing:
    """Ring ``index`` of a SharedPool: any number of producers and consumers,
    in any processes.  Ownership moves with the handle: the consumer holds
    what it dequeues.  A producer killed mid-enqueue leaves tombstones that
    recovery writes and consumers skip; a consumer killed mid-dequeue leaves
    what it took to recovery.  Producers stop at the capacity; several at
    once may overshoot it briefly, never past the next power of two (the
    ring's size)."""

    def __init__(self, pool: SharedPool, index: int) -> None:
        self._pool = pool
        self.index: int = index
        self._busy_since: float | None = None

    def _code(self, rc, arr=None, bad=0):
        if rc == -9:
            raise TurbomemError(f"ring {self.index}'s control words are corrupt")
        if rc == -7:
            raise MemoryError("no memory for a bulk enqueue's positions")
        self._pool._raise_put(rc, int(arr[bad]) if arr is not None else -1, bad)

    def enqueue_bulk(self, handles: npt.NDArray[np.integer[Any]] | Iterable[SupportsIndex],
                     timeout: float | None = 0) -> bool:
        """All of handles, or none (False when timeout passed without room;
        0: do not wait, None: wait forever)."""
        self._pool._check()
        t = _validate_timeout(timeout)
        arr = _handles(handles)
        while True:
            rc, bad = self._pool._v.ring_enqueue(self.index, self._pool._slot(), arr, t)
            if rc >= 0:
                return rc == arr.size
            self._code(rc, arr, bad)

    def enqueue(self, h: SupportsIndex, timeout: float | None = 0) -> bool:
        """Enqueue one handle (False when timeout passed without room)."""
        return self.enqueue_bulk(np.array([_one_handle(h)], dtype=np.uint32), timeout)

    def dequeue_burst(self, n: SupportsIndex, timeout: float | None = 0) -> npt.NDArray[np.uint32]:
        """Up to n handles (empty when timeout passed first)."""
        self._pool._check()
        t = _validate_timeout(timeout)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        out = np.empty(int(n), dtype=np.uint32)
        deadline = None if t is None else time.monotonic() + t
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = self._pool._v.ring_dequeue(self.index, self._pool._slot(), out, left)
            if rc >= 0:
                self._busy_since = None
                return out[:rc]
            if rc == -8:
                # The next cell is claimed by a producer that has not
                # published it: a live one (preempted) publishes soon; a dead
                # one's claim becomes a tombstone when it is recovered, which
                # is worth its scan of the slots only once the stall lasts.
                now = time.monotonic()
                if self._busy_since is None:
                    self._busy_since = now
                elif now - self._busy_since > 0.005:
                    self._busy_since = None
                    if self._pool.recover()["slots"]:
                        continue
                if left == 0:
                    return out[:0]
                time.sleep(0.0001)
                continue
            self._busy_since = None
            self._code(rc)

    def dequeue(self, timeout: float | None = 0) -> int | None:
        """One handle, or None when timeout passed first."""
        got = self.dequeue_burst(1, timeout)
        return int(got[0]) if got.size else None

    def __len__(self) -> int:
        self._pool._check()
        return self._pool._v.ring_state(self.index)["count"]

    def handles(self) -> list[int]:
        """The handles waiting in the ring (a snapshot)."""
        self._pool._check()
        return self._pool._v.ring_handles(self.index)


class SharedRing(_SharedMapping):
    """A ring of uint32 values (include/turbomem/ring.h) in its own shared
    mapping, with futex waits: an idle waiter sleeps in the kernel and the
    other side wakes it only when someone sleeps.

    ``SharedRing(capacity, *, name=None, single_producer=False,
    single_consumer=False, mode=0o600)``; ``SharedRing.attach(name)``.
    It carries plain values, not pool ownership; for handles of a SharedPool
    use the pool's rings (they survive a killed process).  A process killed
    between reserving and publishing in multi-producer (or -consumer) mode
    blocks that side, as in DPDK's ring.
    """

    def __init__(self, capacity: int, *, name: str | None = None, single_producer: bool = False,
                 single_consumer: bool = False, mode: int = 0o600) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or \
                _shm.ring_memsize(capacity) == 0:
            raise ValueError(f"capacity must be an int in [1, 2**31], got {capacity!r}")
        flags = (RING_FLAG_SP if single_producer else 0) | (RING_FLAG_SC if single_consumer else 0)
        m, lay = _create_mapping(KIND_RING, lambda page: ring_layout(int(capacity), page), name, "none",
                                 mode, 0, flags)
        _finish_create(m, name, lambda: self._setup(m, lay, flags, init=True))

    _KIND = KIND_RING

    @classmethod
    def attach(cls, name: str) -> SharedRing:
        """Open the named ring /dev/shm/turbomem.NAME created by another process."""
        return _attach_named(cls, name)

    def _attach_setup(self, m: _Mapping, vals: dict, what: str) -> None:
        self._setup(m, vals, vals["ring_flags"], init=False)
        if self._v.fields() != _ring_geometry(vals["capacity"], vals["ring_flags"]):
            raise _bad(what, "ring geometry disagrees with the header (corrupt)")

    def _abandon(self) -> None:
        if getattr(self, "_v", None) is not None:
            self._v.release()

    capacity: int

    def _setup(self, m: _Mapping, lay: dict[str, int], flags: int, init: bool) -> None:
        self._m = m
        self._closed = False
        self.capacity = lay["capacity"]
        self._v = _shm.RingView(m.mm, lay["off_rings"], lay["off_rings"] + _shm.RINGCTL_SIZE, init,
                                lay["capacity"], flags)

    def _check(self):
        if self._closed:
            raise PoolClosedError("shared ring is closed")

    def put_bulk(self, values: npt.NDArray[np.integer[Any]] | Iterable[SupportsIndex],
                 timeout: float | None = 0) -> bool:
        """All values or none; waits up to timeout seconds for room (0: no
        wait, None: forever).  Interruptible by signals."""
        self._check()
        t = _validate_timeout(timeout)
        arr = _handles(values, "values")
        return self._v.enqueue(arr, False, t) == arr.size

    def put(self, value: SupportsIndex, timeout: float | None = 0) -> bool:
        """Put one value (False when timeout passed without room)."""
        self._check()
        return self.put_bulk(np.array([_one_handle(value)], dtype=np.uint32), timeout)

    def get_burst(self, n: SupportsIndex, timeout: float | None = 0) -> npt.NDArray[np.uint32]:
        """Up to n values, waiting up to timeout for at least one."""
        self._check()
        t = _validate_timeout(timeout)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        out = np.empty(int(n), dtype=np.uint32)
        return out[:self._v.dequeue(out, t)]

    def get(self, timeout: float | None = 0) -> int | None:
        """One value, or None when timeout passed first."""
        got = self.get_burst(1, timeout)
        return int(got[0]) if got.size else None

    def __len__(self) -> int:
        self._check()
        return self._v.count()

    def waiters(self) -> tuple[int, int]:
        """(consumers, producers) asleep on the ring's futex words now."""
        self._check()
        return self._v.waiters()

    def close(self) -> None:
        """Unmap the ring in this process (others keep it)."""
        if self._closed:
            return
        self._closed = True
        self._v.release()
        self._m.close()

    def __repr__(self) -> str:
        return f"<SharedRing {self._m.name or 'memfd'} capacity={self.capacity}{' closed' if self._closed else ''}>"
