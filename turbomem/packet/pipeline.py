"""A three-stage packet pipeline over one Pool and two Rings.

    receive (pcap file or UDP socket) --ring--> classify (vectorised) --ring--> forward

Every buffer comes from one Pool; the rings carry uint32 handles only.
Per-packet metadata (captured and wire length, timestamp) lives in side tables indexed
by handle, the way DPDK keeps it in the mbuf: a handle is owned by exactly
one stage at a time, so the tables need no locking (the ring hand-off orders
the writes).

The ring is injected: ``Pipeline(pool, ring_factory)`` calls
``ring_factory(capacity)`` and uses ``enqueue_burst`` / ``dequeue_burst`` /
``dequeue_burst_wait`` / ``len()``.  ``turbomem.Ring`` is the intended one.

Its naive twin, the baseline it is benchmarked against, lives in
:mod:`turbomem.bench.naive_pipeline`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

import numpy as np
import numpy.typing as npt

from turbomem.errors import PoolEmptyError
from turbomem.packet import parse as _parse
from turbomem.packet.constants import F_MALFORMED, F_TRUNCATED
from turbomem.packet._limits import LiveLimits
from turbomem.packet.io import BurstReceiver, BurstSender
from turbomem.packet.pcap import PcapReader, PcapWriter, Source

if TYPE_CHECKING:
    from turbomem._core import Pool

U32 = npt.NDArray[np.uint32]
#: What a source's read() returns: handles, captured lengths, wire lengths and, optionally, timestamps (ns).
SourceBurst = tuple[Any, ...]

__all__ = [
    "Pipeline",
    "PacketSource",
    "PcapSource",
    "UdpSource",
    "CountSink",
    "PcapSink",
    "UdpSink",
    "forward_mask",
]

_BAD = F_MALFORMED | F_TRUNCATED


def forward_mask(info: np.ndarray, drop_ports: Collection[int] = ()) -> np.ndarray:
    """The forwarding rule: well-formed IP packets not to/from a dropped port."""
    keep = (info["l3"] != _parse.L3_OTHER) & ((info["flags"] & _BAD) == 0)
    if len(drop_ports):
        ports = np.asarray(sorted(drop_ports), dtype=np.uint16)
        has_ports = (info["l4"] == _parse.L4_TCP) | (info["l4"] == _parse.L4_UDP)
        hit = has_ports & (np.isin(info["sport"], ports) | np.isin(info["dport"], ports))
        keep &= ~hit
    return keep


# ------------------------------------------------------------------ sources --

class PacketSource(Protocol):
    """What :meth:`Pipeline.run` reads from (:class:`PcapSource`, :class:`UdpSource`, or yours)."""

    linktype: int

    def read(self, n: int) -> Optional[SourceBurst]:
        """Up to ``n`` packets as (handles, captured lengths, wire lengths[, timestamps ns]); None when done."""

    def close(self) -> None:
        """Release what the source holds."""


class PcapSource:
    """Bursts from a pcap file (the file is replayed as fast as possible)."""

    live = False
    reader: PcapReader
    linktype: int

    def __init__(self, path: Source, pool: Pool, burst: int = 64) -> None:
        self.reader = PcapReader(path, pool, burst)
        self.linktype = self.reader.linktype

    @property
    def truncated(self) -> int:
        """Packets longer than the pool's objects, cut to ``obj_size`` (their wire length is kept)."""
        return self.reader.truncated

    def read(self, n: int) -> Optional[SourceBurst]:
        """Up to ``n`` packets, or None at the end of the file."""
        b = self.reader.read_burst(n)
        if b is None:
            return None
        return b[0], b[1], b[3], b[2]  # handles, captured and wire lengths, timestamps (ns)

    def close(self) -> None:
        """Close the reader."""
        self.reader.close()


class UdpSource:
    """Bursts from a UDP socket until ``count`` packets, ``duration`` s or ``idle`` s of silence."""

    live = True
    linktype: int = 101  # the datagram payloads are parsed as raw IP
    rx: BurstReceiver
    count: Optional[int]
    duration: Optional[float]
    idle: Optional[float]

    def __init__(self, sock: socket.socket, pool: Pool, burst: int = 64, *, count: Optional[int] = None,
                 duration: Optional[float] = None, idle: Optional[float] = 1.0, linktype: int = 101) -> None:
        self.rx = BurstReceiver(sock, pool, burst)
        self.count, self.duration, self.idle = count, duration, idle
        self.linktype = linktype
        self._limits = LiveLimits(count, duration, idle)

    def read(self, n: int) -> Optional[SourceBurst]:
        """Up to ``n`` datagrams (possibly none yet), or None when the source is done."""
        budget = self._limits.budget(n)
        if budget is None:
            return None
        h, ln = self.rx.recv(budget, timeout=0.02)
        self._limits.record(len(h))
        return h, ln, ln, np.full(len(h), time.time_ns(), dtype=np.int64)

    def close(self) -> None:
        """Nothing to release (the socket belongs to the caller)."""


# -------------------------------------------------------------------- sinks --

class CountSink:
    """Counts what is forwarded (packets, bytes) and lets it go.

    A sink is called as ``sink(pool, handles, lengths)``; one whose
    ``wants_metadata`` is true is also given ``wire_lengths`` and
    ``timestamps_ns`` (keyword arguments), one per handle.
    """

    wants_metadata = False
    packets: int
    bytes: int

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def __call__(self, pool: Pool, handles: U32, lengths: U32) -> None:
        """Count one forwarded burst."""
        self.packets += len(handles)
        self.bytes += int(lengths.sum())

    def close(self) -> None:
        """Nothing to release."""


class PcapSink(CountSink):
    """Writes forwarded packets to a pcap file with their timestamps and wire lengths.

    A packet that was cut to the pool's ``obj_size`` on the way in is
    written as a cut record (captured length < original length), as
    tcpdump's snaplen would.
    """

    wants_metadata = True
    writer: PcapWriter

    def __init__(self, path: Source, linktype: int = 1) -> None:
        super().__init__()
        self.writer = PcapWriter(path, linktype=linktype, nanosecond=True)

    def __call__(self, pool: Pool, handles: U32, lengths: U32, wire_lengths: Optional[U32] = None,
                 timestamps_ns: Optional[npt.NDArray[np.int64]] = None) -> None:
        """Write one forwarded burst."""
        self.writer.write_burst(pool, handles, lengths, timestamps_ns, wire_lengths)
        super().__call__(pool, handles, lengths)

    def close(self) -> None:
        """Close the pcap file."""
        self.writer.close()


class UdpSink(CountSink):
    """Sends each forwarded packet as one UDP datagram (sendmmsg) to ``addr``."""

    tx: BurstSender
    addr: tuple[Any, ...]

    def __init__(self, sock: socket.socket, pool: Pool, addr: tuple[Any, ...], burst: int = 64) -> None:
        super().__init__()
        self.tx = BurstSender(sock, pool, burst)
        self.addr = addr

    def __call__(self, pool: Pool, handles: U32, lengths: U32) -> None:
        """Send one forwarded burst."""
        self.tx.send(handles, lengths, addr=self.addr)
        super().__call__(pool, handles, lengths)


# ----------------------------------------------------------------- pipeline --

class _Stage:
    def __init__(self, name):
        self.name = name
        self.packets = 0
        self.bytes = 0
        self.first = None
        self.last = None

    def tick(self, n, nbytes, began=None):
        """Count a batch that this stage started working on at ``began`` (perf_counter)."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now if began is None else began  # one batch still has a duration
        self.last = now
        self.packets += n
        self.bytes += nbytes

    def report(self):
        span = (self.last - self.first) if self.first is not None else 0.0
        return {"stage": self.name, "packets": self.packets, "bytes": self.bytes,
                "seconds": span, "packets_per_sec": self.packets / span if span > 0 else 0.0}


def _result(mode: str, stages, elapsed: float, counters: dict) -> dict:
    """What both pipelines report: per-stage rates, totals and drop counters."""
    rx, _, tx = stages
    return {
        "mode": mode,
        "stages": [st.report() for st in stages],
        "received": rx.packets,
        "forwarded": tx.packets,
        "forwarded_bytes": tx.bytes,
        "seconds": elapsed,
        "packets_per_sec": rx.packets / elapsed if elapsed > 0 else 0.0,
        "drops": counters["dropped_rx_ring"] + counters["dropped_tx_ring"],
        **counters,
    }


class Pipeline:
    """receive -> classify -> forward, three threads, two rings, one pool.

    ``backpressure``: when a ring is full the upstream stage waits (right for
    a file replay) instead of dropping (right for live traffic; the drops
    are counted).  ``slow_stage``: seconds the classify stage sleeps per
    burst, to provoke drops in tests.
    """

    pool: Pool
    ring_factory: Callable[[int], Any]
    drop_ports: tuple[int, ...]
    cap_len: U32
    wire_len: U32
    timestamp: npt.NDArray[np.int64]

    def __init__(self, pool: Pool, ring_factory: Callable[[int], Any], *, ring_size: int = 1024,
                 burst: int = 64, drop_ports: Collection[int] = (), slow_stage: float = 0.0,
                 backpressure: bool = True, stage_burst: int = 2048) -> None:
        self.pool = pool
        self.stage_burst = stage_burst
        self.ring_factory = ring_factory
        self.ring_size = ring_size
        self.burst = burst
        self.drop_ports = tuple(drop_ports)
        self.slow_stage = slow_stage
        self.backpressure = backpressure
        self.cap_len = np.zeros(pool.capacity, dtype=np.uint32)
        self.wire_len = np.zeros(pool.capacity, dtype=np.uint32)
        self.timestamp = np.zeros(pool.capacity, dtype=np.int64)

    def run(self, source: PacketSource, sink: Optional[Callable[..., None]] = None, *,
            linktype: Optional[int] = None) -> dict[str, Any]:
        """Run the three stages until ``source`` is done; returns rates, totals and drop counters.

        ``sink(pool, handles, lengths)`` is called for every forwarded burst
        (default: a :class:`CountSink`); it must not keep the handles.
        """
        pool = self.pool
        sink = CountSink() if sink is None else sink
        linktype = source.linktype if linktype is None else linktype
        rx_ring = self.ring_factory(self.ring_size)
        tx_ring = self.ring_factory(self.ring_size)
        stop = threading.Event()
        rx_done = threading.Event()
        cls_done = threading.Event()
        errors = []
        st_rx, st_cls, st_tx = _Stage("receive"), _Stage("classify"), _Stage("forward")
        counters = {"dropped_rx_ring": 0, "dropped_tx_ring": 0, "filtered": 0, "pool_waits": 0}
        burst = self.burst

        def push(ring, handles, key):
            """Enqueue; on a full ring wait (backpressure) or drop the rest.

            Owns ``handles``: whatever does not make it into the ring goes
            back to the pool, on every path."""
            pending = handles
            try:
                while True:
                    pending = pending[ring.enqueue_burst(pending):]
                    if not len(pending):
                        return
                    if not self.backpressure or stop.is_set():
                        counters[key] += len(pending)
                        break
                    time.sleep(50e-6)
            finally:
                if len(pending):
                    pool.put_bulk(pending)

        def guarded(fn, done):
            def body():
                try:
                    fn()
                except BaseException as err:  # noqa: BLE001 - reported after join
                    errors.append(err)
                    stop.set()
                finally:
                    done.set()
            return body

        def receive():
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    b = source.read(burst)
                except PoolEmptyError:
                    counters["pool_waits"] += 1
                    time.sleep(100e-6)
                    continue
                if b is None:
                    return
                h, ln, wire, *stamps = b  # a source may omit timestamps: then now
                if not len(h):
                    continue
                try:
                    self.cap_len[h] = ln
                    self.wire_len[h] = wire
                    self.timestamp[h] = stamps[0] if stamps else time.time_ns()
                    st_rx.tick(len(h), int(ln.sum()), began)
                except BaseException:
                    pool.put_bulk(h)
                    raise
                push(rx_ring, h, "dropped_rx_ring")

        # Downstream stages take whatever has queued, up to stage_burst: numpy
        # work per call has a fixed cost, so bigger batches are cheaper per packet.
        stage_burst = max(burst, self.stage_burst)

        def stage_loop(ring, upstream_done, work):
            while True:
                h = ring.dequeue_burst_wait(stage_burst, timeout=0.02)
                if not len(h):
                    if upstream_done.is_set() or stop.is_set():
                        h = ring.dequeue_burst(stage_burst)
                        if not len(h):
                            return
                    else:
                        continue
                work(h)  # owns h: hands every handle on or back, errors included

        def classify(h):
            began = time.perf_counter()
            if self.slow_stage:
                time.sleep(self.slow_stage)
            try:
                ln = self.cap_len[h]
                info = _parse.parse(pool, h, ln, linktype=linktype,
                                    wire_lengths=self.wire_len[h])
                keep = forward_mask(info, self.drop_ports)
                fwd, drop = h[keep], h[~keep]
            except BaseException:
                pool.put_bulk(h)
                raise
            st_cls.tick(len(h), int(ln.sum()), began)
            counters["filtered"] += len(drop)
            try:
                if len(drop):
                    pool.put_bulk(drop)
            finally:
                if len(fwd):
                    push(tx_ring, fwd, "dropped_tx_ring")

        def forward(h):
            began = time.perf_counter()
            ln = self.cap_len[h]
            try:
                if getattr(sink, "wants_metadata", False):
                    sink(pool, h, ln, wire_lengths=self.wire_len[h], timestamps_ns=self.timestamp[h])
                else:
                    sink(pool, h, ln)
                st_tx.tick(len(h), int(ln.sum()), began)
            finally:
                pool.put_bulk(h)

        threads = [
            threading.Thread(target=guarded(receive, rx_done), name="tm-receive"),
            threading.Thread(target=guarded(lambda: stage_loop(rx_ring, rx_done, classify),
                                            cls_done), name="tm-classify"),
            threading.Thread(target=guarded(lambda: stage_loop(tx_ring, cls_done, forward),
                                            threading.Event()), name="tm-forward"),
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
        except BaseException:
            stop.set()
            for t in threads:
                t.join()
            raise
        finally:
            elapsed = time.perf_counter() - t0
            # Whatever is still in a ring (only after an error) goes back.
            for ring in (rx_ring, tx_ring):
                while True:
                    left = ring.dequeue_burst(1024)
                    if not len(left):
                        break
                    pool.put_bulk(left)
            source.close()
            close_sink = getattr(sink, "close", None)  # a plain function is a sink too
            if close_sink is not None:
                close_sink()
        if errors:
            raise errors[0]
        return {
            **_result("fast", (st_rx, st_cls, st_tx), elapsed, counters),
            "pool_available": pool.available,
            "pool_capacity": pool.capacity,
        }
