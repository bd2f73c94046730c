"""Synthetic traffic: packets built by hand (Ethernet/VLAN/SLL/IPv4/IPv6/TCP/UDP/ICMP) and pcaps of them.

Used by the tests, the examples and the pipeline benchmark.  Checksums are
left at zero: nothing here is meant to be put on a real wire.
"""

from __future__ import annotations

import random
import socket
import struct

from turbomem.packet.constants import (
    ARPHRD_LOOPBACK,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LINKTYPE_ETHERNET,
    TPID_8021Q,
)
from turbomem.packet.pcap import PcapWriter

__all__ = [
    "ether", "vlan", "ipv4", "ipv6", "tcp", "udp", "icmp", "icmpv6",
    "sll", "generate_packets", "write_pcap",
]

ZERO_MAC = bytes(6)


def ether(payload: bytes, ethertype: int = ETHERTYPE_IPV4, *, src: bytes = ZERO_MAC,
          dst: bytes = ZERO_MAC, tags=()) -> bytes:
    """Ethernet II frame; ``tags`` is a sequence of (tpid, vid) VLAN tags, outer first."""
    head = dst + src
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid & 0x0FFF)
    return head + struct.pack("!H", ethertype) + payload


def vlan(payload: bytes, vid: int, ethertype: int = ETHERTYPE_IPV4, tpid: int = TPID_8021Q) -> bytes:
    return ether(payload, ethertype, tags=[(tpid, vid)])


def sll(payload: bytes, protocol: int = ETHERTYPE_IPV4, pkttype: int = 0) -> bytes:
    """Linux cooked capture v1 header (linktype 113)."""
    return struct.pack("!HHH8sH", pkttype, ARPHRD_LOOPBACK, 6, bytes(8), protocol) + payload


def ipv4(payload: bytes, proto: int, src: str = "127.0.0.1", dst: str = "127.0.0.1", *,
         ttl: int = 64, frag_offset: int = 0, more_fragments: bool = False,
         options: bytes = b"", total_length: int | None = None, ihl: int | None = None,
         version: int = 4) -> bytes:
    if len(options) % 4:
        raise ValueError("IPv4 options must be a multiple of 4 bytes")
    hl = 20 + len(options)
    ihl = hl // 4 if ihl is None else ihl
    total = hl + len(payload) if total_length is None else total_length
    frag = (frag_offset & 0x1FFF) | (0x2000 if more_fragments else 0)
    head = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 0, frag, ttl, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + options + payload


def ipv6(payload: bytes, nh: int, src: str = "::1", dst: str = "::1", *,
         hop_limit: int = 64, hop_by_hop: bytes | None = None) -> bytes:
    if hop_by_hop is not None:
        body = hop_by_hop + bytes(-(len(hop_by_hop) + 2) % 8)
        ext = struct.pack("!BB", nh, (len(body) + 2) // 8 - 1) + body
        payload = ext + payload
        nh = 0
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, hop_limit,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(type_: int = 8, code: int = 0, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", type_, code, 0, 1, 1) + payload


icmpv6 = icmp


def generate_packets(count: int, seed: int = 1, *, min_payload: int = 0,
                     max_payload: int = 400):
    """A reproducible mix: IPv4/IPv6 TCP and UDP, ICMP, VLAN-tagged and ARP frames.

    Returns a list of Ethernet frames (bytes).
    """
    rng = random.Random(seed)
    hosts4 = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(64)]
    hosts6 = [f"fd00::{i + 1:x}" for i in range(32)]
    out = []
    for _ in range(count):
        body = bytes(rng.randrange(256) for _ in range(8)) * (
            rng.randint(min_payload, max_payload) // 8)
        kind = rng.random()
        sport, dport = rng.randrange(1024, 65535), rng.choice((53, 80, 443, 5353, 9000))
        if kind < 0.40:
            pkt = ether(ipv4(tcp(sport, dport, body), IPPROTO_TCP, rng.choice(hosts4), rng.choice(hosts4)))
        elif kind < 0.70:
            pkt = ether(ipv4(udp(sport, dport, body), IPPROTO_UDP, rng.choice(hosts4), rng.choice(hosts4)))
        elif kind < 0.80:
            pkt = ether(ipv6(udp(sport, dport, body), IPPROTO_UDP, rng.choice(hosts6), rng.choice(hosts6)),
                        ETHERTYPE_IPV6)
        elif kind < 0.88:
            pkt = ether(ipv6(tcp(sport, dport, body), IPPROTO_TCP, rng.choice(hosts6), rng.choice(hosts6)),
                        ETHERTYPE_IPV6)
        elif kind < 0.93:
            pkt = ether(ipv4(icmp(8, 0, body), IPPROTO_ICMP, rng.choice(hosts4), rng.choice(hosts4)))
        elif kind < 0.97:
            pkt = vlan(ipv4(udp(sport, dport, body), IPPROTO_UDP, rng.choice(hosts4), rng.choice(hosts4)),
                       rng.randrange(1, 4095))
        else:
            pkt = ether(bytes(28), ETHERTYPE_ARP)
        out.append(pkt)
    return out


def write_pcap(path, packets, *, linktype: int = LINKTYPE_ETHERNET, start_ns: int = 1_700_000_000_000_000_000,
               step_ns: int = 1000, nanosecond: bool = False, byteorder: str = "=") -> None:
    """Write bytes packets to a pcap file with evenly spaced timestamps."""
    with PcapWriter(path, linktype=linktype, nanosecond=nanosecond, byteorder=byteorder) as w:
        for i, p in enumerate(packets):
            w.write_packet(p, start_ns + i * step_ns)
