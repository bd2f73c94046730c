"""AF_PACKET receive through a TPACKET_V3 mmap ring, into pool objects.

    with TPacketReceiver(pool, "eth0") as rx:
        handles, lengths = rx.recv(timeout=1.0)     # one packet per pool object

The kernel writes packets into blocks of a ring shared with us (no syscall
per packet, no per-packet wakeup: a block is handed over when full or after
``retire_ms``).  The block walk is compiled (include/turbomem/xsk.h,
``tm_tp3_rx``) and runs without the GIL: it copies each packet ONCE, from
the block into a pool object, and gives each block back to the kernel as
soon as its last packet is copied, in order.  We deliver copies rather than
views of the blocks because a block can only be returned whole: views would
pin a whole block (up to hundreds of packets) until the slowest packet in it
is released, and the pipeline wants pool objects anyway.

Copies of packet data: 2 in all -- the kernel copies the skb into the ring
block (tpacket_rcv), and we copy the block's packet into the pool object.

The socket is created with protocol 0 (it sees nothing), the ring is set up,
and only then bound to ``ifname`` with ETH_P_ALL, so no packet of another
interface ever lands in the ring.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, Optional, TypedDict

import numpy as np
import numpy.typing as npt

from turbomem import _sys
from turbomem._handles import acquire, release
from turbomem.errors import PoolClosedError, TurbomemError
from turbomem.packet._limits import LiveLimits
from turbomem.packet.xdp import _count, validate_timeout

if TYPE_CHECKING:
    from turbomem._core import Pool
    from turbomem.packet._xsk import TPacketV3Ring
    from turbomem.packet.io import BurstSender

__all__ = ["TPacketReceiver", "TPacketSource", "TPacketStats"]

U32 = npt.NDArray[np.uint32]

PACKET_IGNORE_OUTGOING = 23
_POLL_SLICE = 0.05


class TPacketError(TurbomemError, OSError):
    """A TPACKET_V3 socket operation on a closed receiver, or setup failure."""


class TPacketStats(TypedDict):
    """``TPacketReceiver.statistics()``: PACKET_STATISTICS plus the receiver's own counters."""

    #: packets the kernel saw / dropped (ring full) / times the queue froze, since the last read
    tp_packets: int
    tp_drops: int
    tp_freeze_q_cnt: int
    #: packets returned by recv / recv calls made
    packets: int
    calls: int
    bad_headers: int


class TPacketReceiver:
    """TPACKET_V3 rx ring on ``ifname`` delivering into ``pool`` objects.

    ``block_size`` (a power of two, >= page size) x ``block_nr`` bytes of
    ring; ``retire_ms``: the kernel hands over a partly filled block after
    this long; ``burst``: the most packets one ``recv`` returns.  Packets
    longer than ``pool.obj_size`` are cut to it (``wire_lengths`` keeps the
    original length).
    """

    ifindex: int
    pool: Pool
    ifname: str
    burst: int
    block_size: int
    block_nr: int
    sock: socket.socket
    #: wire lengths of the packets the last recv returned
    wire_lengths: U32
    #: packets returned by recv / recv calls made
    packets: int
    calls: int
    _ring: TPacketV3Ring

    def __init__(self, pool: Pool, ifname: str, *, block_size: int = 1 << 18, block_nr: int = 64,
                 retire_ms: int = 2, burst: int = 256) -> None:
        from turbomem.packet import _xsk

        self._closed = True
        self._lock = threading.Lock()
        if pool.closed:
            raise PoolClosedError(f"{pool!r} is closed")
        if (isinstance(block_size, bool) or not isinstance(block_size, int)
                or block_size < _sys.PAGE_SIZE or block_size & (block_size - 1) or block_size > 1 << 26):
            raise ValueError(f"block_size must be a power of two in [page size, 64 MiB], got {block_size!r}")
        if isinstance(block_nr, bool) or not isinstance(block_nr, int) or not 1 <= block_nr <= 4096:
            raise ValueError(f"block_nr must be in [1, 4096], got {block_nr!r}")
        if isinstance(retire_ms, bool) or not isinstance(retire_ms, int) or not 1 <= retire_ms <= 10000:
            raise ValueError(f"retire_ms must be in [1, 10000], got {retire_ms!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 65536:
            raise ValueError(f"burst must be in [1, 65536], got {burst!r}")
        self.ifindex = _sys.if_nametoindex(ifname)
        self.pool, self.ifname, self.burst = pool, ifname, burst
        self.block_size, self.block_nr = block_size, block_nr
        self._map: Optional[tuple[int, int]] = None
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            fd = self.sock.fileno()
            _sys.setsockopt_raw(fd, _sys.SOL_PACKET, PACKET_IGNORE_OUTGOING,
                                (1).to_bytes(4, "little"), "setsockopt(PACKET_IGNORE_OUTGOING)")
            _sys.tpacket_v3_rx_ring(fd, block_size, block_nr, 2048, retire_ms)
            length = block_size * block_nr
            addr = _sys.mmap(length, _sys.PROT_READ | _sys.PROT_WRITE,
                             _sys.MAP_SHARED | _sys.MAP_POPULATE, fd=fd)
            self._map = (addr, length)
            self._ring = _xsk.TPacketV3Ring(addr, block_size, block_nr)
            self.sock.bind((ifname, _sys.ETH_P_ALL))
        except BaseException:
            self._teardown()
            raise
        self._caplen = np.zeros(burst, dtype=np.uint32)
        self._wirelen = np.zeros(burst, dtype=np.uint32)
        self.wire_lengths = np.zeros(0, dtype=np.uint32)
        self.packets = 0
        self.calls = 0
        self._closed = False

    def _teardown(self) -> None:
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.detach()
        if self._map is not None:
            _sys.munmap(*self._map)
            self._map = None
        self.sock.close()

    def close(self) -> None:
        """Unmap the ring and close the socket (idempotent, any thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._teardown()

    def __del__(self) -> None:
        """Close the receiver if nobody did."""
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> TPacketReceiver:
        """The receiver itself; ``with`` closes it at the end of the block."""
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        """Close the receiver; exceptions propagate."""
        self.close()
        return False

    def fileno(self) -> int:
        """The AF_PACKET socket's file descriptor (-1 once closed), for poll/select."""
        return self.sock.fileno()

    def _take(self, n: int) -> Optional[tuple[U32, U32, U32]]:
        """One compiled pass (lock held): returns (handles, caplens, wirelens)."""
        if not self._ring.ready():
            return None
        handles = acquire(self.pool, n)
        k = 0
        try:
            k = self._ring.rx(self.pool, handles, self._caplen[:len(handles)],
                              self._wirelen[:len(handles)])
            return handles[:k].copy(), self._caplen[:k].copy(), self._wirelen[:k].copy()
        finally:
            release(self.pool, handles[k:])

    def recv(self, max_packets: Optional[int] = None, *,
             timeout: Optional[float] = None) -> tuple[U32, U32]:
        """Up to ``max_packets`` (default ``burst``) packets as ``(handles, lengths)``.

        Packet i is ``lengths[i]`` bytes at the start of pool object
        ``handles[i]``; ``self.wire_lengths`` holds the lengths on the wire of
        the last call.  ``timeout``: None waits for the first packet, 0 never
        waits, t > 0 waits up to t seconds; Ctrl-C interrupts a wait.
        """
        wait = validate_timeout(timeout)
        n = self.burst if max_packets is None else _count(max_packets)
        if n < 0:
            raise ValueError(f"max_packets must be >= 0, got {max_packets!r}")
        n = min(n, self.burst)
        deadline = None if wait is None else time.monotonic() + wait
        poller: Optional[select.poll] = None
        empty = np.zeros(0, dtype=np.uint32)
        while True:
            with self._lock:
                if self._closed:
                    raise TPacketError(9, f"TPACKET_V3 receiver on {self.ifname} is closed")
                self.calls += 1
                got = self._take(n) if n else None
                if got is not None and len(got[0]) or n == 0:
                    if got is None:
                        got = (empty, empty.copy(), empty.copy())
                    self.packets += len(got[0])
                    self.wire_lengths = got[2]
                    return got[0], got[1]
                fd = self.sock.fileno()
            left = _POLL_SLICE if deadline is None else min(_POLL_SLICE, deadline - time.monotonic())
            if left <= 0:
                self.wire_lengths = empty
                return empty, empty.copy()
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLERR)
            events = poller.poll(max(1, int(left * 1000)))
            if events and events[0][1] & (select.POLLERR | select.POLLNVAL | select.POLLHUP):
                self._raise_socket_error()

    def _raise_socket_error(self) -> None:
        """POLLERR: the interface went down or away; say so instead of spinning."""
        import os

        with self._lock:
            if self._closed:
                raise TPacketError(9, f"TPACKET_V3 receiver on {self.ifname} is closed")
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise TPacketError(err, f"TPACKET_V3 receiver on {self.ifname}: {os.strerror(err)}")
        time.sleep(_POLL_SLICE)  # an error already reported once: do not spin

    def statistics(self) -> TPacketStats:
        """PACKET_STATISTICS (reading resets the kernel's counters) plus ours."""
        with self._lock:
            if self._closed:
                raise TPacketError(9, "receiver is closed")
            st = _sys.getsockopt_struct(self.sock.fileno(), _sys.SOL_PACKET, _sys.PACKET_STATISTICS,
                                        _sys.TpacketStatsV3, "getsockopt(PACKET_STATISTICS)")
            return {"tp_packets": int(st.tp_packets), "tp_drops": int(st.tp_drops),
                    "tp_freeze_q_cnt": int(st.tp_freeze_q_cnt), "packets": self.packets,
                    "calls": self.calls, "bad_headers": int(self._ring.bad_headers)}


class TPacketSource:
    """A turbomem.pipeline source (``examples/pipeline.py --source packet:IFACE``)."""

    live: bool = True
    linktype: int = 1  # Ethernet
    rx: TPacketReceiver
    count: Optional[int]
    duration: Optional[float]
    idle: Optional[float]

    def __init__(self, pool: Pool, ifname: str, *, count: Optional[int] = None,
                 duration: Optional[float] = None, idle: Optional[float] = 1.0,
                 **kw: Any) -> None:
        """Open a :class:`TPacketReceiver` on ``ifname``; ``kw`` goes to it."""
        self.rx = TPacketReceiver(pool, ifname, **kw)
        self.count, self.duration, self.idle = count, duration, idle
        self._limits = LiveLimits(count, duration, idle)

    def read(self, n: int) -> Optional[tuple[U32, U32, U32]]:
        """Up to ``n`` packets as (handles, captured lengths, wire lengths) (possibly none
        yet), or None when count, duration or idle is reached."""
        budget = self._limits.budget(n)
        if budget is None:
            return None
        h, ln = self.rx.recv(budget, timeout=0.02)
        self._limits.record(len(h))
        return h, ln, self.rx.wire_lengths

    def close(self) -> None:
        """Close the receiver."""
        self.rx.close()


class PacketSink:
    """A pipeline sink that transmits on ``ifname`` through an AF_PACKET socket
    (``examples/pipeline.py --sink packet:IFACE``): ``sendmmsg`` straight from
    the pool objects (turbomem.packet.io.BurstSender), one kernel copy per packet,
    no TX ring (a TPACKET TX ring would add a copy into the ring)."""

    sock: socket.socket
    tx: BurstSender
    #: packets / bytes sent
    packets: int
    bytes: int

    def __init__(self, pool: Pool, ifname: str, burst: int = 256) -> None:
        """Bind a raw AF_PACKET socket (qdisc bypass) to ``ifname``."""
        from turbomem.packet.io import BurstSender

        _sys.if_nametoindex(ifname)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(_sys.SOL_PACKET, _sys.PACKET_QDISC_BYPASS, 1)
            self.sock.bind((ifname, 0))
        except BaseException:
            self.sock.close()
            raise
        self.tx = BurstSender(self.sock, pool, burst)
        self.packets = 0
        self.bytes = 0

    def __call__(self, pool: Pool, handles: U32, lengths: U32) -> None:
        """Send the burst (waits up to 0.1 s for room; what does not go is not sent)."""
        if not len(handles):
            return
        k = self.tx.send(handles, lengths, timeout=0.1)
        self.packets += k
        self.bytes += int(np.asarray(lengths)[:k].sum())

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
