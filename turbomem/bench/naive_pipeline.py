"""The naive pipeline: the baseline turbomem.packet.pipeline is measured against.

``run_naive`` does the fast pipeline's job the way Python code usually does:
one bytes object per packet, ``struct`` parsing per packet, ``queue.Queue``
between the threads.  Both apply the same forwarding rule
(:func:`turbomem.packet.pipeline.forward_mask`), so their counts must agree;
the tests check that they do.
"""

from __future__ import annotations

import queue
import struct
import threading
import time

from turbomem.packet.constants import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXTENSION_HEADERS,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    PCAP_MAGICS,
    VLAN_TPIDS,
)

# Shared with the fast pipeline so that both report the same result shape.
from turbomem.packet.pipeline import _result, _Stage

__all__ = ["naive_classify", "run_naive"]


def naive_classify(data: bytes, linktype: int = LINKTYPE_ETHERNET, drop_ports=()):
    """Per-packet struct parsing with the same rule as forward_mask: True to forward."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            return False
        (et,) = struct.unpack_from("!H", data, 12)
        off = 14
    elif linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            return False
        (et,) = struct.unpack_from("!H", data, 14)
        off = 16
    elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD):
        if n < 1:
            return False
        v = data[0] >> 4
        et = ETHERTYPE_IPV4 if v == 4 else ETHERTYPE_IPV6 if v == 6 else 0
        off = 0
    else:
        raise ValueError(f"unsupported linktype {linktype}")
    if linktype != LINKTYPE_RAW and linktype != LINKTYPE_RAW_BSD:
        for _ in range(2):
            if et in VLAN_TPIDS:
                if n < off + 4:
                    return False
                (et,) = struct.unpack_from("!H", data, off + 2)
                off += 4
    if et == ETHERTYPE_IPV4:
        if n < off + 20:
            return False
        vihl, total, frag, proto = data[off], *struct.unpack_from("!H2xH", data, off + 2), \
            data[off + 9]
        ihl = (vihl & 15) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or n < off + ihl:
            return False
        if frag & 0x1FFF:
            return True
        l4, end = off + ihl, off + total
    elif et == ETHERTYPE_IPV6:
        if n < off + 40:
            return False
        if data[off] >> 4 != 6:
            return False
        (plen,) = struct.unpack_from("!H", data, off + 4)
        proto = data[off + 6]
        l4, end = off + 40, off + 40 + plen
        if proto == IPPROTO_HOPOPTS:
            if min(n, end) < l4 + 2:
                return False
            hlen = (data[l4 + 1] + 1) * 8
            if min(n, end) < l4 + hlen:
                return False
            proto = data[l4]
            l4 += hlen
        if proto in IPV6_EXTENSION_HEADERS:
            return True
    else:
        return False
    limit = min(n, end)
    if proto == IPPROTO_TCP:
        if limit < l4 + 20 or data[l4 + 12] >> 4 < 5:
            return False
    elif proto == IPPROTO_UDP:
        if limit < l4 + 8:
            return False
    elif (proto == IPPROTO_ICMP and et == ETHERTYPE_IPV4) or (proto == IPPROTO_ICMPV6 and et == ETHERTYPE_IPV6):
        return limit >= l4 + 4
    else:
        return True
    if drop_ports:
        sport, dport = struct.unpack_from("!HH", data, l4)
        if sport in drop_ports or dport in drop_ports:
            return False
    return True


def _naive_pcap_packets(path, linktype_box):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack_from("<I", head)[0]
        order = "<" if magic in PCAP_MAGICS else ">"
        linktype_box.append(struct.unpack_from(order + "I", head, 20)[0] & 0xFFFF)
        rec = struct.Struct(order + "IIII")
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            _s, _f, incl, _orig = rec.unpack(h)
            yield f.read(incl)


def _naive_udp_packets(sock, count, duration, idle, linktype_box):
    linktype_box.append(LINKTYPE_RAW)
    sock.settimeout(0.02)
    got, start = 0, time.monotonic()
    last = start
    while count is None or got < count:
        now = time.monotonic()
        if (duration is not None and now - start >= duration) or (
                idle is not None and now - last >= idle):
            return
        try:
            data, _addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        got += 1
        last = time.monotonic()
        yield data


def run_naive(path=None, *, sock=None, count=None, duration=None, idle=1.0, linktype=None,
              queue_size: int = 1024, drop_ports=(), slow_stage: float = 0.0,
              backpressure: bool = True) -> dict:
    """The same pipeline with bytes objects and queue.Queue (per-packet everything).

    Reads the pcap file ``path``, or datagrams from ``sock`` (raw IP payloads).
    """
    q1: queue.Queue = queue.Queue(queue_size)
    q2: queue.Queue = queue.Queue(queue_size)
    st_rx, st_cls, st_tx = _Stage("receive"), _Stage("classify"), _Stage("forward")
    counters = {"dropped_rx_ring": 0, "dropped_tx_ring": 0, "filtered": 0}
    drop_set = frozenset(drop_ports)
    errors = []
    lt_box = []
    ready = threading.Event()

    def put(q, item, key):
        if backpressure:
            q.put(item)
        else:
            try:
                q.put_nowait(item)
            except queue.Full:
                counters[key] += 1

    def receive():
        try:
            if sock is not None:
                packets = _naive_udp_packets(sock, count, duration, idle, lt_box)
            else:
                packets = _naive_pcap_packets(path, lt_box)
            for data in packets:
                ready.set()
                st_rx.tick(1, len(data))
                put(q1, data, "dropped_rx_ring")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
        finally:
            ready.set()
            q1.put(None)

    def classify():
        ready.wait()
        lt = linktype if linktype is not None else (lt_box[0] if lt_box else LINKTYPE_ETHERNET)
        try:
            while True:
                data = q1.get()
                if data is None:
                    break
                if slow_stage:
                    time.sleep(slow_stage / 64)
                st_cls.tick(1, len(data))
                if naive_classify(data, lt, drop_set):
                    put(q2, data, "dropped_tx_ring")
                else:
                    counters["filtered"] += 1
        except BaseException as err:  # noqa: BLE001
            errors.append(err)
        finally:
            q2.put(None)

    def forward():
        while True:
            data = q2.get()
            if data is None:
                break
            st_tx.tick(1, len(data))

    threads = [threading.Thread(target=f) for f in (receive, classify, forward)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return _result("naive", (st_rx, st_cls, st_tx), elapsed, counters)
