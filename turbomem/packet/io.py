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
success, on EAGAIN, on error and on KeyboardInterrupt.  ``send`` does not
take ownership unless ``release=True``, in which case every handle goes back
to the pool whatever happens.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket
import struct

import numpy as np

from turbomem import _sys
from turbomem._handles import acquire, release
from turbomem._sys import MSG_DONTWAIT, MSG_TRUNC, MSG_WAITFORONE, SOCKADDR_STORAGE_SIZE

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

def encode_sockaddr(family: int, addr) -> bytes:
    """The C ``struct sockaddr`` bytes for a Python socket address tuple.

    AF_INET ``(host, port)``, AF_INET6 ``(host, port[, flowinfo, scope_id])``,
    AF_PACKET ``(ifname, proto[, pkttype, hatype, haddr])``.
    """
    if family == socket.AF_INET:
        host, port = addr[0], addr[1]
        try:
            raw = socket.inet_pton(socket.AF_INET, host)
        except OSError:
            raw = socket.inet_pton(socket.AF_INET, socket.getaddrinfo(
                host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0])
        return struct.pack("=H", family) + struct.pack("!H", port) + raw + bytes(8)
    if family == socket.AF_INET6:
        host, port = addr[0], addr[1]
        flowinfo = addr[2] if len(addr) > 2 else 0
        scope_id = addr[3] if len(addr) > 3 else 0
        try:
            raw = socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            raw = socket.inet_pton(socket.AF_INET6, socket.getaddrinfo(
                host, port, socket.AF_INET6, socket.SOCK_DGRAM)[0][4][0])
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


def decode_sockaddr(raw) -> tuple | None:
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


def _wait(sock, events: int, timeout: float | None) -> bool:
    """poll() one fd (releases the GIL; EINTR retried by Python). True if ready."""
    p = select.poll()
    p.register(sock.fileno(), events)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return bool(p.poll(ms))


def _effective_timeout(sock, timeout):
    """None: the socket's own mode (blocking, or its settimeout value)."""
    if timeout is None:
        return sock.gettimeout()
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
    return float(timeout)


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

    def __init__(self, sock, pool, burst: int = 32, *, addresses: bool = False):
        if burst <= 0:
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

    def recv(self, max_packets: int | None = None, *, handles=None, timeout: float | None = None):
        """Receive up to ``max_packets`` (default ``burst``) datagrams.

        Returns ``(handles, lengths)`` as uint32 arrays (both empty when
        nothing arrived in time).  ``timeout``: None follows the socket
        (blocking: wait for the first datagram, then take what is queued;
        ``settimeout(t)``: wait up to t); 0 never waits (MSG_DONTWAIT); t > 0
        waits up to t seconds.

        ``handles``: receive into these objects instead of taking new ones;
        they are consumed (the unused ones go back to the pool).
        """
        pool = self.pool
        n = self.burst if max_packets is None else min(int(max_packets), self.burst)
        if handles is not None:
            handles = np.array(handles, dtype=np.uint32, copy=True).ravel()
            if len(handles) > self.burst:
                raise ValueError(f"{len(handles)} handles given, burst is {self.burst}")
            if len(handles) and int(handles.max()) >= pool.capacity:
                raise ValueError("handle outside the pool")
            n = len(handles)
        wait = _effective_timeout(self.sock, timeout)
        if n <= 0:
            release(pool, handles if handles is not None else ())
            return _empty(), _empty()
        if handles is None:
            handles = acquire(pool, n)
            n = len(handles)
        got = 0
        try:
            msgs = self._msgs
            self._iov["base"][:n] = pool.address + handles.astype(np.uintp) * pool.stride
            if self._names is not None:
                msgs["namelen"][:n] = SOCKADDR_STORAGE
            flags = MSG_DONTWAIT
            if wait is None:
                flags = MSG_WAITFORONE  # block for the first, then take what is queued
            elif wait > 0 and not _wait(self.sock, select.POLLIN, wait):
                self._last = 0
                return _empty(), _empty()
            # The kernel writes straight into the pool objects; the GIL is
            # released while it does (a ctypes foreign call).
            r = _sys.recvmmsg(self.sock.fileno(), self._msgs_ptr, n, flags)
            self.calls += 1
            if r < 0:
                err = -r
                self._last = 0
                if err in (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.EINTR):
                    return _empty(), _empty()
                raise _oserror("recvmmsg", err, self.sock)
            got = r
            self._last = r
            lengths = msgs["len"][:r].copy()
            if r:
                trunc = (msgs["flags"][:r] & MSG_TRUNC) != 0
                if trunc.any():
                    self.truncated += int(trunc.sum())
                    np.minimum(lengths, pool.obj_size, out=lengths)
            self.packets += r
            return handles[:r].copy(), lengths
        finally:
            # Whatever path we leave by, objects that got no packet go back.
            release(pool, handles[got:])

    def last_addresses(self) -> list:
        """Source addresses (Python tuples) of the last burst (addresses=True)."""
        if self._names is None:
            raise ValueError("BurstReceiver was created without addresses=True")
        lens = self._msgs["namelen"][:self._last]
        return [decode_sockaddr(self._names[i, :lens[i]].tobytes()) for i in range(self._last)]

    def address_block(self):
        """(sockaddr bytes array, lengths) of the last burst, for BurstSender.send."""
        if self._names is None:
            raise ValueError("BurstReceiver was created without addresses=True")
        return self._names[:self._last], self._msgs["namelen"][:self._last]


def _empty():
    return np.zeros(0, dtype=np.uint32)


def recv_burst(sock, pool, max_packets: int, *, handles=None, timeout: float | None = None):
    """One recvmmsg into pool objects; see BurstReceiver.recv.

    Builds its C structures on every call: keep a BurstReceiver for loops.
    """
    size = max_packets if handles is None else max(len(handles), 1)
    return BurstReceiver(sock, pool, max(int(size), 1)).recv(
        max_packets, handles=handles, timeout=timeout)


# -------------------------------------------------------------------- send --

class BurstSender:
    """sendmmsg from pool objects, C structures allocated once.

    Connected UDP and bound AF_PACKET sockets need no address; otherwise
    pass ``addr`` (one destination for the whole burst) or
    ``addresses=(sockaddr array, lengths)`` from BurstReceiver.address_block.
    """

    def __init__(self, sock, pool, burst: int = 32):
        if burst <= 0:
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

    def send(self, handles, lengths, *, addr=None, addresses=None, release: bool = False,
             timeout: float | None = None) -> int:
        """Send ``lengths[i]`` bytes of object ``handles[i]``; returns how many went.

        Blocks per the socket mode (or ``timeout``) when the socket buffer is
        full; with timeout 0 it returns early with the count sent.  Raises
        OSError (after releasing, if ``release``) on any other error.
        """
        pool = self.pool
        try:
            hs = np.asarray(handles).ravel()
            ls = np.asarray(lengths).ravel()
            if len(hs) != len(ls):
                raise ValueError(f"{len(hs)} handles but {len(ls)} lengths")
            if len(hs) == 0:
                return 0
            if hs.dtype.kind not in "ui" or ls.dtype.kind not in "ui":
                raise TypeError("handles and lengths must be integer arrays")
            if int(hs.min()) < 0 or int(hs.max()) >= pool.capacity:
                raise ValueError("handle outside the pool")
            if int(ls.min()) < 0 or int(ls.max()) > pool.obj_size:
                raise ValueError(f"lengths must be in [0, obj_size={pool.obj_size}]")
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
                self._iov["base"][:k] = base + hs[sent:sent + k].astype(np.uintp) * stride
                self._iov["len"][:k] = ls[sent:sent + k]
                if names is not None:
                    self._msgs["name"][:k] = (names.ctypes.data
                                              + np.arange(sent, sent + k, dtype=np.uintp)
                                              * names.shape[1])
                    self._msgs["namelen"][:k] = namelens[sent:sent + k]
                r = _sys.sendmmsg(self.sock.fileno(), self._msgs_ptr, k,
                                  MSG_DONTWAIT if wait is not None else 0)
                self.calls += 1
                if r < 0:
                    err = -r
                    if err == _errno.EINTR:
                        continue
                    if err in (_errno.EAGAIN, _errno.EWOULDBLOCK) and wait is not None:
                        if wait > 0 and _wait(self.sock, select.POLLOUT, wait):
                            continue
                        break
                    raise _oserror("sendmmsg", err, self.sock)
                sent += r
                self.packets += r
            return sent
        finally:
            if release:
                _release_any(pool, handles)


def _release_any(pool, handles):
    hs = np.asarray(handles).ravel()
    if len(hs):
        release(pool, hs)


def send_burst(sock, pool, handles, lengths, *, addr=None, release: bool = False,
               timeout: float | None = None) -> int:
    """One-shot sendmmsg of pool objects; see BurstSender.send."""
    n = max(1, min(len(handles), 1024))
    return BurstSender(sock, pool, n).send(handles, lengths, addr=addr, release=release,
                                           timeout=timeout)
