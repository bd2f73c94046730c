"""Burst packet I/O straight into pool objects: recvmmsg / sendmmsg (through turbomem._sys).

    rx = BurstReceiver(sock, pool, burst=64)
    handles, lengths = rx.recv(timeout=0.1)     # datagram i is in pool object handles[i]
    ...
    tx = BurstSender(sock, pool)
    tx.send(handles, lengths, addr=("127.0.0.1", 9000), release=True)

One ``recvmmsg`` call fills up to ``burst`` pool objects, each through one
iovec that points at ``pool.address + h * pool.stride`` (``obj_size`` bytes):
the kernel copies each datagram (or AF_PACKET frame) once, into its final
buffer, and Python runs a handful of numpy operations per *burst*, not per
packet.  The ``mmsghdr``/``iovec`` arrays are numpy structured arrays laid
out like the C structs (offsets from turbomem._sys) and allocated once per
receiver/sender, so refilling them for a burst is vectorised.

Works on UDP sockets (IPv4/IPv6, connected or not) and AF_PACKET raw sockets.

Ownership: ``recv`` hands back the handles that hold data; every handle it
took (or was given) that did not receive a packet goes back to the pool, on
success, on EAGAIN, on error and on KeyboardInterrupt.  Handles given to
``recv`` must be distinct, handed-out handles of the pool; if they are
refused (InvalidHandleError) the call consumes none of them.  ``send`` does
not take ownership unless ``release=True``, in which case every valid
handle goes back to the pool whatever happens (invalid ones are reported,
never put).

Memory safety: the system calls run under ``pool.hold()``, so a
``pool.close()`` from another thread never unmaps memory the kernel is
writing into (it is unmapped when the call returns).  Blocking waits poll in
slices of at most 100 ms: Ctrl-C is seen at once, and ``close()`` ends a
blocked ``recv`` with PoolClosedError within 100 ms.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import numpy.typing as npt

from turbomem import _sys
from turbomem._checks import check_count, check_timeout, int_array
from turbomem._handles import acquire, owned_handles, release, release_valid
from turbomem.errors import PoolClosedError
from turbomem._sys import MSG_DONTWAIT, MSG_TRUNC, MSG_WAITFORONE, SOCKADDR_STORAGE_SIZE

if TYPE_CHECKING:
    from turbomem._core import Pool

#: Handles or lengths as given to the calls: an integer numpy array or a sequence of ints.
IntArray = Union[npt.NDArray[Any], Sequence[int]]
#: What the receive calls return: handles now owned by the caller, and the bytes in each.
Received = tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]

__all__ = [
    "BurstReceiver",
    "BurstSender",
    "recv_burst",
    "send_burst",
    "encode_sockaddr",
    "decode_sockaddr",
    "MSG_DONTWAIT",
    "MSG_WAITFORONE",
    "MSG_TRUNC",
]

SOCKADDR_STORAGE = SOCKADDR_STORAGE_SIZE


def _dtype(layout: dict, formats: dict) -> np.dtype:
    """A numpy structured dtype laid out like the C struct ``layout`` describes."""
    names = list(formats)
    return np.dtype({"names": names, "formats": [formats[n] for n in names],
                     "offsets": [layout[n] for n in names], "itemsize": layout["itemsize"]})


IOV_DTYPE = _dtype(_sys.IOVEC_LAYOUT, {"base": np.uintp, "len": np.uintp})
MMSG_DTYPE = _dtype(_sys.MMSGHDR_LAYOUT, {
    "name": np.uintp, "namelen": np.uint32, "iov": np.uintp, "iovlen": np.uintp, "control": np.uintp,
    "controllen": np.uintp, "flags": np.int32, "len": np.uint32,
})


def _oserror(call: str, err: int, sock) -> OSError:
    return OSError(err, f"{call} on fd {sock.fileno()}: {os.strerror(err)}")


# ---------------------------------------------------------------- sockaddr --

def encode_sockaddr(family: int, addr: tuple[Any, ...]) -> bytes:
    """The C ``struct sockaddr`` bytes for a Python socket address tuple.

    AF_INET ``(host, port)``, AF_INET6 ``(host, port[, flowinfo, scope_id])``,
    AF_PACKET ``(ifname, proto[, pkttype, hatype, haddr])``.
    """
    if family == socket.AF_INET:
        host, port = str(addr[0]), int(addr[1])
        try:
            raw = socket.inet_pton(socket.AF_INET, host)
        except OSError:
            raw = socket.inet_pton(socket.AF_INET, str(socket.getaddrinfo(
                host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]))
        return struct.pack("=H", family) + struct.pack("!H", port) + raw + bytes(8)
    if family == socket.AF_INET6:
        host, port = str(addr[0]), int(addr[1])
        flowinfo = addr[2] if len(addr) > 2 else 0
        scope_id = addr[3] if len(addr) > 3 else 0
        try:
            raw = socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            raw = socket.inet_pton(socket.AF_INET6, str(socket.getaddrinfo(
                host, port, socket.AF_INET6, socket.SOCK_DGRAM)[0][4][0]))
        return (struct.pack("=H", family) + struct.pack("!HI", port, flowinfo) + raw
                + struct.pack("=I", scope_id))
    if family == getattr(socket, "AF_PACKET", -1):
        ifname, proto = addr[0], addr[1]
        pkttype = addr[2] if len(addr) > 2 else 0
        hatype = addr[3] if len(addr) > 3 else 0
        haddr = bytes(addr[4]) if len(addr) > 4 else b""
        if len(haddr) > 8:
            raise ValueError("AF_PACKET hardware address longer than 8 bytes")
        index = socket.if_nametoindex(ifname) if isinstance(ifname, str) else int(ifname)
        return (struct.pack("=H", family) + struct.pack("!H", proto)
                + struct.pack("=iHBB", index, hatype, pkttype, len(haddr)) + haddr.ljust(8, b"\0"))
    raise ValueError(f"unsupported address family {family}")


def decode_sockaddr(raw: bytes) -> tuple[Any, ...] | None:
    """Python address tuple for C ``struct sockaddr`` bytes (None if empty)."""
    raw = bytes(raw)
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET:
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        port, flowinfo = struct.unpack_from("!HI", raw, 2)
        scope_id = struct.unpack_from("=I", raw, 24)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id
    if family == getattr(socket, "AF_PACKET", -1):
        proto = struct.unpack_from("!H", raw, 2)[0]
        index, hatype, pkttype, halen = struct.unpack_from("=iHBB", raw, 4)
        try:
            name = socket.if_indextoname(index)
        except OSError:
            name = str(index)
        return name, proto, pkttype, hatype, raw[12:12 + halen]
    return (family, raw)


_POLL_SLICE = 0.1  # seconds: how long one poll() may block before we look at the pool


def _wait(sock, events: int, timeout: float | None, pool=None) -> bool:
    """poll() one fd until ready (True) or ``timeout`` seconds passed (False).

    Polls in slices of at most 100 ms (the GIL is released inside poll;
    Python runs signal handlers on EINTR, so Ctrl-C raises at once) and
    raises PoolClosedError when ``pool`` was closed meanwhile."""
    p = select.poll()
    p.register(sock.fileno(), events)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _POLL_SLICE if deadline is None else min(_POLL_SLICE, deadline - time.monotonic())
        if p.poll(max(0, int(left * 1000 + 0.999))):
            return True
        if pool is not None and pool.closed:
            raise PoolClosedError(f"{pool!r} was closed while waiting")
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _effective_timeout(sock, timeout):
    """None: the socket's own mode (blocking, or its settimeout value)."""
    if timeout is None:
        return sock.gettimeout()
    return check_timeout(timeout)


# ----------------------------------------------------------------- receive --

class BurstReceiver:
    """recvmmsg into pool objects, with its C structures allocated once.

    ``burst`` is the most datagrams one ``recv`` returns.  With
    ``addresses=True`` each message's source address is kept too (see
    ``last_addresses`` / ``address_block``), e.g. for an echo server.

    Counters: ``packets``, ``calls``, ``truncated`` (datagrams longer than
    ``obj_size``: the kernel set MSG_TRUNC and the object holds the first
    ``obj_size`` bytes).
    """

    sock: socket.socket
    pool: Pool
    burst: int
    packets: int
    calls: int
    truncated: int

    def __init__(self, sock: socket.socket, pool: Pool, burst: int = 32, *, addresses: bool = False) -> None:
        if check_count(burst, "burst") == 0:
            raise ValueError(f"burst must be positive, got {burst}")
        self.sock = sock
        self.pool = pool
        self.burst = int(burst)
        self._iov = np.zeros(self.burst, dtype=IOV_DTYPE)
        self._iov["len"] = pool.obj_size
        self._msgs = np.zeros(self.burst, dtype=MMSG_DTYPE)
        idx = np.arange(self.burst, dtype=np.uintp)
        self._msgs["iov"] = self._iov.ctypes.data + idx * IOV_DTYPE.itemsize
        self._msgs["iovlen"] = 1
        self._names = None
        if addresses:
            self._names = np.zeros((self.burst, SOCKADDR_STORAGE), dtype=np.uint8)
            self._msgs["name"] = self._names.ctypes.data + idx * SOCKADDR_STORAGE
        self._msgs_ptr = self._msgs.ctypes.data
        self._last = 0
        self.packets = 0
        self.calls = 0
        self.truncated = 0

    def recv(self, max_packets: int | None = None, *, handles: Optional[IntArray] = None,
             timeout: float | None = None) -> Received:
        """Receive up to ``max_packets`` (default ``burst``) datagrams.

        Returns ``(handles, lengths)`` as uint32 arrays (both empty when
        nothing arrived in time).  ``timeout``: None follows the socket
        (blocking: wait for the first datagram, then take what is queued;
        ``settimeout(t)``: wait up to t); 0 never waits (MSG_DONTWAIT); t > 0
        waits up to t seconds.

        ``handles``: receive into these objects instead of taking new ones;
        they are consumed (the unused ones go back to the pool).  They must
        be distinct handles the caller holds; otherwise InvalidHandleError,
        and none is consumed.

        If ``pool.close()`` runs meanwhile, the memory stays mapped until the
        system call returns and recv raises PoolClosedError.
        """
        pool = self.pool
        n = self.burst if max_packets is None else min(check_count(max_packets, "max_packets"),
                                                       self.burst)
        wait = _effective_timeout(self.sock, timeout)
        objs: npt.NDArray[np.uint32]  # the objects received into, ours until returned
        if handles is not None:
            objs = owned_handles(pool, handles).copy()  # refused: nothing consumed
            if len(objs) > self.burst:
                raise ValueError(f"{len(objs)} handles given, burst is {self.burst}")
            n = len(objs)
            if n <= 0:
                return _empty(), _empty()
        elif n <= 0:
            return _empty(), _empty()
        else:
            objs = acquire(pool, n)
            n = len(objs)
        got = 0
        deadline = None if wait is None else time.monotonic() + wait
        try:
            msgs = self._msgs
            while True:
                # Wait for the first datagram here, in interruptible slices,
                # then take what is queued without blocking in the kernel.
                if wait != 0:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not _wait(self.sock, select.POLLIN, left, pool):
                        self._last = 0
                        return _empty(), _empty()
                # The kernel writes straight into the pool objects, without
                # the GIL (a ctypes foreign call): the hold keeps the memory
                # mapped until it returns, even if another thread closes the pool.
                with pool.hold():
                    self._iov["base"][:n] = pool.address + objs.astype(np.uintp) * pool.stride
                    if self._names is not None:
                        msgs["namelen"][:n] = SOCKADDR_STORAGE
                    r = _sys.recvmmsg(self.sock.fileno(), self._msgs_ptr, n, MSG_DONTWAIT)
                self.calls += 1
                if pool.closed:
                    raise PoolClosedError(f"{pool!r} was closed during recv")
                if r >= 0:
                    break
                err = -r
                self._last = 0
                if err not in (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.EINTR):
                    raise _oserror("recvmmsg", err, self.sock)
                if wait == 0 or (deadline is not None and time.monotonic() >= deadline):
                    return _empty(), _empty()
                # another reader took the datagram poll() saw: wait again
            got = r
            self._last = r
            lengths = msgs["len"][:r].copy()
            if r:
                trunc = (msgs["flags"][:r] & MSG_TRUNC) != 0
                if trunc.any():
                    self.truncated += int(trunc.sum())
                    np.minimum(lengths, pool.obj_size, out=lengths)
            self.packets += r
            return objs[:r].copy(), lengths
        finally:
            # Whatever path we leave by, objects that got no packet go back.
            release(pool, objs[got:])

    def last_addresses(self) -> list[tuple[Any, ...] | None]:
        """Source addresses (Python tuples) of the last burst (addresses=True)."""
        if self._names is None:
            raise ValueError("BurstReceiver was created without addresses=True")
        lens = self._msgs["namelen"][:self._last]
        return [decode_sockaddr(self._names[i, :lens[i]].tobytes()) for i in range(self._last)]

    def address_block(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]:
        """(sockaddr bytes array, lengths) of the last burst, for BurstSender.send."""
        if self._names is None:
            raise ValueError("BurstReceiver was created without addresses=True")
        return self._names[:self._last], self._msgs["namelen"][:self._last]


def _empty():
    return np.zeros(0, dtype=np.uint32)


def recv_burst(sock: socket.socket, pool: Pool, max_packets: int, *, handles: Optional[IntArray] = None,
               timeout: float | None = None) -> Received:
    """One recvmmsg into pool objects; see BurstReceiver.recv.

    Builds its C structures on every call: keep a BurstReceiver for loops.
    """
    if handles is None:
        size = check_count(max_packets, "max_packets")
    else:
        size = len(owned_handles(pool, handles))  # refused here: nothing consumed
    return BurstReceiver(sock, pool, max(size, 1)).recv(
        max_packets, handles=handles, timeout=timeout)


# -------------------------------------------------------------------- send --

class BurstSender:
    """sendmmsg from pool objects, C structures allocated once.

    Connected UDP and bound AF_PACKET sockets need no address; otherwise
    pass ``addr`` (one destination for the whole burst) or
    ``addresses=(sockaddr array, lengths)`` from BurstReceiver.address_block.
    """

    sock: socket.socket
    pool: Pool
    burst: int
    packets: int
    calls: int

    def __init__(self, sock: socket.socket, pool: Pool, burst: int = 32) -> None:
        if check_count(burst, "burst") == 0:
            raise ValueError(f"burst must be positive, got {burst}")
        self.sock = sock
        self.pool = pool
        self.burst = int(burst)
        self._iov = np.zeros(self.burst, dtype=IOV_DTYPE)
        self._msgs = np.zeros(self.burst, dtype=MMSG_DTYPE)
        idx = np.arange(self.burst, dtype=np.uintp)
        self._msgs["iov"] = self._iov.ctypes.data + idx * IOV_DTYPE.itemsize
        self._msgs["iovlen"] = 1
        self._msgs_ptr = self._msgs.ctypes.data
        self._addr_key = None
        self._addr_buf = None
        self.packets = 0
        self.calls = 0

    def _set_addr(self, addr):
        if addr != self._addr_key:
            raw = encode_sockaddr(self.sock.family, addr)
            self._addr_buf = np.frombuffer(bytearray(raw), dtype=np.uint8)
            self._addr_key = addr
        return self._addr_buf

    def send(self, handles: IntArray, lengths: IntArray, *, addr: Optional[tuple[Any, ...]] = None,
             addresses: Optional[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint32]]] = None,
             release: bool = False, timeout: float | None = None) -> int:
        """Send ``lengths[i]`` bytes of object ``handles[i]``; returns how many went.

        Blocks per the socket mode (or ``timeout``) when the socket buffer is
        full; with timeout 0 it returns early with the count sent.  Raises
        OSError (after releasing, if ``release``) on any other error.

        Handles must be handed-out handles of the pool (InvalidHandleError
        otherwise; with ``release=True`` also distinct), lengths integers in
        [0, obj_size].  With ``release=True`` every valid handle goes back to
        the pool whatever fails, bad input included.
        """
        pool = self.pool
        try:
            hs = owned_handles(pool, handles, unique=release)
            ls = int_array(lengths, 0, pool.obj_size + 1, "length")
            if len(hs) != len(ls):
                raise ValueError(f"{len(hs)} handles but {len(ls)} lengths")
            if len(hs) == 0:
                return 0
            wait = _effective_timeout(self.sock, timeout)
            names = None
            if addr is not None:
                buf = self._set_addr(addr)
                self._msgs["name"] = buf.ctypes.data
                self._msgs["namelen"] = len(buf)
            elif addresses is not None:
                names, namelens = addresses
                if len(names) != len(hs):
                    raise ValueError("one address per packet is needed")
                names = np.ascontiguousarray(names, dtype=np.uint8)
                namelens = np.asarray(namelens, dtype=np.uint32)
            else:
                self._msgs["name"] = 0
                self._msgs["namelen"] = 0
            base, stride = pool.address, pool.stride
            sent = 0
            total = len(hs)
            while sent < total:
                k = min(self.burst, total - sent)
                self._iov["len"][:k] = ls[sent:sent + k]
                if names is not None:
                    self._msgs["name"][:k] = (names.ctypes.data
                                              + np.arange(sent, sent + k, dtype=np.uintp)
                                              * names.shape[1])
                    self._msgs["namelen"][:k] = namelens[sent:sent + k]
                with pool.hold():  # the kernel reads the objects without the GIL
                    self._iov["base"][:k] = base + hs[sent:sent + k].astype(np.uintp) * stride
                    # Never block in the kernel: a full socket buffer is
                    # waited for in poll() slices (signals, close() seen).
                    r = _sys.sendmmsg(self.sock.fileno(), self._msgs_ptr, k, MSG_DONTWAIT)
                self.calls += 1
                if r < 0:
                    err = -r
                    if err == _errno.EINTR:
                        continue
                    if err in (_errno.EAGAIN, _errno.EWOULDBLOCK):
                        if wait != 0 and _wait(self.sock, select.POLLOUT, wait, pool):
                            continue
                        break
                    raise _oserror("sendmmsg", err, self.sock)
                sent += r
                self.packets += r
            return sent
        finally:
            if release:
                release_valid(pool, handles)


def send_burst(sock: socket.socket, pool: Pool, handles: IntArray, lengths: IntArray, *,
               addr: Optional[tuple[Any, ...]] = None, release: bool = False,
               timeout: float | None = None) -> int:
    """One-shot sendmmsg of pool objects; see BurstSender.send."""
    try:
        n = max(1, min(len(handles), 1024))
    except TypeError:  # not a sequence: send() reports it (and releases what is valid)
        n = 1
    return BurstSender(sock, pool, n).send(handles, lengths, addr=addr, release=release,
                                           timeout=timeout)
