"""A veth pair with its far end in a network namespace of its own (tests, benchmark).

    with VethLab("t1") as lab:          # needs root
        lab.near, lab.far, lab.ns        # interface in our namespace, its peer, the namespace
        lab.send_frames(count=1000, size=64)   # from the far end, AF_PACKET
        ...

Names carry the pid and a caller tag, so parallel test workers never clash.
IPv6 is disabled on both ends (no router solicitations or MLD reports to
count), the near end gets an IPv4 /30 and the far end a permanent neighbour
entry for it, so UDP senders need no ARP (an XDP program redirecting the
near end's queue would swallow ARP).  The namespace (and with it both
interfaces) is removed on exit, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from typing import Any, Literal, Optional

__all__ = ["VethLab", "available", "FRAME_ETHERTYPE", "frame_payload", "make_frame"]

FRAME_ETHERTYPE: int = 0x88B5  # IEEE "local experimental": no stack handles it


def available() -> str | None:
    """None if veth pairs in namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, AF_XDP)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' is not installed"
    return None


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def frame_payload(seq: int, size: int) -> bytes:
    """The bytes after the Ethernet header of test frame ``seq`` (size = whole frame)."""
    body = size - 14
    head = struct.pack("!II", seq, size)
    fill = bytes((seq * 7 + i) & 0xFF for i in range(max(0, body - 8)))
    return (head + fill)[:body]


def make_frame(dst: bytes, src: bytes, seq: int, size: int) -> bytes:
    """Test frame ``seq`` of ``size`` bytes: Ethernet header (``FRAME_ETHERTYPE``) + payload."""
    return dst + src + struct.pack("!H", FRAME_ETHERTYPE) + frame_payload(seq, size)


_SENDER = r"""
import socket, struct, sys, time
ifname, dst, src, first, count, size, pace = sys.argv[1:8]
dst, src = bytes.fromhex(dst), bytes.fromhex(src)
first, count, size, pace = int(first), int(count), int(size), int(pace)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for seq in range(first, first + count):
    body = size - 14
    head = struct.pack("!II", seq, size)
    fill = bytes((seq * 7 + i) & 0xFF for i in range(max(0, body - 8)))
    s.send(dst + src + struct.pack("!H", 0x88B5) + (head + fill)[:body])
    if pace and (seq - first) % pace == pace - 1:
        time.sleep(0.002)
"""


class VethLab:
    """veth pair ``near`` (here) -- ``far`` (in namespace ``ns``)."""

    #: pid + caller tag (at most 10 characters) in every name
    tag: str
    #: the namespace, the interface here, its peer in the namespace
    ns: str
    near: str
    far: str
    #: rx and tx queues of each end
    queues: int
    #: the /30 addresses of the two ends
    near_ip: str
    far_ip: str
    #: MAC addresses (6 bytes), known once the pair is up (inside ``with``)
    near_mac: bytes
    far_mac: bytes

    def __init__(self, tag: str = "", queues: int = 1) -> None:
        """Choose the names and addresses; nothing is created before ``with``."""
        self.tag = f"{os.getpid()}{tag}"
        if len(self.tag) > 10:
            self.tag = self.tag[-10:]
        self.ns = f"tmx{self.tag}"
        self.near = f"tmxa{self.tag}"
        self.far = f"tmxb{self.tag}"
        self.queues = queues
        h = zlib.crc32(self.tag.encode())
        # RFC 2544 benchmarking range (198.18.0.0/15): never a real host.
        base = f"198.{18 + (h >> 24) % 2}.{(h >> 16) & 255}.{(h & 63) * 4}"
        prefix = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        self.near_ip = f"{prefix}.{last + 1}"
        self.far_ip = f"{prefix}.{last + 2}"
        self._up = False

    def __enter__(self) -> VethLab:
        """Create the namespace and the pair (PermissionError without root); returns the lab."""
        why = available()
        if why:
            raise PermissionError(why)
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        """Remove the namespace and both interfaces; exceptions propagate."""
        self.remove()
        return False

    def _create(self) -> None:
        q = str(self.queues)
        _ip("netns", "add", self.ns)
        self._up = True
        _ip("link", "add", self.near, "numtxqueues", q, "numrxqueues", q, "type", "veth",
            "peer", "name", self.far, "netns", self.ns, "numtxqueues", q, "numrxqueues", q)
        for path in (f"/proc/sys/net/ipv6/conf/{self.near}/disable_ipv6",):
            try:
                with open(path, "w") as f:
                    f.write("1")
            except OSError:
                pass
        self.exec(["sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{self.far}/disable_ipv6"],
                  check=False)
        _ip("addr", "add", f"{self.near_ip}/30", "dev", self.near)
        _ip("-n", self.ns, "addr", "add", f"{self.far_ip}/30", "dev", self.far)
        _ip("link", "set", self.near, "up")
        _ip("-n", self.ns, "link", "set", self.far, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")
        self.near_mac = self._mac(self.near)
        self.far_mac = self._mac(self.far, self.ns)
        _ip("-n", self.ns, "neigh", "replace", self.near_ip, "lladdr", self.near_mac.hex(":"),
            "dev", self.far, "nud", "permanent")
        _ip("neigh", "replace", self.far_ip, "lladdr", self.far_mac.hex(":"), "dev", self.near,
            "nud", "permanent")

    def _mac(self, ifname: str, ns: Optional[str] = None) -> bytes:
        args = (["-n", ns] if ns else []) + ["-o", "link", "show", "dev", ifname]
        out = _ip(*args)
        words = out.split()
        return bytes.fromhex(words[words.index("link/ether") + 1].replace(":", ""))

    def exec(self, argv: Sequence[str], *, check: bool = True,
             **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace (output captured as text); OSError if it fails and ``check``."""
        r = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True, text=True,
                           **kw)
        if check and r.returncode != 0:
            raise OSError(f"in {self.ns}: {' '.join(argv)}: {r.stderr.strip()}")
        return r

    def send_frames(self, count: int, size: int = 64, first: int = 0, pace: int = 64,
                    dst: bytes | None = None) -> None:
        """Send test frames seq first..first+count-1 from the far end (AF_PACKET)."""
        dst = self.near_mac if dst is None else dst
        self.exec([sys.executable, "-c", _SENDER, self.far, dst.hex(), self.far_mac.hex(),
                   str(first), str(count), str(size), str(pace)])

    def spawn(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside the namespace (a Popen; ``kw`` goes to it, so text or bytes)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kw)

    def remove(self) -> None:
        """Delete the near interface and the namespace (idempotent, errors ignored)."""
        if not self._up:
            return
        self._up = False
        _ip("link", "del", self.near, check=False)
        _ip("netns", "del", self.ns, check=False)
