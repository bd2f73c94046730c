"""The one place where TurboMem makes raw system calls through ctypes.

Every wrapper has explicit argument and result types, and every failure goes
through :func:`_check`, which raises ``OSError(errno, "<what was attempted>:
<strerror>")``.  Python turns that into the matching subclass
(``PermissionError`` for EPERM, ...), so callers can match on the class or on
``exc.errno``.  Translating ENOMEM into :class:`~turbomem.errors.OutOfMemoryError`
is the business of :mod:`turbomem.memory`, not of this module.

glibc has no wrappers for ``mbind``, ``get_mempolicy`` or ``move_pages``
(they live in libnuma), so those go through ``syscall(2)`` with the number of
the running architecture.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
from collections.abc import Sequence

__all__ = [
    "libc",
    "PAGE_SIZE",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "MAP_PRIVATE",
    "MAP_ANONYMOUS",
    "MAP_NORESERVE",
    "MAP_POPULATE",
    "MAP_HUGETLB",
    "MAP_HUGE_SHIFT",
    "MAP_HUGE_2MB",
    "MAP_FAILED",
    "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE",
    "MADV_POPULATE_WRITE",
    "MADV_COLLAPSE",
    "MPOL_DEFAULT",
    "MPOL_PREFERRED",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_LOCAL",
    "MPOL_MF_STRICT",
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "MPOL_F_NODE",
    "MPOL_F_ADDR",
    "SYSCALL_NUMBERS",
    "mmap",
    "munmap",
    "madvise",
    "mprotect",
    "mbind",
    "get_mempolicy",
    "node_of_address",
    "move_pages_query",
    "getcpu",
    "memory_at",
    "MSG_DONTWAIT",
    "MSG_TRUNC",
    "MSG_WAITFORONE",
    "SOCKADDR_STORAGE_SIZE",
    "IOVEC_LAYOUT",
    "MMSGHDR_LAYOUT",
    "recvmmsg",
    "sendmmsg",
    "sched_getcpu",
    "sched_setaffinity",
    "sched_getaffinity",
    "errno_name",
]

libc = ctypes.CDLL(None, use_errno=True)

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")

# <sys/mman.h> (identical on x86_64 and aarch64)
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT  # log2(2 MB) in the size field
MAP_FAILED = ctypes.c_void_p(-1).value  # (void *) -1 as ctypes reports it

MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_POPULATE_WRITE = 23  # Linux 5.14+
MADV_COLLAPSE = 25  # Linux 6.1+

# <numaif.h>
MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_LOCAL = 4
MPOL_MF_STRICT = 1 << 0
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2
MPOL_F_NODE = 1 << 0
MPOL_F_ADDR = 1 << 1

_MPOL_NAMES = {
    MPOL_DEFAULT: "MPOL_DEFAULT",
    MPOL_PREFERRED: "MPOL_PREFERRED",
    MPOL_BIND: "MPOL_BIND",
    MPOL_INTERLEAVE: "MPOL_INTERLEAVE",
    MPOL_LOCAL: "MPOL_LOCAL",
}

# Syscall numbers differ per architecture; glibc wraps none of these.
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"mbind": 237, "get_mempolicy": 239, "move_pages": 279, "getcpu": 309},
    "aarch64": {"mbind": 235, "get_mempolicy": 236, "move_pages": 239, "getcpu": 168},
}
_MACHINE = platform.machine()
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
_NR: dict[str, int] | None = SYSCALL_NUMBERS.get(_ALIASES.get(_MACHINE.lower(), _MACHINE))

_c_ulong_p = ctypes.POINTER(ctypes.c_ulong)
_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_uint_p = ctypes.POINTER(ctypes.c_uint)


def errno_name(err: int) -> str:
    """``"EPERM"`` for 1, ``"errno 999"`` for numbers without a name."""
    return _errno.errorcode.get(err, f"errno {err}")


def _check(ret: int | None, what: str, *, failed: int | None = -1) -> int:
    """Return ``ret`` unless it is the failure value; then raise ``OSError``.

    ``what`` says what was attempted; the message becomes
    ``"<what>: <strerror>"`` and the errno travels in ``exc.errno``.
    """
    if ret != failed:
        return ret  # type: ignore[return-value]
    err = ctypes.get_errno() or _errno.EIO  # never raise OSError(0, ...)
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _range(addr: int, length: int) -> str:
    return f"{addr:#x}+{length}"


def _fn(name: str, restype, argtypes):
    """A private function object, so argtypes set here cannot leak elsewhere."""
    proto = ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)
    return proto((name, libc))


_mmap = _fn(
    "mmap",
    ctypes.c_void_p,
    (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long),
)
_munmap = _fn("munmap", ctypes.c_int, (ctypes.c_void_p, ctypes.c_size_t))
_madvise = _fn("madvise", ctypes.c_int, (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))
_mprotect = _fn("mprotect", ctypes.c_int, (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))
_sched_getcpu = _fn("sched_getcpu", ctypes.c_int, ())
try:
    _getcpu = _fn("getcpu", ctypes.c_int, (_c_uint_p, _c_uint_p))  # glibc 2.29+
except AttributeError:
    _getcpu = None

# syscall(2) is variadic; a fixed prototype per call keeps the argument
# widths explicit (all integer/pointer arguments, which the ABI passes the
# same way as for a non-variadic call on x86_64 and aarch64).
_syscall_mbind = _fn(
    "syscall",
    ctypes.c_long,
    (ctypes.c_long, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, _c_ulong_p, ctypes.c_ulong, ctypes.c_uint),
)
_syscall_get_mempolicy = _fn(
    "syscall",
    ctypes.c_long,
    (ctypes.c_long, _c_int_p, _c_ulong_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong),
)
_syscall_move_pages = _fn(
    "syscall",
    ctypes.c_long,
    (
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.POINTER(ctypes.c_void_p),
        _c_int_p,
        _c_int_p,
        ctypes.c_int,
    ),
)
_syscall_getcpu = _fn("syscall", ctypes.c_long, (ctypes.c_long, _c_uint_p, _c_uint_p, ctypes.c_void_p))


def _syscall_number(name: str) -> int:
    if _NR is None:
        raise OSError(_errno.ENOSYS, f"{name}: no syscall number known for machine {_MACHINE!r}")
    return _NR[name]


def mmap(length: int, prot: int, flags: int, *, addr: int = 0, fd: int = -1, offset: int = 0) -> int:
    """Map ``length`` bytes; return the address."""
    ret = _mmap(addr or None, length, prot, flags, fd, offset)
    return _check(
        ret,
        f"mmap({length} bytes, prot={prot:#x}, flags={flags:#x})",
        failed=MAP_FAILED,
    )


def munmap(addr: int, length: int) -> None:
    _check(_munmap(addr, length), f"munmap({_range(addr, length)})")


def madvise(addr: int, length: int, advice: int, *, advice_name: str | None = None) -> None:
    name = advice_name or f"advice {advice}"
    _check(_madvise(addr, length, advice), f"madvise({name}) on {_range(addr, length)}")


def mprotect(addr: int, length: int, prot: int) -> None:
    _check(_mprotect(addr, length, prot), f"mprotect(prot={prot:#x}) on {_range(addr, length)}")


def _nodemask(nodes: Sequence[int]) -> tuple[ctypes.Array, int]:
    """A bitmask of ``nodes`` and the ``maxnode`` argument that goes with it."""
    bits = ctypes.sizeof(ctypes.c_ulong) * 8
    words = max(nodes) // bits + 1
    mask = (ctypes.c_ulong * words)()
    for node in nodes:
        mask[node // bits] |= 1 << (node % bits)
    # The kernel reads maxnode - 1 bits (historical off-by-one kept by libnuma).
    return mask, words * bits + 1


def mbind(addr: int, length: int, mode: int, nodes: Sequence[int], flags: int = 0) -> None:
    """Set the NUMA policy of ``[addr, addr+length)`` (``nodes`` may be empty for MPOL_DEFAULT)."""
    mode_name = _MPOL_NAMES.get(mode, f"mode {mode}")
    node_list = ",".join(map(str, nodes)) or "-"
    plural = "s" if len(nodes) != 1 else ""
    what = f"mbind({mode_name}, node{plural} {node_list}) on {_range(addr, length)}"
    if any(node < 0 for node in nodes):
        raise OSError(_errno.EINVAL, f"{what}: negative node number")
    if nodes:
        mask, maxnode = _nodemask(nodes)
        mask_ptr = ctypes.cast(mask, _c_ulong_p)
    else:
        mask_ptr, maxnode = None, 0
    number = _syscall_number("mbind")
    _check(_syscall_mbind(number, addr, length, mode, mask_ptr, maxnode, flags), what)


def get_mempolicy(addr: int = 0, flags: int = 0) -> int:
    """The ``mode`` out-value of get_mempolicy(2) (the node with MPOL_F_NODE|MPOL_F_ADDR)."""
    mode = ctypes.c_int(-1)
    number = _syscall_number("get_mempolicy")
    what = f"get_mempolicy(flags={flags:#x}, addr={addr:#x})"
    _check(_syscall_get_mempolicy(number, ctypes.byref(mode), None, 0, addr or None, flags), what)
    return mode.value


def node_of_address(addr: int) -> int:
    """The NUMA node holding the page at ``addr`` (faults it in if absent)."""
    return get_mempolicy(addr, MPOL_F_NODE | MPOL_F_ADDR)


def move_pages_query(addresses: Sequence[int], pid: int = 0) -> list[int]:
    """Where each page lives: move_pages(2) with ``nodes=NULL`` moves nothing.

    Each status is a node number (>= 0) or a negative errno such as
    ``-ENOENT`` (page not present) or ``-EFAULT`` (not mapped).
    """
    count = len(addresses)
    pages = (ctypes.c_void_p * count)(*addresses)
    status = (ctypes.c_int * count)(*([-_errno.ENOENT] * count))
    number = _syscall_number("move_pages")
    what = f"move_pages(query {count} pages, pid {pid})"
    _check(_syscall_move_pages(number, pid, count, pages, None, status, 0), what)
    return list(status)


def getcpu() -> tuple[int, int]:
    """``(cpu, node)`` the calling thread runs on right now."""
    cpu = ctypes.c_uint(0)
    node = ctypes.c_uint(0)
    if _getcpu is not None:
        _check(_getcpu(ctypes.byref(cpu), ctypes.byref(node)), "getcpu()")
    else:
        number = _syscall_number("getcpu")
        _check(_syscall_getcpu(number, ctypes.byref(cpu), ctypes.byref(node), None), "getcpu()")
    return cpu.value, node.value


def sched_getcpu() -> int:
    return _check(_sched_getcpu(), "sched_getcpu()")


def sched_setaffinity(cpus: set[int], pid: int = 0) -> None:
    """Pin ``pid`` (0: the calling thread) to ``cpus``; errors name the CPUs."""
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError as exc:
        what = f"sched_setaffinity(pid {pid}, cpus {sorted(cpus)})"
        raise OSError(exc.errno, f"{what}: {os.strerror(exc.errno)}") from None


def sched_getaffinity(pid: int = 0) -> set[int]:
    try:
        return os.sched_getaffinity(pid)
    except OSError as exc:
        raise OSError(exc.errno, f"sched_getaffinity(pid {pid}): {os.strerror(exc.errno)}") from None


def memory_at(addr: int, size: int) -> memoryview:
    """A writable byte view of ``size`` bytes at ``addr`` (the caller keeps the mapping alive)."""
    return memoryview((ctypes.c_char * size).from_address(addr)).cast("B")


# ------------------------------------------------ recvmmsg / sendmmsg ----
# turbomem.packet.io fills arrays of these C structs with numpy (one
# vectorised store per field per burst); the layouts below give it each
# field's offset and the struct size, taken from ctypes so they match the ABI.

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
MSG_WAITFORONE = 0x10000
SOCKADDR_STORAGE_SIZE = 128  # sizeof(struct sockaddr_storage)


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_H = _MMsgHdr.msg_hdr.offset
# {field: offset}, plus the struct size under "itemsize".
IOVEC_LAYOUT = {"base": _IOVec.iov_base.offset, "len": _IOVec.iov_len.offset, "itemsize": ctypes.sizeof(_IOVec)}
MMSGHDR_LAYOUT = {
    "name": _H + _MsgHdr.msg_name.offset,
    "namelen": _H + _MsgHdr.msg_namelen.offset,
    "iov": _H + _MsgHdr.msg_iov.offset,
    "iovlen": _H + _MsgHdr.msg_iovlen.offset,
    "control": _H + _MsgHdr.msg_control.offset,
    "controllen": _H + _MsgHdr.msg_controllen.offset,
    "flags": _H + _MsgHdr.msg_flags.offset,
    "len": _MMsgHdr.msg_len.offset,
    "itemsize": ctypes.sizeof(_MMsgHdr),
}

# CFUNCTYPE foreign calls release the GIL, so a thread blocked in
# recvmmsg/sendmmsg lets the other pipeline stages run.
_recvmmsg = _fn("recvmmsg", ctypes.c_int, (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p))
_sendmmsg = _fn("sendmmsg", ctypes.c_int, (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int))


def recvmmsg(fd: int, msgvec: int, vlen: int, flags: int) -> int:
    """recvmmsg(2) into the ``mmsghdr`` array at ``msgvec``: datagrams received, or ``-errno``.

    No exception: which errors are benign (EAGAIN, EINTR) is the caller's call,
    and this sits on the per-burst hot path.
    """
    r = _recvmmsg(fd, msgvec, vlen, flags, None)
    return r if r >= 0 else -(ctypes.get_errno() or _errno.EIO)


def sendmmsg(fd: int, msgvec: int, vlen: int, flags: int) -> int:
    """sendmmsg(2) from the ``mmsghdr`` array at ``msgvec``: datagrams sent, or ``-errno``."""
    r = _sendmmsg(fd, msgvec, vlen, flags)
    return r if r >= 0 else -(ctypes.get_errno() or _errno.EIO)
