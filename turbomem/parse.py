"""Vectorised packet header parsing over a burst of pool objects.

    info = parse(pool, handles, lengths, linktype=1)
    tcp = info[info["l4"] == L4_TCP]

One numpy gather copies the first ``window`` bytes of every packet into an
``(n, window)`` matrix; every header field is then read for all packets at
once with per-row offsets.  There is no per-packet Python loop.  Every read
is masked by the packet's captured length (and the offsets are clipped to
the window), so nothing is read past ``obj_size`` or past the captured bytes;
a header that does not fit is flagged TRUNCATED, one that is inconsistent
MALFORMED.

What is handled:

* link layers: Ethernet (linktype 1, up to two 802.1Q/802.1ad tags
  0x8100/0x88a8/0x9100), Linux cooked capture v1 (113, ``tcpdump -i any``)
  and v2 (276), raw IP (101, and 12 as written by some BSDs);
* IPv4 with options (IHL); fragments: only the first fragment (offset 0)
  gets L4 fields, later ones are flagged LATER_FRAGMENT with l4 OTHER;
* IPv6 fixed header plus at most one hop-by-hop options header; any other
  extension header (routing, fragment, destination options, AH, ESP...)
  stops the walk: l4 is OTHER and the IPV6_EXT flag is set;
* TCP (ports, flags, data offset checked), UDP (ports), ICMP and ICMPv6
  (type and code).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "parse",
    "parse_matrix",
    "parse_packets",
    "flow_keys",
    "PACKET_DTYPE",
    "L3_OTHER", "L3_IPV4", "L3_IPV6",
    "L4_OTHER", "L4_TCP", "L4_UDP", "L4_ICMP", "L4_ICMPV6",
    "F_MALFORMED", "F_TRUNCATED", "F_FRAGMENT", "F_LATER_FRAGMENT",
    "F_VLAN", "F_QINQ", "F_IPV6_EXT", "F_UNPARSED",
    "SUPPORTED_LINKTYPES",
]

L3_OTHER, L3_IPV4, L3_IPV6 = 0, 1, 2
L4_OTHER, L4_TCP, L4_UDP, L4_ICMP, L4_ICMPV6 = 0, 1, 2, 3, 4

F_MALFORMED = 0x01       # a header field is inconsistent (bad version, IHL < 5, ...)
F_TRUNCATED = 0x02       # a header runs past the captured bytes
F_FRAGMENT = 0x04        # IPv4 packet is a fragment (MF set or offset != 0)
F_LATER_FRAGMENT = 0x08  # IPv4 fragment with offset != 0: no L4 header in it
F_VLAN = 0x10            # at least one VLAN tag
F_QINQ = 0x20            # two VLAN tags
F_IPV6_EXT = 0x40        # an IPv6 extension header other than hop-by-hop: L4 not parsed
F_UNPARSED = 0x80        # a header lies beyond the parse window (huge options)

SUPPORTED_LINKTYPES = (1, 12, 101, 113, 276)
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

PACKET_DTYPE = np.dtype([
    ("l3", np.uint8),          # L3_OTHER / L3_IPV4 / L3_IPV6
    ("l4", np.uint8),          # L4_OTHER / L4_TCP / L4_UDP / L4_ICMP / L4_ICMPV6
    ("ip_proto", np.uint8),    # IPv4 protocol / IPv6 next header after hop-by-hop
    ("tcp_flags", np.uint8),
    ("flags", np.uint16),      # F_* bits
    ("ethertype", np.uint16),  # after the VLAN tags (0 when unknown)
    ("vlan", np.uint16),       # outer VLAN id (12 bits), 0 when untagged
    ("vlan_inner", np.uint16),
    ("sport", np.uint16),
    ("dport", np.uint16),
    ("icmp_type", np.uint8),
    ("icmp_code", np.uint8),
    ("ttl", np.uint8),         # IPv4 TTL / IPv6 hop limit
    ("_pad", np.uint8),
    ("l3_off", np.uint16),
    ("l4_off", np.uint16),
    ("ip_len", np.uint32),     # IPv4 total length / IPv6 payload length + 40
    ("cap_len", np.uint32),    # bytes present in the object
    ("wire_len", np.uint32),   # length on the wire (orig_len when known)
    ("src_ip4", np.uint32),    # numeric value: 127.0.0.1 == 0x7f000001
    ("dst_ip4", np.uint32),
    ("src_ip6", np.uint8, (16,)),
    ("dst_ip6", np.uint8, (16,)),
])


def parse(pool, handles, lengths, *, linktype: int = 1, wire_lengths=None,
          window: int = 512) -> np.ndarray:
    """Parse packets held in pool objects; returns a PACKET_DTYPE array."""
    handles = np.asarray(handles, dtype=np.intp).ravel()
    width = max(1, min(pool.obj_size, int(window)))
    if len(handles) and (handles.min() < 0 or handles.max() >= pool.capacity):
        raise ValueError("handle outside the pool")
    mat = pool.array()[:, :width][handles]  # one gather: (n, width) copy
    cap = np.minimum(np.asarray(lengths, dtype=np.int64).ravel(), pool.obj_size)
    return parse_matrix(mat, cap, linktype=linktype, wire_lengths=wire_lengths)


def parse_packets(packets, *, linktype: int = 1, window: int = 512) -> np.ndarray:
    """Parse a list of bytes objects (a convenience for tests and tools)."""
    cap = np.array([len(p) for p in packets], dtype=np.int64)
    width = max(1, min(int(window), int(cap.max()) if len(cap) else 1))
    mat = np.zeros((len(packets), width), dtype=np.uint8)
    for i, p in enumerate(packets):
        k = min(len(p), width)
        mat[i, :k] = np.frombuffer(p, dtype=np.uint8, count=k)
    return parse_matrix(mat, cap, linktype=linktype)


def parse_matrix(mat: np.ndarray, cap, *, linktype: int = 1, wire_lengths=None) -> np.ndarray:
    """Parse rows of ``mat`` (n, width) uint8 whose packets are ``cap`` bytes long.

    ``cap[i]`` may exceed ``width`` (the packet is longer than the window);
    fields past the window are flagged F_UNPARSED, past ``cap`` F_TRUNCATED.
    """
    if linktype not in SUPPORTED_LINKTYPES:
        raise ValueError(f"unsupported linktype {linktype}; supported: {SUPPORTED_LINKTYPES}")
    mat = np.ascontiguousarray(mat, dtype=np.uint8)
    n, width = mat.shape
    cap = np.asarray(cap, dtype=np.int64).ravel()
    out = np.zeros(n, dtype=PACKET_DTYPE)
    if n == 0:
        return out
    rows = np.arange(n)
    win = np.minimum(cap, width)  # bytes that can actually be read
    flags = np.zeros(n, dtype=np.uint16)

    def u8(off):
        return mat[rows, np.clip(off, 0, width - 1)].astype(np.uint32)

    def u16(off):
        return (u8(off) << 8) | u8(off + 1)

    def u32(off):
        return (u16(off) << 16) | u16(off + 2)

    def need(mask, end, bound=None):
        """Rows of ``mask`` whose bytes [.., end) are readable; flags the others."""
        limit = cap if bound is None else np.minimum(cap, bound)
        short = mask & (end > limit)
        flags[short & (end > cap)] |= F_TRUNCATED
        flags[short & (end <= cap)] |= F_MALFORMED  # inside the capture but past IP length
        beyond = mask & ~short & (end > win)
        flags[beyond] |= F_UNPARSED
        return mask & ~short & ~beyond

    # ---------------------------------------------------------- link layer
    zero = np.zeros(n, dtype=np.int64)
    everyone = np.ones(n, dtype=bool)
    if linktype == 1:
        ok = need(everyone, zero + 14)
        et = np.where(ok, u16(zero + 12), 0)
        hl = zero + 14
    elif linktype == 113:
        ok = need(everyone, zero + 16)
        et = np.where(ok, u16(zero + 14), 0)
        hl = zero + 16
    elif linktype == 276:
        ok = need(everyone, zero + 20)
        et = np.where(ok, u16(zero), 0)
        hl = zero + 20
    else:  # raw IP: the version nibble says which
        ok = need(everyone, zero + 1)
        version = u8(zero) >> 4
        et = np.where(ok & (version == 4), 0x0800, np.where(ok & (version == 6), 0x86DD, 0))
        hl = zero.copy()

    if linktype != 101 and linktype != 12:
        for tag in range(2):
            tagged = ok & np.isin(et, _VLAN_TPIDS)
            if not tagged.any():
                break
            good = need(tagged, hl + 4)
            vid = u16(hl) & 0x0FFF
            field = "vlan" if tag == 0 else "vlan_inner"
            out[field] = np.where(good, vid, out[field])
            flags[good] |= F_VLAN if tag == 0 else (F_VLAN | F_QINQ)
            et = np.where(good, u16(hl + 2), np.where(tagged, 0, et))
            ok &= ~(tagged & ~good)
            hl = np.where(good, hl + 4, hl)
    out["ethertype"] = et
    l3 = hl
    out["l3_off"] = np.minimum(l3, 0xFFFF)

    # ---------------------------------------------------------------- IPv4
    l4 = np.zeros(n, dtype=np.int64)
    proto = np.zeros(n, dtype=np.uint32)
    has_l4 = np.zeros(n, dtype=bool)
    ip_end = cap.copy()  # the IP packet's end, for bounding L4 reads

    v4 = ok & (et == 0x0800)
    v4 = need(v4, l3 + 20)
    if v4.any():
        b0 = u8(l3)
        ihl = (b0 & 15).astype(np.int64) * 4
        total = u16(l3 + 2).astype(np.int64)
        bad = v4 & (((b0 >> 4) != 4) | (ihl < 20) | (total < ihl))
        flags[bad] |= F_MALFORMED
        v4 &= ~bad
        out["l3"][v4] = L3_IPV4
        frag = u16(l3 + 6)
        fragment = v4 & ((frag & 0x3FFF) != 0)
        later = v4 & ((frag & 0x1FFF) != 0)
        flags[fragment] |= F_FRAGMENT
        flags[later] |= F_LATER_FRAGMENT
        out["ip_len"] = np.where(v4, total, 0)
        out["ttl"] = np.where(v4, u8(l3 + 8), 0)
        p4 = u8(l3 + 9)
        out["ip_proto"] = np.where(v4, p4, 0)
        out["src_ip4"] = np.where(v4, u32(l3 + 12), 0)
        out["dst_ip4"] = np.where(v4, u32(l3 + 16), 0)
        opts_ok = need(v4, l3 + ihl)
        first = opts_ok & ~later
        l4 = np.where(first, l3 + ihl, l4)
        proto = np.where(first, p4, proto)
        has_l4 |= first
        ip_end = np.where(v4, l3 + total, ip_end)

    # ---------------------------------------------------------------- IPv6
    v6 = ok & (et == 0x86DD)
    v6 = need(v6, l3 + 40)
    if v6.any():
        bad = v6 & ((u8(l3) >> 4) != 6)
        flags[bad] |= F_MALFORMED
        v6 &= ~bad
        out["l3"][v6] = L3_IPV6
        plen = u16(l3 + 4).astype(np.int64)
        nh = u8(l3 + 6)
        out["ip_len"] = np.where(v6, plen + 40, out["ip_len"])
        out["ttl"] = np.where(v6, u8(l3 + 7), out["ttl"])
        cols = np.arange(16)
        for name, start in (("src_ip6", 8), ("dst_ip6", 24)):
            idx = np.clip(l3[v6, None] + start + cols, 0, width - 1)
            out[name][v6] = mat[rows[v6, None], idx]
        end6 = np.where(v6, l3 + 40 + plen, ip_end)
        next_off = l3 + 40
        hbh = v6 & (nh == 0)
        if hbh.any():
            hbh_ok = need(hbh, next_off + 2, end6)
            hlen = (u8(next_off + 1).astype(np.int64) + 1) * 8
            hbh_ok = need(hbh_ok, next_off + hlen, end6)
            nh = np.where(hbh_ok, u8(next_off), nh)
            next_off = np.where(hbh_ok, next_off + hlen, next_off)
            v6_l4 = v6 & (~hbh | hbh_ok)
        else:
            v6_l4 = v6
        out["ip_proto"] = np.where(v6, nh, out["ip_proto"])
        ext = v6_l4 & np.isin(nh, (0, 43, 44, 50, 51, 60, 135, 139, 140))
        flags[ext] |= F_IPV6_EXT
        v6_l4 &= ~ext
        l4 = np.where(v6_l4, next_off, l4)
        proto = np.where(v6_l4, nh, proto)
        has_l4 |= v6_l4
        ip_end = np.where(v6, end6, ip_end)

    # ------------------------------------------------------------------ L4
    l3cls = out["l3"]
    l4cls = np.zeros(n, dtype=np.uint8)
    tcp = has_l4 & (proto == 6)
    udp = has_l4 & (proto == 17)
    icmp = has_l4 & (proto == 1) & (l3cls == L3_IPV4)
    icmp6 = has_l4 & (proto == 58) & (l3cls == L3_IPV6)
    l4cls[tcp] = L4_TCP
    l4cls[udp] = L4_UDP
    l4cls[icmp] = L4_ICMP
    l4cls[icmp6] = L4_ICMPV6
    out["l4"] = l4cls
    out["l4_off"] = np.where(has_l4, np.minimum(l4, 0xFFFF), 0)

    tcp_ok = need(tcp, l4 + 20, ip_end)
    if tcp_ok.any():
        doff = u8(l4 + 12) >> 4
        bad = tcp_ok & (doff < 5)
        flags[bad] |= F_MALFORMED
        tcp_ok &= ~bad
        out["tcp_flags"] = np.where(tcp_ok, u8(l4 + 13), 0)
    udp_ok = need(udp, l4 + 8, ip_end)
    ports = tcp_ok | udp_ok
    if ports.any():
        out["sport"] = np.where(ports, u16(l4), 0)
        out["dport"] = np.where(ports, u16(l4 + 2), 0)
    ic_ok = need(icmp | icmp6, l4 + 4, ip_end)
    if ic_ok.any():
        out["icmp_type"] = np.where(ic_ok, u8(l4), 0)
        out["icmp_code"] = np.where(ic_ok, u8(l4 + 1), 0)

    out["flags"] = flags
    out["cap_len"] = cap
    out["wire_len"] = cap if wire_lengths is None else np.asarray(wire_lengths).ravel()
    return out


_FLOW_FIELDS = ("l3", "ip_proto", "src_ip4", "dst_ip4", "src_ip6", "dst_ip6", "sport", "dport")
_FLOW_DTYPE = np.dtype([(f, PACKET_DTYPE.fields[f][0]) for f in _FLOW_FIELDS])


def flow_keys(info: np.ndarray) -> np.ndarray:
    """One opaque fixed-size key per packet for its directional 5-tuple.

    Packets that are not IP get the key of an all-zero tuple.  Use with
    ``np.unique`` to count distinct flows.
    """
    keys = np.zeros(len(info), dtype=_FLOW_DTYPE)
    for f in _FLOW_FIELDS:
        keys[f] = info[f]
    return keys.view(np.dtype((np.void, _FLOW_DTYPE.itemsize)))
