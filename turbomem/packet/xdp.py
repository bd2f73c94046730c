"""AF_XDP sockets whose UMEM is a TurboMem pool.

    pool = tm.Pool(2048, 8192)                      # stride 2048: the UMEM frame size
    with XdpSocket(pool, "eth0", queue=0) as xsk:
        handles, lengths = xsk.recv(timeout=1.0)    # frames the kernel filled: pool objects
        data = pool.view(h)[xsk.rx_offset:xsk.rx_offset + n]
        xsk.send(handles, lengths, offset=xsk.rx_offset)  # the completion ring gives them back

The pool's region is registered as the socket's UMEM with chunk size =
``pool.stride`` (2048 or 4096; the region is page-aligned because it is an
mmap).  A frame's UMEM address is ``handle * stride``, so a received
descriptor *is* a pool handle: ``recv`` returns handles and lengths, and the
packet bytes are the pool object's bytes from ``rx_offset`` on (the kernel
always leaves XDP_PACKET_HEADROOM = 256 bytes in front).  No copy is made on
the user side.  Copies of packet data between the wire and the pool:

* zero-copy bind (``mode="zerocopy"``, drivers with AF_XDP ZC support): 0;
  the NIC DMAs into the pool object;
* copy bind (``mode="copy"``, and every driver without ZC, e.g. veth): 1;
  the kernel copies the packet from its own buffer (skb or XDP frame) into
  the pool object, in xsk_rcv.  (veth copies a locally sent skb once more
  before that when it lacks the 256 bytes of XDP headroom.)

``xsk.mode`` says which one the kernel gave us (``XDP_OPTIONS``), and
``xsk.xdp_mode`` whether the XDP program runs in the driver (``"drv"``) or in
the generic skb path (``"skb"``).

The fill ring is kept full from ``pool`` with bulk gets, received frames are
handed to the caller (who returns them with ``pool.put_bulk`` when done),
transmitted frames return to the pool from the completion ring.  Every frame
the kernel holds is tracked (one byte per pool object), so ``close()`` puts
back exactly the frames that were with the kernel.

The XDP program.  We load our own six-instruction program through ``bpf()``
(``turbomem._sys.xsk_redirect_program``) rather than libxdp/libbpf: it needs
no compiled object file shipped in the package or built at install time, no
C library at run time and no dispatcher program; the program is just
``bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS)``.  It is attached
through a *bpf link* (``BPF_LINK_CREATE``), so detaching is closing one fd:
on ``close()``, on an exception in ``__exit__``, from a weakref finalizer at
exit, and -- because the kernel detaches a link when its last fd goes away --
even when the process is killed.  All sockets on one interface share one
program and XSKMAP (one slot per queue); queues without a socket pass their
packets to the kernel stack.
"""

from __future__ import annotations

import math
import os
import select
import threading
import time
import weakref
from numbers import Real
from typing import (TYPE_CHECKING, Any, Literal, Optional, SupportsIndex, TypedDict, cast,
                    overload)

import numpy as np
import numpy.typing as npt

from turbomem import _sys
from turbomem.errors import PoolClosedError, TurbomemError
from turbomem.packet._limits import LiveLimits

if TYPE_CHECKING:
    from turbomem._core import Pool
    from turbomem.packet._xsk import XskRings

__all__ = ["XdpSocket", "XdpError", "XdpSource", "XdpSink", "XdpStats", "attached_program",
           "validate_timeout", "FRAME_SIZES"]

U32 = npt.NDArray[np.uint32]

FRAME_SIZES: tuple[int, int] = (2048, 4096)
_POLL_SLICE = 0.05  # a blocked recv looks at close() this often (seconds)


class XdpError(TurbomemError, OSError):
    """AF_XDP setup failed (the message says which step and why)."""


class XdpStats(TypedDict):
    """``XdpSocket.statistics()``: the kernel's XDP_STATISTICS plus the socket's own counters."""

    rx_dropped: int
    rx_invalid_descs: int
    tx_invalid_descs: int
    rx_ring_full: int
    rx_fill_ring_empty_descs: int
    tx_ring_empty_descs: int
    #: frames returned by recv / queued by send / recv calls made
    packets: int
    sent: int
    calls: int
    bad_descriptors: int
    in_kernel: int
    #: "zerocopy" or "copy"
    mode: str
    #: "drv", "skb", or None for a tx-only socket (no program)
    xdp_mode: Optional[str]


def validate_timeout(timeout: Optional[float]) -> Optional[float]:
    """None, or a finite real >= 0 (as float); anything else raises."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, Real):
        raise TypeError(f"timeout must be a real number or None, got {type(timeout).__name__}")
    t = float(timeout)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"timeout must be finite and >= 0, or None, got {timeout!r}")
    return t


def _count(value: SupportsIndex) -> int:
    """An int (not a bool, not a float) for counts given by the caller."""
    if isinstance(value, bool):
        raise TypeError("a count must be an int, not a bool")
    import operator

    return operator.index(value)


def _rx_queue_count(ifname: str) -> int:
    try:
        return sum(1 for q in os.listdir(f"/sys/class/net/{ifname}/queues") if q.startswith("rx-"))
    except OSError:
        return 0


def attached_program(ifname: str) -> Optional[int]:
    """The id of the XDP program attached to ``ifname`` (any mode), or None.

    Reads ``ip -d link show`` -- used by the tests to prove that nothing stays
    attached."""
    import subprocess

    out = subprocess.run(["ip", "-d", "link", "show", "dev", ifname], capture_output=True,
                         text=True, check=True).stdout
    for word_line in out.splitlines():
        parts = word_line.split()
        if parts[:1] == ["prog/xdp"] and "id" in parts:
            return int(parts[parts.index("id") + 1])
    return None


# ---------------------------------------------------------- XDP program ----

class _Program:
    """Our redirect program + XSKMAP attached (via a bpf link) to one interface."""

    xdp_mode: str

    def __init__(self, ifname: str, ifindex: int, xdp_mode: str, slots: int) -> None:
        self.ifname, self.ifindex, self.slots = ifname, ifindex, slots
        self.users = 0
        self._fds: list[int] = []
        try:
            self.map_fd = _sys.bpf_create_xskmap(slots)
            self._fds.append(self.map_fd)
            self.prog_fd = _sys.bpf_load_xdp_program(_sys.xsk_redirect_program(self.map_fd))
            self._fds.append(self.prog_fd)
            tries = {"auto": ("drv", "skb"), "drv": ("drv",), "skb": ("skb",)}[xdp_mode]
            errors: list[str] = []
            self.link_fd: Optional[int] = None
            for m in tries:
                flag = _sys.XDP_FLAGS_DRV_MODE if m == "drv" else _sys.XDP_FLAGS_SKB_MODE
                try:
                    self.link_fd = _sys.bpf_link_xdp(self.prog_fd, ifindex, flag)
                    self.xdp_mode = m
                    break
                except OSError as exc:
                    errors.append(str(exc))
            if self.link_fd is None:
                raise XdpError(f"cannot attach an XDP program to {ifname}: " + "; ".join(errors))
            self._fds.append(self.link_fd)
        except BaseException:
            self.close()
            raise
        # The kernel detaches when the link fd closes; this closes it at exit
        # even when nobody called close().
        self._finalizer = weakref.finalize(self, _close_fds, list(self._fds))

    def close(self) -> None:
        """Close the link, program and map fds (detaching the program)."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
        else:
            _close_fds(self._fds)
        self._fds = []


def _close_fds(fds: list[int]) -> None:
    # The link first: closing it detaches the program from the interface.
    for fd in reversed(fds):
        try:
            os.close(fd)
        except OSError:
            pass


_programs: dict[int, _Program] = {}
_programs_lock = threading.Lock()
_live_sockets: "weakref.WeakSet[XdpSocket]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child inherits every fd: without this, a child that outlives the
    # parent's close() keeps the program attached (the link lives while any
    # copy of its fd does).
    global _programs_lock
    _programs_lock = threading.Lock()
    for prog in list(_programs.values()):
        prog.close()
    _programs.clear()
    for sock in list(_live_sockets):
        sock._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _acquire_program(ifname: str, ifindex: int, xdp_mode: str, slots: int) -> _Program:
    with _programs_lock:
        prog = _programs.get(ifindex)
        if prog is not None and xdp_mode not in ("auto", prog.xdp_mode):
            raise XdpError(f"{ifname} already has our XDP program in {prog.xdp_mode} mode, "
                           f"{xdp_mode} mode was asked")
        if prog is None:
            prog = _Program(ifname, ifindex, xdp_mode, slots)
            _programs[ifindex] = prog
        prog.users += 1
        return prog


def _release_program(prog: _Program) -> None:
    with _programs_lock:
        prog.users -= 1
        if prog.users == 0:
            if _programs.get(prog.ifindex) is prog:
                del _programs[prog.ifindex]
            prog.close()


# -------------------------------------------------------------- socket ----

class _TeardownState(TypedDict, total=False):
    # What XdpSocket's finalizer needs (no reference to the socket).
    fd: int
    maps: list[tuple[int, int]]
    program: Optional[_Program]
    rings: XskRings
    pool: Pool
    anchor: memoryview
    queue: int


class XdpSocket:
    """One AF_XDP socket bound to ``ifname``/``queue`` with ``pool`` as its UMEM.

    ``XdpSocket(pool, ifname, queue=0, *, mode="auto", xdp_mode="auto",
    ring_size=2048, rx=True, tx=True, need_wakeup=True, batch=256)``

    * ``mode``: "zerocopy", "copy" or "auto" (zero copy when the driver can,
      else copy); ``self.mode`` says what was granted.
    * ``xdp_mode``: where the program runs, "drv", "skb" (generic) or
      "auto" (drv, else skb); ``self.xdp_mode`` says which.
    * ``ring_size``: entries of each of the four rings (power of two).
    * ``batch``: the most packets one ``recv`` returns.

    A socket is used by one thread at a time for receive and one for send
    (calls are serialised by a lock); ``close()`` may come from any thread
    and wakes a blocked ``recv`` within 50 ms.
    """

    ifindex: int
    pool: Pool
    ifname: str
    queue: int
    ring_size: int
    batch: int
    #: bytes in front of each received packet in its frame (XDP_PACKET_HEADROOM)
    rx_offset: int
    #: frames returned by recv / queued by send / recv calls made
    packets: int
    sent: int
    calls: int
    #: "zerocopy" or "copy": what the kernel granted
    mode: str
    #: "drv" or "skb": where the XDP program runs; None for a tx-only socket
    xdp_mode: Optional[str]
    _rings: XskRings

    def __init__(self, pool: Pool, ifname: str, queue: int = 0, *, mode: str = "auto",
                 xdp_mode: str = "auto", ring_size: int = 2048, rx: bool = True, tx: bool = True,
                 need_wakeup: bool = True, batch: int = 256) -> None:
        from turbomem.packet import _xsk

        self._closed = True  # until setup finishes
        self._lock = threading.Lock()
        if mode not in ("auto", "copy", "zerocopy"):
            raise ValueError(f"mode must be 'auto', 'copy' or 'zerocopy', got {mode!r}")
        if xdp_mode not in ("auto", "drv", "skb"):
            raise ValueError(f"xdp_mode must be 'auto', 'drv' or 'skb', got {xdp_mode!r}")
        if isinstance(queue, bool) or not isinstance(queue, int) or queue < 0:
            raise ValueError(f"queue must be an int >= 0, got {queue!r}")
        if (isinstance(ring_size, bool) or not isinstance(ring_size, int) or ring_size < 64
                or ring_size & (ring_size - 1) or ring_size > 1 << 20):
            raise ValueError(f"ring_size must be a power of two in [64, 2**20], got {ring_size!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 65536:
            raise ValueError(f"batch must be an int in [1, 65536], got {batch!r}")
        if not (rx or tx):
            raise ValueError("a socket needs rx, tx or both")
        if pool.closed:
            raise PoolClosedError(f"{pool!r} is closed")
        if pool.stride not in FRAME_SIZES:
            raise ValueError(f"an AF_XDP UMEM needs frames of 2048 or 4096 bytes: the pool's stride "
                             f"is {pool.stride} (make the pool with obj_size 2048 or 4096, or align "
                             f"to one of them)")
        if pool.obj_size != pool.stride:
            raise ValueError(f"an AF_XDP frame is the whole {pool.stride}-byte stride, but the pool's "
                             f"objects are {pool.obj_size} bytes: packets would not fit in the "
                             f"objects (make the pool with obj_size {pool.stride})")
        if pool.address % _sys.PAGE_SIZE:
            raise ValueError("the pool's region is not page-aligned")
        self.ifindex = _sys.if_nametoindex(ifname)  # ValueError / OSError(ENODEV)
        nq = _rx_queue_count(ifname)
        if queue >= max(nq, 1):
            raise ValueError(f"{ifname} has {nq} rx queue(s): queue {queue} does not exist")

        self.pool, self.ifname, self.queue = pool, ifname, queue
        self.ring_size, self.batch = ring_size, batch
        self.rx_offset = _sys.XDP_PACKET_HEADROOM
        self._shift = pool.stride.bit_length() - 1
        self._maps: list[tuple[int, int]] = []
        self._program: Optional[_Program] = None
        self._fd = -1
        self._need_wakeup = need_wakeup
        self._has_rx, self._has_tx = rx, tx
        # The UMEM pins the region: hold an anchor so it stays mapped while the
        # kernel may write into it, even if the pool is closed first.
        self._anchor = pool.buffer()
        self._rings = _xsk.XskRings(pool, self._shift)
        self._h = np.zeros(batch, dtype=np.uint32)
        self._len = np.zeros(batch, dtype=np.uint32)
        self._off = np.zeros(batch, dtype=np.uint32)
        self.packets = self.sent = self.calls = 0
        try:
            self._setup(mode, xdp_mode, nq)
        except BaseException:
            self._teardown()
            raise
        self._closed = False
        self._finalizer = weakref.finalize(self, XdpSocket._teardown_state, self._state())
        _live_sockets.add(self)

    # ----- setup / teardown

    def _setup(self, mode: str, xdp_mode: str, nq: int) -> None:
        s = _sys
        from turbomem.packet import _xsk

        try:
            fd = s.xsk_socket()
        except OSError as exc:
            # _sys raises OSError(errno, ...) from a failed syscall: errno is always set.
            raise XdpError(exc.errno, f"socket(AF_XDP): {os.strerror(cast(int, exc.errno))}"
                           + (" (needs CAP_NET_RAW)" if exc.errno == 1 else "")) from None
        self._fd = fd
        nbytes = self.pool.capacity * self.pool.stride
        s.xsk_umem_reg(fd, self.pool.address, nbytes, self.pool.stride)
        n = self.ring_size
        s.xsk_set_ring_size(fd, s.XDP_UMEM_FILL_RING, n, "XDP_UMEM_FILL_RING")
        s.xsk_set_ring_size(fd, s.XDP_UMEM_COMPLETION_RING, n, "XDP_UMEM_COMPLETION_RING")
        if self._has_rx:
            s.xsk_set_ring_size(fd, s.XDP_RX_RING, n, "XDP_RX_RING")
        if self._has_tx:
            s.xsk_set_ring_size(fd, s.XDP_TX_RING, n, "XDP_TX_RING")
        off = s.getsockopt_struct(fd, s.SOL_XDP, s.XDP_MMAP_OFFSETS, s.XdpMmapOffsets,
                                  "getsockopt(XDP_MMAP_OFFSETS)")
        plan: list[tuple[int, str, int, int]] = [(_xsk.FILL, "fr", s.XDP_UMEM_PGOFF_FILL_RING, 8),
                (_xsk.COMPLETION, "cr", s.XDP_UMEM_PGOFF_COMPLETION_RING, 8)]
        if self._has_rx:
            plan.append((_xsk.RX, "rx", s.XDP_PGOFF_RX_RING, s.XDP_DESC_SIZE))
        if self._has_tx:
            plan.append((_xsk.TX, "tx", s.XDP_PGOFF_TX_RING, s.XDP_DESC_SIZE))
        for which, name, pgoff, dsize in plan:
            length = getattr(off, f"{name}_desc") + n * dsize
            addr = s.mmap(length, s.PROT_READ | s.PROT_WRITE, s.MAP_SHARED | s.MAP_POPULATE,
                          fd=fd, offset=pgoff)
            self._maps.append((addr, length))
            self._rings.attach(which, addr, getattr(off, f"{name}_producer"),
                               getattr(off, f"{name}_consumer"), getattr(off, f"{name}_desc"),
                               getattr(off, f"{name}_flags"), n)
        if self._has_rx:
            self._rings.refill(n)
        flags = s.XDP_USE_NEED_WAKEUP if self._need_wakeup else 0
        flags |= {"auto": 0, "copy": s.XDP_COPY, "zerocopy": s.XDP_ZEROCOPY}[mode]
        try:
            s.xsk_bind(fd, self.ifindex, self.queue, flags)
        except OSError as exc:
            hint = ""
            if mode == "zerocopy":
                hint = f" ({self.ifname}'s driver may not support AF_XDP zero copy; use mode='copy' or 'auto')"
            raise XdpError(exc.errno, f"{exc.strerror}{hint}") from None
        self.mode = "zerocopy" if s.xsk_options(fd) & s.XDP_OPTIONS_ZEROCOPY else "copy"
        if self._has_rx:
            self._program = _acquire_program(self.ifname, self.ifindex, xdp_mode, max(nq, 1))
            self.xdp_mode = self._program.xdp_mode
            s.bpf_map_update_u32(self._program.map_fd, self.queue, fd)
        else:
            self.xdp_mode = None

    def _state(self) -> _TeardownState:
        # What the finalizer needs (no reference to self).
        return {"fd": self._fd, "maps": self._maps, "program": self._program,
                "rings": self._rings, "pool": self.pool, "anchor": self._anchor,
                "queue": self.queue}

    @staticmethod
    def _teardown_state(st: _TeardownState) -> None:
        prog = st.get("program")
        if prog is not None:
            st["program"] = None
            try:
                _sys.bpf_map_delete_u32(prog.map_fd, st["queue"])
            except OSError:
                pass
            _release_program(prog)
        if st["fd"] >= 0:
            # After close() returns the kernel no longer touches the UMEM
            # (xsk_release unbinds and waits for in-flight receives).
            os.close(st["fd"])
            st["fd"] = -1
        st["rings"].detach_all()
        for addr, length in st["maps"]:
            _sys.munmap(addr, length)
        st["maps"] = []
        left = st["rings"].take_all_owned()
        pool = st["pool"]
        if len(left) and not pool.closed:
            pool.put_bulk(left)
        anchor = st.pop("anchor", None)
        if anchor is not None:
            anchor.release()

    def _teardown(self) -> None:
        XdpSocket._teardown_state(self._state())

    def _forget_in_child(self) -> None:
        """After fork, in the child: this socket is the parent's.  Close the
        inherited fds (or the child would keep the XDP program attached after
        the parent closes), and give the frames the kernel held back to the
        child's private copy of the pool.  No lock is taken: a parent thread
        may have held it at the fork."""
        self._lock = threading.Lock()
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._rings.detach_all()
        left = self._rings.take_all_owned()
        if len(left) and not self.pool.closed:
            self.pool.put_bulk(left)

    def close(self) -> None:
        """Detach (if last on the interface), close, and return every frame the
        kernel held to the pool.  Idempotent; safe from another thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> XdpSocket:
        """The socket itself; ``with`` closes it at the end of the block."""
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        """Close the socket; exceptions propagate."""
        self.close()
        return False

    def fileno(self) -> int:
        """The AF_XDP socket's file descriptor, for poll/select (meaningless once closed)."""
        return self._fd

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.mode} mode, xdp {self.xdp_mode}"
        return f"<XdpSocket {self.ifname} queue {self.queue}, {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise XdpError(9, f"{self!r}: socket is closed")

    # ----- receive

    def _take(self, n: int) -> int:
        """Refill, then take up to n frames (lock held)."""
        rings = self._rings
        rings.refill(self.ring_size)
        if self._need_wakeup and rings.needs_wakeup(0):
            rings.kick_rx(self._fd)
        return rings.rx(self._h[:n], self._len[:n], self._off[:n])

    @overload
    def recv(self, max_packets: Optional[int] = ..., *, timeout: Optional[float] = ...,
             offsets: Literal[False] = ...) -> tuple[U32, U32]: ...

    @overload
    def recv(self, max_packets: Optional[int] = ..., *, timeout: Optional[float] = ...,
             offsets: Literal[True]) -> tuple[U32, U32, U32]: ...

    @overload
    def recv(self, max_packets: Optional[int] = ..., *, timeout: Optional[float] = ...,
             offsets: bool) -> tuple[U32, U32] | tuple[U32, U32, U32]: ...

    def recv(self, max_packets: Optional[int] = None, *, timeout: Optional[float] = None,
             offsets: bool = False) -> tuple[U32, U32] | tuple[U32, U32, U32]:
        """Up to ``max_packets`` (default ``batch``) received frames.

        Returns ``(handles, lengths)`` (uint32 arrays; packet i is
        ``lengths[i]`` bytes at ``rx_offset`` in pool object ``handles[i]``),
        or ``(handles, lengths, offsets)`` with ``offsets=True``.  The caller
        owns the handles.  ``timeout``: None waits for the first packet, 0
        never waits, t > 0 waits up to t seconds; Ctrl-C interrupts a wait.
        """
        wait = validate_timeout(timeout)
        if not self._has_rx:
            raise ValueError("this socket was made with rx=False")
        n = self.batch if max_packets is None else _count(max_packets)
        if n < 0:
            raise ValueError(f"max_packets must be >= 0, got {max_packets!r}")
        n = min(n, self.batch)
        deadline = None if wait is None else time.monotonic() + wait
        poller: Optional[select.poll] = None
        while True:
            with self._lock:
                self._check_open()
                k = self._take(n) if n else 0
                self.calls += 1
                if k or n == 0:
                    self.packets += k
                    out = (self._h[:k].copy(), self._len[:k].copy())
                    return out + (self._off[:k].copy(),) if offsets else out
                fd = self._fd
            left = _POLL_SLICE if deadline is None else min(_POLL_SLICE, deadline - time.monotonic())
            if left <= 0:
                empty = np.zeros(0, dtype=np.uint32)
                return (empty, empty.copy(), empty.copy()) if offsets else (empty, empty.copy())
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
            # poll() releases the GIL; a signal interrupts it and Python runs
            # the handler (KeyboardInterrupt propagates from here).
            if not poller.poll(max(1, int(left * 1000))):
                self._check_bound()

    def _check_bound(self) -> None:
        """Raise if the kernel unbound the socket (its interface went away):
        a blocking recv would otherwise wait forever."""
        import errno as _errno

        with self._lock:
            self._check_open()
            err = self._rings.kick_rx(self._fd)
        if err in (_errno.ENXIO, _errno.ENETDOWN, _errno.ENODEV):
            raise XdpError(err, f"{self!r}: the socket is no longer bound ({os.strerror(err)}); "
                                f"was {self.ifname} removed?")

    # ----- transmit

    def send(self, handles: npt.ArrayLike, lengths: npt.ArrayLike, *, offset: int = 0) -> int:
        """Queue frames for transmit: ``lengths[i]`` bytes at ``offset`` of object
        ``handles[i]``.  Returns how many were queued; those now belong to the
        socket and go back to the pool when the kernel completes them.  The
        rest (when the tx ring is full) stay the caller's."""
        if not self._has_tx:
            raise ValueError("this socket was made with tx=False")
        hs = np.ascontiguousarray(handles)
        ls = np.ascontiguousarray(lengths)
        if hs.ndim != 1 or ls.ndim != 1 or len(hs) != len(ls):
            raise ValueError("handles and lengths must be 1-D arrays of one length")
        if len(hs) and (hs.dtype.kind not in "ui" or ls.dtype.kind not in "ui"):
            raise TypeError("handles and lengths must be integer arrays")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        stride = self.pool.stride
        if len(hs):
            if int(hs.min()) < 0 or int(hs.max()) >= self.pool.capacity:
                raise ValueError("handle outside the pool")
            if int(ls.min()) < 1 or int(ls.max()) + offset > stride:
                raise ValueError(f"each length must be >= 1 and offset + length <= {stride}")
            if len(np.unique(hs)) != len(hs):
                raise ValueError("a handle appears twice in one send")
            is_in_use = self.pool.is_in_use
            for h in hs.tolist():
                if not is_in_use(h):
                    raise ValueError(f"handle {h} is free in the pool: only objects you hold can be sent")
        hs = hs.astype(np.uint32, copy=False)
        ls = ls.astype(np.uint32, copy=False)
        with self._lock:
            self._check_open()
            owned = self._rings.owned_array()[hs] != 0
            if owned.any():
                raise ValueError(f"handle {int(hs[owned][0])} is already with the kernel "
                                 f"(sent and not completed, or on the fill ring)")
            self._rings.complete()
            k = self._rings.tx(hs, ls, offset) if len(hs) else 0
            if k and (not self._need_wakeup or self._rings.needs_wakeup(3)):
                self._rings.kick_tx(self._fd)
            self.sent += k
            return k

    def complete(self, timeout: Optional[float] = 0) -> int:
        """Return transmitted frames to the pool; waits up to ``timeout`` for
        everything in flight on tx (None: until done).  Returns how many."""
        wait = validate_timeout(timeout)
        deadline = None if wait is None else time.monotonic() + wait
        total = 0
        while True:
            with self._lock:
                self._check_open()
                if self._need_wakeup and self._rings.needs_wakeup(3) or not self._need_wakeup:
                    self._rings.kick_tx(self._fd)
                total += self._rings.complete()
                pending = self._rings.tx_inflight
            if pending == 0 or (deadline is not None and time.monotonic() >= deadline):
                return total
            time.sleep(0.0005)

    @property
    def in_flight_tx(self) -> int:
        """Frames sent and not yet completed."""
        return 0 if self._closed else int(self._rings.tx_inflight)

    @property
    def in_kernel(self) -> int:
        """Frames the kernel holds for this socket (fill ring, in flight, tx)."""
        return 0 if self._closed else int(self._rings.in_kernel)

    def statistics(self) -> XdpStats:
        """The kernel's XDP_STATISTICS for this socket, plus our own counters."""
        with self._lock:
            self._check_open()
            st = _sys.getsockopt_struct(self._fd, _sys.SOL_XDP, _sys.XDP_STATISTICS,
                                        _sys.XdpStatistics, "getsockopt(XDP_STATISTICS)")
            return XdpStats(
                rx_dropped=int(st.rx_dropped), rx_invalid_descs=int(st.rx_invalid_descs),
                tx_invalid_descs=int(st.tx_invalid_descs), rx_ring_full=int(st.rx_ring_full),
                rx_fill_ring_empty_descs=int(st.rx_fill_ring_empty_descs),
                tx_ring_empty_descs=int(st.tx_ring_empty_descs),
                packets=self.packets, sent=self.sent, calls=self.calls,
                bad_descriptors=int(self._rings.bad_descriptors),
                in_kernel=int(self._rings.in_kernel), mode=self.mode, xdp_mode=self.xdp_mode)


# ------------------------------------------------------- pipeline glue ----

class XdpSource:
    """A turbomem.pipeline source over AF_XDP (``examples/pipeline.py --source xdp:IFACE``).

    turbomem.packet.parse reads packets at byte 0 of their object, so each packet is
    moved from ``rx_offset`` to the start of its own frame (one copy inside a
    frame that is already in cache).  Stops after ``count`` packets,
    ``duration`` s, or ``idle`` s of silence."""

    live: bool = True
    linktype: int = 1  # Ethernet
    pool: Pool
    sock: XdpSocket
    count: Optional[int]
    duration: Optional[float]
    idle: Optional[float]
    #: packets delivered so far

    def __init__(self, pool: Pool, ifname: str, queue: int = 0, *, count: Optional[int] = None,
                 duration: Optional[float] = None, idle: Optional[float] = 1.0,
                 **kw: Any) -> None:
        """Open an rx+tx :class:`XdpSocket` on ``ifname``/``queue``; ``kw`` goes to it."""
        from turbomem.packet import _xsk

        self._move = _xsk.move_to_start
        self.pool = pool
        self.sock = XdpSocket(pool, ifname, queue, **kw)
        self.count, self.duration, self.idle = count, duration, idle
        self._limits = LiveLimits(count, duration, idle)

    @property
    def received(self) -> int:
        """Packets this source has returned."""
        return self._limits.seen

    def read(self, n: int) -> Optional[tuple[U32, U32, U32]]:
        """Up to ``n`` packets as (handles, captured lengths, wire lengths), moved to byte 0
        of their objects (possibly none yet), or None when count, duration or idle is reached."""
        budget = self._limits.budget(n)
        if budget is None:
            return None
        h, ln, off = self.sock.recv(budget, timeout=0.02, offsets=True)
        self._limits.record(len(h))
        if len(h):
            self._move(self.pool, h, ln, off)
        return h, ln, ln

    def close(self) -> None:
        """Close the socket (its frames go back to the pool)."""
        self.sock.close()


class XdpSink:
    """A pipeline sink that transmits on an AF_XDP socket (tx only, no program).

    The pipeline returns its handles to the pool after the sink, so the sink
    copies each packet into a frame of its own (one copy) and the completion
    ring returns those frames."""

    pool: Pool
    sock: XdpSocket
    #: packets / bytes queued for transmit
    packets: int
    bytes: int

    def __init__(self, pool: Pool, ifname: str, queue: int = 0, **kw: Any) -> None:
        """Open a tx-only :class:`XdpSocket` on ``ifname``/``queue``; ``kw`` goes to it."""
        self.pool = pool
        self.sock = XdpSocket(pool, ifname, queue, rx=False, tx=True, **kw)
        self.packets = 0
        self.bytes = 0

    def __call__(self, pool: Pool, handles: npt.ArrayLike, lengths: npt.ArrayLike) -> None:
        """Copy each packet into a frame of the sink's own and queue it for transmit."""
        from turbomem._handles import acquire, release

        hs = np.asarray(handles, dtype=np.uint32)
        ls = np.asarray(lengths, dtype=np.uint32)
        if not len(hs):
            return
        own = acquire(pool, len(hs))
        arr = pool.array()
        arr[own[:len(own)]] = arr[hs[:len(own)]]
        try:
            k = self.sock.send(own, ls[:len(own)])
        except BaseException:
            release(pool, own)
            raise
        release(pool, own[k:])
        self.packets += k
        self.bytes += int(ls[:k].sum())

    def close(self) -> None:
        """Wait up to 1 s for transmits to complete, then close the socket."""
        try:
            self.sock.complete(timeout=1.0)
        finally:
            self.sock.close()
