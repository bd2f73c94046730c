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
import struct as _struct
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
    "buffer_address",
    "pidfd_open",
    "pidfd_exited",
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
        raise OSError(exc.errno, f"{what}: {os.strerror(exc.errno or 0)}") from None


def sched_getaffinity(pid: int = 0) -> set[int]:
    try:
        return os.sched_getaffinity(pid)
    except OSError as exc:
        raise OSError(exc.errno, f"sched_getaffinity(pid {pid}): {os.strerror(exc.errno or 0)}") from None


# pidfd_open has one number on every architecture (the unified table, Linux 5.3+).
_NR_PIDFD_OPEN = 434
_syscall_pidfd_open = _fn("syscall", ctypes.c_long, (ctypes.c_long, ctypes.c_int, ctypes.c_uint))


def pidfd_open(pid: int) -> int:
    """A pidfd (close-on-exec) naming process ``pid`` from now on, even if the
    pid is reused later.  OSError: ESRCH (ProcessLookupError) when there is no
    such process, ENOSYS where the kernel has no pidfd_open, EINVAL for a
    thread that is not a process leader."""
    if hasattr(os, "pidfd_open"):
        try:
            return os.pidfd_open(pid)
        except OSError as exc:
            raise OSError(exc.errno, f"pidfd_open({pid}): {os.strerror(exc.errno or 0)}") from None
    return _check(_syscall_pidfd_open(_NR_PIDFD_OPEN, pid, 0), f"pidfd_open({pid})")


def pidfd_exited(fd: int) -> bool:
    """True once the process behind pidfd ``fd`` has exited (a zombie counts):
    the kernel makes a pidfd readable then.  Never blocks."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(ev & (select.POLLIN | select.POLLHUP) for _fd, ev in poller.poll(0))


def buffer_address(buf) -> int:
    """The address of a writable buffer's first byte (an mmap, a bytearray);
    the export is released before returning, so the buffer can still close."""
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view


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


# =============================================================================
# AF_XDP / BPF / AF_PACKET section (issue 12).  Everything the packet/xdp.py and
# packet/tpacket.py modules need from the kernel, as ctypes: bpf(2) for the
# XSKMAP and the redirect program, bpf links for attach/detach, the AF_XDP
# socket options and ring mmaps, and the TPACKET_V3 socket options.  The ring
# *index* accesses are not here: they are atomics shared with the kernel and
# live in C (include/turbomem/xsk.h).
# =============================================================================



MAP_SHARED = 0x01

AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_OPTIONS_ZEROCOPY = 1
XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_PGOFF_RX_RING = 0
XDP_PGOFF_TX_RING = 0x80000000
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000
XDP_PACKET_HEADROOM = 256  # the kernel's fixed headroom in front of every received frame
XDP_DESC_SIZE = 16         # struct xdp_desc {u64 addr; u32 len; u32 options}

# bpf(2) commands, map/program/attach types and XDP attach flags (linux/bpf.h,
# linux/if_link.h); the numbers are ABI.
BPF_MAP_CREATE = 0
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_LINK_CREATE = 28
BPF_MAP_TYPE_XSKMAP = 17
BPF_PROG_TYPE_XDP = 6
BPF_XDP = 37
BPF_FUNC_redirect_map = 51
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_PASS = 2
_BPF_ATTR_SIZE = 144  # sizeof(union bpf_attr) in the 6.x headers; the kernel accepts larger-or-equal zeroed tails

# AF_PACKET (linux/if_packet.h)
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_QDISC_BYPASS = 20
TPACKET_V3 = 2
ETH_P_ALL = 0x0003

_bpf_number = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
_syscall = libc.syscall
_syscall.restype = ctypes.c_long


def xsk_socket() -> int:
    """socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC): a new fd, or OSError with the errno."""
    fd = libc.socket(AF_XDP, 3 | 0o2000000, 0)  # SOCK_RAW | SOCK_CLOEXEC
    if fd < 0:
        err = ctypes.get_errno() or _errno.EIO
        raise OSError(err, f"socket(AF_XDP): {os.strerror(err)}")
    return fd


def bpf(cmd: int, attr: bytearray, what: str) -> int:
    """bpf(2) with ``attr`` (zero-padded to sizeof(union bpf_attr)); returns its result."""
    if _bpf_number is None:
        raise OSError(_errno.ENOSYS, f"{what}: bpf() syscall number unknown on {platform.machine()}")
    if len(attr) < _BPF_ATTR_SIZE:
        attr = attr + bytearray(_BPF_ATTR_SIZE - len(attr))
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = _syscall(ctypes.c_long(_bpf_number), ctypes.c_long(cmd), buf, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def bpf_create_xskmap(max_entries: int) -> int:
    """A BPF_MAP_TYPE_XSKMAP fd (queue index -> AF_XDP socket)."""
    attr = bytearray(_struct.pack("=IIII", BPF_MAP_TYPE_XSKMAP, 4, 4, max_entries))
    attr += bytearray(_struct.pack("=I", 0))  # map_flags
    return bpf(BPF_MAP_CREATE, attr, f"bpf(BPF_MAP_CREATE xskmap, {max_entries} entries)")


def bpf_map_update_u32(map_fd: int, key: int, value: int) -> None:
    k = ctypes.c_uint32(key)
    v = ctypes.c_uint32(value)
    attr = bytearray(_struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
    bpf(BPF_MAP_UPDATE_ELEM, attr, f"bpf(BPF_MAP_UPDATE_ELEM map fd {map_fd}, key {key})")


def bpf_map_delete_u32(map_fd: int, key: int) -> None:
    k = ctypes.c_uint32(key)
    attr = bytearray(_struct.pack("=IIQ", map_fd, 0, ctypes.addressof(k)))
    bpf(BPF_MAP_DELETE_ELEM, attr, f"bpf(BPF_MAP_DELETE_ELEM map fd {map_fd}, key {key})")


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


def xsk_redirect_program(map_fd: int) -> bytes:
    """The whole XDP program, as raw instructions:

        r2 = ctx->rx_queue_index                  ; struct xdp_md, offset 16
        r1 = &xskmap                              ; ld_imm64, BPF_PSEUDO_MAP_FD
        r3 = XDP_PASS                             ; action when the slot is empty
        return bpf_redirect_map(r1, r2, r3)

    Queues without a socket in the map pass their packets to the stack.
    """
    return b"".join([
        _insn(0x61, dst=2, src=1, off=16),           # BPF_LDX | BPF_MEM | BPF_W
        _insn(0x18, dst=1, src=1, imm=map_fd),       # BPF_LD | BPF_DW | BPF_IMM, src=PSEUDO_MAP_FD
        _insn(0x00),                                 # upper half of the 64-bit immediate
        _insn(0xB7, dst=3, imm=XDP_PASS),            # BPF_ALU64 | BPF_MOV | BPF_K
        _insn(0x85, imm=BPF_FUNC_redirect_map),      # BPF_JMP | BPF_CALL
        _insn(0x95),                                 # BPF_JMP | BPF_EXIT
    ])


def bpf_load_xdp_program(insns: bytes, name: bytes = b"tm_xsk_redir") -> int:
    """BPF_PROG_LOAD of an XDP program; the verifier log goes into the error message."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = bytearray(_BPF_ATTR_SIZE)
    _struct.pack_into("=IIQQIIQ", attr, 0, BPF_PROG_TYPE_XDP, len(insns) // 8,
                      ctypes.addressof(code), ctypes.addressof(lic), 1, len(log), ctypes.addressof(log))
    _struct.pack_into("=16s", attr, 48, name[:15])
    _struct.pack_into("=I", attr, 68, BPF_XDP)  # expected_attach_type
    try:
        return bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD xdp)")
    except OSError as exc:
        text = log.value.decode(errors="replace").strip()
        if text:
            raise OSError(exc.errno, f"{exc.strerror}; verifier: {text[-500:]}") from None
        raise


def bpf_link_xdp(prog_fd: int, ifindex: int, flags: int) -> int:
    """Attach an XDP program through a bpf link; closing the returned fd detaches it.

    The kernel also detaches when the process dies (the last fd goes away),
    so a crashed or killed process never leaves the program attached."""
    attr = bytearray(_struct.pack("=IIII", prog_fd, ifindex, BPF_XDP, flags))
    mode = "skb" if flags & XDP_FLAGS_SKB_MODE else "drv" if flags & XDP_FLAGS_DRV_MODE else "auto"
    return bpf(BPF_LINK_CREATE, attr, f"bpf(BPF_LINK_CREATE xdp, ifindex {ifindex}, {mode} mode)")


class XdpMmapOffsets(ctypes.Structure):
    """struct xdp_mmap_offsets: {producer, consumer, desc, flags} per ring."""
    _fields_ = [(f"{ring}_{field}", ctypes.c_uint64)
                for ring in ("rx", "tx", "fr", "cr")
                for field in ("producer", "consumer", "desc", "flags")]


class XdpStatistics(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
        "rx_fill_ring_empty_descs", "tx_ring_empty_descs")]


_setsockopt = libc.setsockopt
_setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
_setsockopt.restype = ctypes.c_int
_getsockopt = libc.getsockopt
_getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                        ctypes.POINTER(ctypes.c_uint32)]
_getsockopt.restype = ctypes.c_int
_bind = libc.bind
_bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
_bind.restype = ctypes.c_int


def setsockopt_raw(fd: int, level: int, name: int, value: bytes, what: str) -> None:
    buf = ctypes.create_string_buffer(value, len(value))
    _check(_setsockopt(fd, level, name, buf, len(value)), what)


def getsockopt_struct(fd: int, level: int, name: int, ctype, what: str):
    out = ctype()
    size = ctypes.c_uint32(ctypes.sizeof(out))
    _check(_getsockopt(fd, level, name, ctypes.byref(out), ctypes.byref(size)), what)
    return out


def xsk_umem_reg(fd: int, addr: int, length: int, chunk_size: int, headroom: int = 0) -> None:
    """XDP_UMEM_REG: the pool's region becomes this socket's UMEM (pinned by the kernel)."""
    value = _struct.pack("=QQIII", addr, length, chunk_size, headroom, 0)
    setsockopt_raw(fd, SOL_XDP, XDP_UMEM_REG, value,
                   f"setsockopt(XDP_UMEM_REG {length} bytes at {addr:#x}, chunk {chunk_size})")


def xsk_set_ring_size(fd: int, which: int, entries: int, name: str) -> None:
    setsockopt_raw(fd, SOL_XDP, which, _struct.pack("=I", entries),
                   f"setsockopt({name}, {entries} entries)")


def xsk_bind(fd: int, ifindex: int, queue_id: int, flags: int, shared_umem_fd: int = 0) -> None:
    addr = _struct.pack("=HHIII", AF_XDP, flags, ifindex, queue_id, shared_umem_fd)
    buf = ctypes.create_string_buffer(addr, len(addr))
    _check(_bind(fd, buf, len(addr)),
           f"bind(AF_XDP ifindex {ifindex}, queue {queue_id}, flags {flags:#x})")


def xsk_options(fd: int) -> int:
    opt = getsockopt_struct(fd, SOL_XDP, XDP_OPTIONS, ctypes.c_uint32, "getsockopt(XDP_OPTIONS)")
    return opt.value


def if_nametoindex(name: str) -> int:
    """Interface index, or OSError(ENODEV) naming the interface."""
    if not isinstance(name, str) or not name or len(name) >= 16 or "/" in name or "\0" in name:
        raise ValueError(f"not a valid interface name: {name!r}")
    try:
        import socket as _socket
        return _socket.if_nametoindex(name)
    except OSError:
        raise OSError(_errno.ENODEV, f"if_nametoindex({name!r}): no such interface") from None


def tpacket_v3_rx_ring(fd: int, block_size: int, block_nr: int, frame_size: int,
                       retire_ms: int) -> None:
    """PACKET_VERSION=TPACKET_V3 then PACKET_RX_RING with a struct tpacket_req3."""
    setsockopt_raw(fd, SOL_PACKET, PACKET_VERSION, _struct.pack("=i", TPACKET_V3),
                   "setsockopt(PACKET_VERSION TPACKET_V3)")
    frame_nr = block_size // frame_size * block_nr
    req = _struct.pack("=IIIIIII", block_size, block_nr, frame_size, frame_nr, retire_ms, 0, 0)
    setsockopt_raw(fd, SOL_PACKET, PACKET_RX_RING, req,
                   f"setsockopt(PACKET_RX_RING {block_nr} blocks of {block_size} bytes)")


class TpacketStatsV3(ctypes.Structure):
    _fields_ = [("tp_packets", ctypes.c_uint), ("tp_drops", ctypes.c_uint),
                ("tp_freeze_q_cnt", ctypes.c_uint)]
