"""Vectorised header parsing on hand-crafted packets, truncation and fuzz."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

import turbomem as tm
from turbomem.bench.naive_pipeline import naive_classify
from turbomem.packet import parse as P
from turbomem.packet.pipeline import forward_mask
from turbomem.packet.traffic import (ether, generate_packets, icmp, icmpv6, ipv4, ipv6, sll, tcp, udp,
                             vlan)


def one(pkt, **kw):
    return P.parse_packets([pkt], **kw)[0]


def ip4(s):
    return int.from_bytes(socket.inet_aton(s), "big")


def test_ipv4_tcp_udp_icmp():
    r = one(ether(ipv4(tcp(1234, 80, b"GET /", flags=0x02), 6, "10.1.2.3", "10.9.8.7")))
    assert (r["l3"], r["l4"], r["ip_proto"]) == (P.L3_IPV4, P.L4_TCP, 6)
    assert (r["sport"], r["dport"], r["tcp_flags"]) == (1234, 80, 0x02)
    assert (r["src_ip4"], r["dst_ip4"]) == (ip4("10.1.2.3"), ip4("10.9.8.7"))
    assert (r["l3_off"], r["l4_off"], r["ip_len"], r["flags"]) == (14, 34, 45, 0)
    assert r["wire_len"] == r["cap_len"] == 59
    r = one(ether(ipv4(udp(53, 5353, b"q"), 17)))
    assert (r["l4"], r["sport"], r["dport"]) == (P.L4_UDP, 53, 5353)
    r = one(ether(ipv4(icmp(8, 0), 1)))
    assert (r["l4"], r["icmp_type"], r["icmp_code"], r["sport"]) == (P.L4_ICMP, 8, 0, 0)


def test_ipv4_options_move_l4():
    r = one(ether(ipv4(udp(1, 2), 17, options=b"\x01" * 8)))
    assert (r["l4_off"], r["sport"], r["dport"]) == (42, 1, 2)


def test_vlan_and_qinq():
    r = one(vlan(ipv4(udp(7, 9), 17), 100))
    assert (r["vlan"], r["l3_off"], r["l4"], r["dport"]) == (100, 18, P.L4_UDP, 9)
    assert r["flags"] & P.F_VLAN and not r["flags"] & P.F_QINQ
    r = one(ether(ipv6(tcp(5, 6), 6), 0x86DD, tags=[(0x88A8, 10), (0x8100, 20)]))
    assert (r["vlan"], r["vlan_inner"], r["l3"], r["l4"], r["l3_off"]) == \
        (10, 20, P.L3_IPV6, P.L4_TCP, 22)
    assert r["flags"] & P.F_QINQ


def test_ipv6_udp_tcp_icmpv6_hop_by_hop():
    r = one(ether(ipv6(udp(1, 2, b"xyz"), 17, "fd00::1", "fd00::2"), 0x86DD))
    assert (r["l3"], r["l4"], r["ip_len"], r["sport"]) == (P.L3_IPV6, P.L4_UDP, 51, 1)
    assert bytes(r["src_ip6"]) == socket.inet_pton(socket.AF_INET6, "fd00::1")
    assert bytes(r["dst_ip6"]) == socket.inet_pton(socket.AF_INET6, "fd00::2")
    assert r["src_ip4"] == 0
    r = one(ether(ipv6(icmpv6(128), 58), 0x86DD))
    assert (r["l4"], r["icmp_type"]) == (P.L4_ICMPV6, 128)
    r = one(ether(ipv6(tcp(8, 9), 6, hop_by_hop=b"\x05\x02\x00\x00"), 0x86DD))
    assert (r["l4"], r["ip_proto"], r["sport"], r["l4_off"]) == (P.L4_TCP, 6, 8, 14 + 40 + 8)
    # other extension headers stop the walk, flagged
    r = one(ether(ipv6(bytes(8) + udp(1, 2), 44), 0x86DD))
    assert r["l4"] == P.L4_OTHER and r["flags"] & P.F_IPV6_EXT


def test_fragments_only_first_has_l4():
    first = one(ether(ipv4(udp(1, 2), 17, more_fragments=True)))
    later = one(ether(ipv4(udp(1, 2), 17, frag_offset=100)))
    assert first["l4"] == P.L4_UDP and first["dport"] == 2 and first["flags"] & P.F_FRAGMENT
    assert later["l4"] == P.L4_OTHER and later["dport"] == 0
    assert later["flags"] & P.F_LATER_FRAGMENT and later["l3"] == P.L3_IPV4


def test_malformed_headers():
    assert one(ether(ipv4(tcp(1, 2), 6, ihl=4)))["flags"] & P.F_MALFORMED
    assert one(ether(ipv4(tcp(1, 2), 6, version=6)))["flags"] & P.F_MALFORMED
    assert one(ether(ipv4(tcp(1, 2), 6, total_length=30)))["flags"] & P.F_MALFORMED
    bad_doff = bytearray(ether(ipv4(tcp(1, 2), 6)))
    bad_doff[34 + 12] = 0x20
    r = one(bytes(bad_doff))
    assert r["flags"] & P.F_MALFORMED and r["sport"] == 0


def test_every_truncation_is_flagged_never_read_past_length():
    pkts = [ether(ipv4(tcp(1, 2, b"p" * 10), 6, options=b"\0" * 4)),
            vlan(ipv6(udp(3, 4), 17, hop_by_hop=b"\x01\x00"), 5, 0x86DD),
            ether(ipv4(icmp(), 1))]
    for full in pkts:
        whole = one(full)
        for cut in range(len(full)):
            # garbage after the cut must not change anything: pad with 0xff
            padded = P.parse_matrix(
                np.frombuffer(full[:cut] + b"\xff" * (len(full) - cut), np.uint8)[None, :],
                [cut])[0]
            plain = one(full[:cut]) if cut else P.parse_matrix(np.zeros((1, 1), np.uint8), [0])[0]
            assert padded.tobytes() == plain.tobytes(), cut
            if cut < whole["l4_off"] + 4:
                assert plain["flags"] & P.F_TRUNCATED, cut
                assert plain["sport"] == plain["dport"] == 0


def test_linktypes_sll_raw_sll2():
    pkt = ipv4(udp(11, 22), 17)
    for lt, frame in ((113, sll(pkt)), (101, pkt), (12, pkt),
                      (276, b"\x08\x00" + bytes(18) + pkt)):
        r = one(frame, linktype=lt)
        assert (r["l3"], r["l4"], r["sport"], r["dport"]) == (P.L3_IPV4, P.L4_UDP, 11, 22), lt
    r = one(ipv6(tcp(1, 2), 6), linktype=101)
    assert (r["l3"], r["l4"]) == (P.L3_IPV6, P.L4_TCP)
    with pytest.raises(ValueError):
        one(pkt, linktype=9999)


def test_parse_from_pool_respects_obj_size():
    with tm.Pool(40, 8) as pool:
        h = pool.get_bulk(2)
        frame = ether(ipv4(tcp(1, 2), 6))  # 54 bytes, only 40 fit
        pool.view(int(h[0]))[:] = frame[:40]
        pool.view(int(h[1]))[:] = b"\xff" * 40
        info = P.parse(pool, h, [54, 0], wire_lengths=[54, 60])
        assert info[0]["cap_len"] == 40 and info[0]["wire_len"] == 54
        assert info[0]["l3"] == P.L3_IPV4 and info[0]["flags"] & P.F_TRUNCATED
        assert info[1]["l3"] == P.L3_OTHER and info[1]["flags"] & P.F_TRUNCATED
        pool.put_bulk(h)


def test_empty_burst_and_flow_keys():
    assert len(P.parse_packets([])) == 0
    info = P.parse_packets([ether(ipv4(udp(1, 2), 17)), ether(ipv4(udp(1, 2), 17)),
                            ether(ipv4(udp(1, 3), 17))])
    assert len(np.unique(P.flow_keys(info))) == 2


def test_fuzz_matches_the_per_packet_reference():
    rng = random.Random(7)
    pkts = generate_packets(2000, seed=11)
    pkts += [vlan(ipv6(tcp(1, 2), 6, hop_by_hop=b"\x01\x00"), 9, 0x86DD),
             ether(ipv4(udp(1, 2), 17, frag_offset=3))]
    fuzzed = []
    for p in pkts:
        q = bytearray(p[:rng.randint(0, len(p))])
        for _ in range(rng.randint(0, 3)):
            if q:
                q[rng.randrange(len(q))] = rng.randrange(256)
        fuzzed.append(bytes(q))
    for lt in (1, 113):
        allp = pkts + fuzzed
        info = P.parse_packets(allp, linktype=lt)
        fast = forward_mask(info, drop_ports=(53,))
        slow = [naive_classify(p, lt, frozenset((53,))) for p in allp]
        assert fast.tolist() == slow
