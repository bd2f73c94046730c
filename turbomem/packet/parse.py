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

from turbomem.packet.constants import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    F_FRAGMENT,
    F_IPV6_EXT,
    F_LATER_FRAGMENT,
    F_MALFORMED,
    F_QINQ,
    F_TRUNCATED,
    F_UNPARSED,
    F_VLAN,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXTENSION_HEADERS,
    L3_IPV4,
    L3_IPV6,
    L3_OTHER,
    L4_ICMP,
    L4_ICMPV6,
    L4_OTHER,
    L4_TCP,
    L4_UDP,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    SUPPORTED_LINKTYPES,
    VLAN_TPIDS,
)

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
          window: int = 128) -> np.ndarray:
    """Parse packets held in pool objects; returns a PACKET_DTYPE array."""
    handles = np.asarray(handles, dtype=np.intp).ravel()
    width = max(1, min(pool.obj_size, int(window)))
    if len(handles) and (handles.min() < 0 or handles.max() >= pool.capacity):
        raise ValueError("handle outside the pool")
    # one gather: (n, width + slack) copy; the slack lets fixed-size header
    # reads near the window's end stay inside the matrix (still < obj_size)
    mat = pool.array()[:, :min(pool.obj_size, width + _SLACK)][handles]
    cap = np.minimum(np.asarray(lengths, dtype=np.int64).ravel(), pool.obj_size)
    return parse_matrix(mat, cap, linktype=linktype, wire_lengths=wire_lengths, width=width)


def parse_packets(packets, *, linktype: int = 1, window: int = 128) -> np.ndarray:
    """Parse a list of bytes objects (a convenience for tests and tools)."""
    cap = np.array([len(p) for p in packets], dtype=np.int64)
    width = max(1, min(int(window), int(cap.max()) if len(cap) else 1))
    mat = np.zeros((len(packets), width), dtype=np.uint8)
    for i, p in enumerate(packets):
        k = min(len(p), width)
        mat[i, :k] = np.frombuffer(p, dtype=np.uint8, count=k)
    return parse_matrix(mat, cap, linktype=linktype)


def parse_matrix(mat: np.ndarray, cap, *, linktype: int = 1, wire_lengths=None,
                 width: int | None = None) -> np.ndarray:
    """Parse rows of ``mat`` (n, width) uint8 whose packets are ``cap`` bytes long.

    Only the first ``width`` columns (default: all) count as packet bytes.
    ``cap[i]`` may exceed ``width`` (the packet is longer than the window);
    fields past the window are flagged F_UNPARSED, past ``cap`` F_TRUNCATED.
    Each header is fetched for all rows with one gather into a small
    (n, header) matrix, then read as big-endian columns.
    """
    if linktype not in SUPPORTED_LINKTYPES:
        raise ValueError(f"unsupported linktype {linktype}; supported: {SUPPORTED_LINKTYPES}")
    mat = np.ascontiguousarray(mat, dtype=np.uint8)
    n, full = mat.shape
    width = full if width is None else min(int(width), full)
    cap = np.asarray(cap, dtype=np.int64).ravel()
    out = np.zeros(n, dtype=PACKET_DTYPE)
    if n == 0:
        return out
    if full < width + _SLACK:  # pad so that fixed-size reads stay inside the matrix
        mat = np.concatenate([mat, np.zeros((n, width + _SLACK - full), dtype=np.uint8)],
                             axis=1)
        full = mat.shape[1]
    win = np.minimum(cap, width)  # bytes that can actually be read
    flags = np.zeros(n, dtype=np.uint16)

    rows = np.arange(n)
    windows = {}

    def block(off, size):
        """(n, size) bytes at per-row offsets (clipped into the matrix; mask later).

        Indexes a sliding-window view, so numpy copies one contiguous run of
        ``size`` bytes per row instead of gathering byte by byte."""
        view = windows.get(size)
        if view is None:
            view = windows[size] = np.lib.stride_tricks.sliding_window_view(mat, size, axis=1)
        return view[rows, np.minimum(off, full - size)]

    def need(mask, end, bound=None):
        """Rows of ``mask`` whose bytes [.., end) are readable; flags the others.

        The common case (everything readable) costs four array operations."""
        nonlocal flags
        fail = mask & (end > (win if bound is None else np.minimum(win, bound)))
        if not fail.any():
            return mask
        limit = cap if bound is None else np.minimum(cap, bound)
        short = fail & (end > limit)
        past_cap = end > cap
        flags |= (short & past_cap) * np.uint16(F_TRUNCATED)
        flags |= (short & ~past_cap) * np.uint16(F_MALFORMED)  # past the IP length
        flags |= (fail & ~short) * np.uint16(F_UNPARSED)       # past the window
        return mask & ~fail

    # ---------------------------------------------------------- link layer
    head = mat[:, :24].astype(np.uint32)
    if linktype == LINKTYPE_ETHERNET:
        hl0, et_col = 14, 12
    elif linktype == LINKTYPE_LINUX_SLL:
        hl0, et_col = 16, 14
    elif linktype == LINKTYPE_LINUX_SLL2:
        hl0, et_col = 20, 0
    else:
        hl0, et_col = 0, None
    hl = np.full(n, hl0, dtype=np.int64)
    ok = need(np.ones(n, dtype=bool), np.full(n, max(hl0, 1), dtype=np.int64))
    if et_col is not None:
        et = np.where(ok, (head[:, et_col] << 8) | head[:, et_col + 1], 0)
        for tag in range(2):
            tagged = ok & _VLAN_LUT[et]
            if not tagged.any():
                break
            good = need(tagged, hl + 4)
            t = block(hl, 4).astype(np.uint32)
            vid = ((t[:, 0] << 8) | t[:, 1]) & 0x0FFF
            field = "vlan" if tag == 0 else "vlan_inner"
            out[field] = np.where(good, vid, 0)
            flags |= good * np.uint16(F_VLAN if tag == 0 else F_QINQ)
            et = np.where(good, (t[:, 2] << 8) | t[:, 3], np.where(tagged, 0, et))
            ok &= ~(tagged & ~good)
            hl = np.where(good, hl + 4, hl)
    else:  # raw IP: the version nibble says which
        version = head[:, 0] >> 4
        et = np.where(ok & (version == 4), ETHERTYPE_IPV4, np.where(ok & (version == 6), ETHERTYPE_IPV6, 0))
    out["ethertype"] = et
    l3 = hl
    out["l3_off"] = np.minimum(l3, 0xFFFF)

    # ------------------------------------------------- IPv4 and IPv6 at once
    ip = block(l3, 40)
    ip16 = ip.view(">u2").astype(np.int64)          # (n, 20) big-endian words
    ver = ip[:, 0] >> 4
    v4 = need(ok & (et == ETHERTYPE_IPV4), l3 + 20)
    v6 = need(ok & (et == ETHERTYPE_IPV6), l3 + 40)
    ihl = (ip[:, 0] & 15).astype(np.int64) * 4
    total = ip16[:, 1]
    bad4 = v4 & ((ver != 4) | (ihl < 20) | (total < ihl))
    bad6 = v6 & (ver != 6)
    flags |= (bad4 | bad6) * np.uint16(F_MALFORMED)
    v4 &= ~bad4
    v6 &= ~bad6
    l3cls = np.where(v4, L3_IPV4, np.where(v6, L3_IPV6, L3_OTHER)).astype(np.uint8)
    out["l3"] = l3cls
    frag = ip16[:, 3]
    later = v4 & ((frag & 0x1FFF) != 0)
    flags |= (v4 & ((frag & 0x3FFF) != 0)) * np.uint16(F_FRAGMENT)
    flags |= later * np.uint16(F_LATER_FRAGMENT)
    plen = ip16[:, 2]
    nh = np.where(v4, ip[:, 9], np.where(v6, ip[:, 6], 0)).astype(np.int64)
    out["ip_len"] = np.where(v4, total, np.where(v6, plen + 40, 0))
    out["ttl"] = np.where(v4, ip[:, 8], np.where(v6, ip[:, 7], 0))
    ip32 = ip[:, :20].view(">u4")
    out["src_ip4"] = np.where(v4, ip32[:, 3], 0)
    out["dst_ip4"] = np.where(v4, ip32[:, 4], 0)
    sel6 = np.flatnonzero(v6)
    if len(sel6):
        out["src_ip6"][sel6] = ip[sel6, 8:24]
        out["dst_ip6"][sel6] = ip[sel6, 24:40]
    ip_end = np.where(v4, l3 + total, np.where(v6, l3 + 40 + plen, cap))
    l4 = np.where(v4, l3 + ihl, l3 + 40)
    has_l4 = need(v4, l4) & ~later  # IPv4 options captured; first fragment only
    if len(sel6):
        v6_l4 = v6
        hbh = v6 & (nh == IPPROTO_HOPOPTS)
        if hbh.any():
            hbh_ok = need(hbh, l4 + 2, ip_end)
            hb = block(l4, 2).astype(np.int64)
            hlen = (hb[:, 1] + 1) * 8
            hbh_ok = need(hbh_ok, l4 + hlen, ip_end)
            nh = np.where(hbh_ok, hb[:, 0], nh)
            l4 = np.where(hbh_ok, l4 + hlen, l4)
            v6_l4 = v6 & (~hbh | hbh_ok)
        ext = v6_l4 & _IPV6_EXT_LUT[nh]
        flags |= ext * np.uint16(F_IPV6_EXT)
        has_l4 |= v6_l4 & ~ext
    out["ip_proto"] = nh

    # ------------------------------------------------------------------ L4
    tcp = has_l4 & (nh == IPPROTO_TCP)
    udp = has_l4 & (nh == IPPROTO_UDP)
    icmp = has_l4 & (((nh == IPPROTO_ICMP) & v4) | ((nh == IPPROTO_ICMPV6) & v6))
    out["l4"] = np.where(tcp, L4_TCP, np.where(udp, L4_UDP, np.where(
        icmp, np.where(v4, L4_ICMP, L4_ICMPV6), L4_OTHER)))
    out["l4_off"] = np.where(has_l4, np.minimum(l4, 0xFFFF), 0)
    hdr = block(l4, 20)
    tcp_ok = need(tcp, l4 + 20, ip_end)
    bad = tcp_ok & ((hdr[:, 12] >> 4) < 5)
    flags |= bad * np.uint16(F_MALFORMED)
    tcp_ok &= ~bad
    udp_ok = need(udp, l4 + 8, ip_end)
    ic_ok = need(icmp, l4 + 4, ip_end)
    ports = tcp_ok | udp_ok
    p16 = hdr[:, :4].view(">u2")
    out["sport"] = np.where(ports, p16[:, 0], 0)
    out["dport"] = np.where(ports, p16[:, 1], 0)
    out["tcp_flags"] = np.where(tcp_ok, hdr[:, 13], 0)
    out["icmp_type"] = np.where(ic_ok, hdr[:, 0], 0)
    out["icmp_code"] = np.where(ic_ok, hdr[:, 1], 0)
    out["flags"] = flags
    out["cap_len"] = cap
    out["wire_len"] = cap if wire_lengths is None else np.asarray(wire_lengths).ravel()
    return out


_SLACK = 40  # the largest fixed-size block read (the IPv6 header)
_IPV6_EXT_LUT = np.zeros(256, dtype=bool)
_IPV6_EXT_LUT[list(IPV6_EXTENSION_HEADERS)] = True
_VLAN_LUT = np.zeros(65536, dtype=bool)
_VLAN_LUT[list(VLAN_TPIDS)] = True


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
