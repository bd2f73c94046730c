"""Traffic summaries of pcap files (the engine of examples/pcap_stats.py).

Memory stays bounded by the pool: packets are read in bursts into pool
objects, parsed (vectorised), counted, and the objects go straight back.
Only the flow set and the per-source counters grow, with the number of
distinct flows and sources, not packets.
"""

from __future__ import annotations

import socket

import numpy as np

from turbomem.packet import parse as _parse
from turbomem.packet.pcap import PcapReader

__all__ = ["summarize", "format_summary"]


def _addr_strings(info: np.ndarray) -> list[str]:
    out = []
    for l3, a4, a6 in zip(info["l3"].tolist(), info["src_ip4"].tolist(), info["src_ip6"]):
        if l3 == _parse.L3_IPV4:
            out.append(socket.inet_ntop(socket.AF_INET, a4.to_bytes(4, "big")))
        else:
            out.append(socket.inet_ntop(socket.AF_INET6, a6.tobytes()))
    return out


def summarize(path, *, pool=None, burst: int = 256, obj_size: int = 2048, top: int = 10) -> dict:
    """Count packets, bytes, protocols, distinct 5-tuple flows and top talkers."""
    import turbomem as tm

    own_pool = pool is None
    if own_pool:
        pool = tm.Pool(obj_size, 2 * burst)
    counts = dict.fromkeys(("packets", "bytes", "captured_bytes", "ipv4", "ipv6", "tcp", "udp",
                            "icmp", "icmpv6", "other_l3", "other_l4", "vlan", "fragments",
                            "malformed", "truncated"), 0)
    flows: set[bytes] = set()
    talkers: dict[str, list[int]] = {}
    try:
        with PcapReader(path, pool, burst) as reader:
            linktype = reader.linktype
            for handles, lengths, _ts, orig in reader:
                try:
                    info = _parse.parse(pool, handles, lengths, linktype=linktype,
                                        wire_lengths=orig)
                finally:
                    pool.put_bulk(handles)
                _count(info, counts, flows, talkers)
            counts["snap_truncated"] = reader.truncated
            counts["linktype"] = linktype
    finally:
        if own_pool:
            pool.close()
    counts["flows"] = len(flows)
    ranked = sorted(talkers.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:top]
    counts["top_talkers"] = [{"address": a, "packets": p, "bytes": b} for a, (p, b) in ranked]
    return counts


def _count(info, counts, flows, talkers):
    l3, l4, flags = info["l3"], info["l4"], info["flags"]
    counts["packets"] += len(info)
    counts["bytes"] += int(info["wire_len"].sum())
    counts["captured_bytes"] += int(info["cap_len"].sum())
    n3 = np.bincount(l3, minlength=3)
    n4 = np.bincount(l4, minlength=5)
    ip = l3 != _parse.L3_OTHER
    counts["ipv4"] += int(n3[_parse.L3_IPV4])
    counts["ipv6"] += int(n3[_parse.L3_IPV6])
    counts["other_l3"] += int(n3[_parse.L3_OTHER])
    counts["tcp"] += int(n4[_parse.L4_TCP])
    counts["udp"] += int(n4[_parse.L4_UDP])
    counts["icmp"] += int(n4[_parse.L4_ICMP])
    counts["icmpv6"] += int(n4[_parse.L4_ICMPV6])
    counts["other_l4"] += int((ip & (l4 == _parse.L4_OTHER)).sum())
    counts["vlan"] += int(((flags & _parse.F_VLAN) != 0).sum())
    counts["fragments"] += int(((flags & _parse.F_FRAGMENT) != 0).sum())
    counts["malformed"] += int(((flags & _parse.F_MALFORMED) != 0).sum())
    counts["truncated"] += int(((flags & _parse.F_TRUNCATED) != 0).sum())
    if not ip.any():
        return
    ipinfo = info[ip]
    keys = np.unique(_parse.flow_keys(ipinfo))
    flows.update(k.tobytes() for k in keys)
    # top talkers by source address: aggregate the burst first, then the dict
    src_keys = np.zeros(len(ipinfo), dtype=[("l3", "u1"), ("a4", "u4"), ("a6", "u1", (16,))])
    src_keys["l3"] = ipinfo["l3"]
    src_keys["a4"] = ipinfo["src_ip4"]
    src_keys["a6"] = ipinfo["src_ip6"]
    uniq, first, inverse = np.unique(src_keys, return_index=True, return_inverse=True)
    pk = np.bincount(inverse.ravel(), minlength=len(uniq))
    by = np.bincount(inverse.ravel(), weights=ipinfo["wire_len"], minlength=len(uniq))
    for name, p, b in zip(_addr_strings(ipinfo[first]), pk.tolist(), by.tolist()):
        slot = talkers.setdefault(name, [0, 0])
        slot[0] += p
        slot[1] += int(b)


def format_summary(s: dict) -> str:
    lines = [
        f"packets        {s['packets']}",
        f"bytes          {s['bytes']} (captured {s['captured_bytes']})",
        f"ipv4           {s['ipv4']}",
        f"ipv6           {s['ipv6']}",
        f"tcp            {s['tcp']}",
        f"udp            {s['udp']}",
        f"icmp           {s['icmp']}",
        f"icmpv6         {s['icmpv6']}",
        f"other (non-IP) {s['other_l3']}",
        f"other L4       {s['other_l4']}",
        f"malformed      {s['malformed']}   truncated headers {s['truncated']}",
        f"flows          {s['flows']} distinct 5-tuples",
        "top talkers (by packets):",
    ]
    for t in s["top_talkers"]:
        lines.append(f"  {t['address']:<40} {t['packets']:>8} pkts {t['bytes']:>10} B")
    return "\n".join(lines)
