"""pcapng reading, checked against files written by real tools and against other readers.

Captures come from tcpdump (converted with Debian's ``editcap -F pcapng``), from
``dumpcap`` (pcapng natively, nanosecond if_tsresol, if_name) and from ``mergecap``
(two interfaces with different link types and timestamp resolutions in one
file).  The result is compared with dpkt's reading, with tshark's per-packet
interface and timestamp, and with our classic pcap reader on the same traffic.
Big-endian files and the rarer blocks come from a spec-following writer below.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import turbomem as tm
from turbomem.packet.constants import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from turbomem.packet.pcap import PcapError, PcapReader
from turbomem.packet.pcapng import PcapngReader, is_pcapng, open_capture
from turbomem.packet.summary import summarize
from turbomem.packet.traffic import generate_packets, ipv4, udp

dpkt = pytest.importorskip("dpkt")

ROOT = Path(__file__).resolve().parents[2]
PACKETS = 24


def _read_all(reader, pool):
    """[(interface, ts_ns, data, wire_len, linktype)] from a PcapReader or PcapngReader."""
    out = []
    for handles, lengths, ts, orig in reader:
        ifaces = getattr(reader, "interface_ids", np.zeros(len(handles), np.uint32))
        assert len(ifaces) == len(handles)
        for i, h in enumerate(handles.tolist()):
            out.append((int(ifaces[i]), int(ts[i]), bytes(pool.view(h)[:int(lengths[i])]),
                        int(orig[i]), reader.linktype))
        pool.put_bulk(handles)
    return out


def _read_path(path, burst=7, obj_size=65536, **kw):
    with tm.Pool(obj_size, 64) as pool:
        with open_capture(path, pool, burst, **kw) as reader:
            got = _read_all(reader, pool)
            kind = type(reader)
        assert pool.available == pool.capacity
    return kind, got


# ------------------------------------------------------------------ captures --

def _wait_for(proc, needle: bytes, deadline: float) -> bytes:
    """Read the tool's stderr until it says it is capturing."""
    seen = b""
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stderr.read() or b""
        seen += chunk
        if needle in seen:
            return seen
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"capture tool did not start: {seen.decode(errors='replace')}")


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """lo.pcap (tcpdump, us, Ethernet), any.pcap (tcpdump -i any, ns, SLL2), dc.pcapng (dumpcap),
    lo.pcapng (editcap -F pcapng of lo.pcap), merged.pcapng (mergecap of lo.pcap and any.pcap)."""
    tools = ("tcpdump", "dumpcap", "editcap", "mergecap", "tshark")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"capture tools not installed: {missing} (apt-get install tcpdump wireshark-common tshark)")
    d = tmp_path_factory.mktemp("pcapng")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]  # a port nobody else sends to while we hold it
    flt = f"udp and dst port {port}"
    cmds = {
        "lo.pcap": ["tcpdump", "-i", "lo", "-U", "-n", "-c", str(PACKETS), "-w", str(d / "lo.pcap"), flt],
        "any.pcap": ["tcpdump", "-i", "any", "--time-stamp-precision", "nano", "-U", "-n", "-c", str(PACKETS),
                     "-w", str(d / "any.pcap"), flt],
        "dc.pcapng": ["dumpcap", "-i", "lo", "-q", "-f", flt, "-c", str(PACKETS), "-w", str(d / "dc.pcapng")],
    }
    procs = {}
    deadline = time.monotonic() + 20
    try:
        for name, cmd in cmds.items():
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name, proc in procs.items():
            _wait_for(proc, b"listening on" if name.endswith(".pcap") else b"Capturing on", deadline)
    except (RuntimeError, OSError) as err:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        probe.close()
        pytest.skip(f"cannot capture on lo here (needs CAP_NET_RAW): {err}")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    i = 0
    # Several sizes, one bigger than a 2 KiB object, until every tool has its count.
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        sender.sendto(bytes((i + k) & 0xFF for k in range(i * 61 % 3000)), ("127.0.0.1", port))
        i += 1
        time.sleep(0.002)
    sender.close()
    probe.close()
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if any(p.returncode != 0 for p in procs.values()):
        pytest.fail(f"capture failed: { {n: p.returncode for n, p in procs.items()} }")
    subprocess.run(["editcap", "-F", "pcapng", str(d / "lo.pcap"), str(d / "lo.pcapng")], check=True)
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(d / "merged.pcapng"), str(d / "lo.pcap"),
                    str(d / "any.pcap")], check=True)
    return d


def _dpkt(path, kind):
    with open(path, "rb") as f:
        return [(ts, bytes(buf)) for ts, buf in kind.Reader(f)]


def _tshark(path):
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_id",
                          "-e", "frame.time_epoch", "-e", "frame.cap_len", "-e", "frame.len"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        iface, epoch, cap, wire = line.split("\t")
        sec, _, frac = epoch.partition(".")
        rows.append((int(iface), int(sec) * 10**9 + int((frac + "000000000")[:9]), int(cap), int(wire)))
    return rows


def test_editcap_pcapng_reads_as_the_pcap_it_came_from(captures):
    kind, ng = _read_path(captures / "lo.pcapng")
    assert kind is PcapngReader
    kind, classic = _read_path(captures / "lo.pcap")
    assert kind is PcapReader
    assert len(ng) == PACKETS
    assert ng == classic  # interface 0, same ns timestamps, bytes, wire lengths, link type
    ref = _dpkt(captures / "lo.pcapng", dpkt.pcapng)
    assert [data for _i, _ts, data, _w, _l in ng] == [data for _ts, data in ref]
    assert [ts for _i, ts, *_ in ng] == [round(t * 1e6) * 1000 for t, _ in ref]  # microsecond file
    assert {lt for *_, lt in ng} == {LINKTYPE_ETHERNET}


def test_dumpcap_pcapng_matches_dpkt_and_tshark(captures):
    path = captures / "dc.pcapng"
    with tm.Pool(65536, 16) as pool, PcapngReader(path, pool, 5) as reader:
        got = _read_all(reader, pool)
        (iface,) = reader.interfaces
        assert iface.name == "lo" and iface.linktype == LINKTYPE_ETHERNET
        assert iface.units_per_second == 10**9  # dumpcap writes if_tsresol=9
    ref = _dpkt(path, dpkt.pcapng)
    assert len(got) == len(ref) == PACKETS
    assert [g[2] for g in got] == [data for _ts, data in ref]
    assert all(abs(g[1] / 1e9 - ts) < 1e-6 for g, (ts, _) in zip(got, ref))
    assert [(i, ts, len(data), wire) for i, ts, data, wire, _ in got] == _tshark(path)


def test_mergecap_two_interfaces_own_linktype_and_resolution(captures):
    path = captures / "merged.pcapng"
    with tm.Pool(65536, 16) as pool, PcapngReader(path, pool, 6) as reader:
        got, linktypes_per_burst = [], []
        for handles, lengths, ts, orig in reader:
            linktypes_per_burst.append(reader.linktype)
            for i, h in enumerate(handles.tolist()):
                got.append((int(reader.interface_ids[i]), int(ts[i]), bytes(pool.view(h)[:int(lengths[i])]),
                            int(orig[i]), reader.linktype))
            pool.put_bulk(handles)
        lo, anyif = reader.interfaces
        assert pool.available == pool.capacity
    assert (lo.linktype, lo.units_per_second) == (LINKTYPE_ETHERNET, 10**6)
    assert (anyif.linktype, anyif.units_per_second) == (LINKTYPE_LINUX_SLL2, 10**9)
    # every packet carries its own interface's link type, and a burst never mixes them
    assert all(lt == reader.interfaces[i].linktype for i, _ts, _d, _w, lt in got)
    assert len(linktypes_per_burst) >= 2
    # tshark agrees on interface, nanosecond timestamp and both lengths, packet by packet
    assert [(i, ts, len(data), wire) for i, ts, data, wire, _ in got] == _tshark(path)
    # and the packets are exactly those of the two captures it was merged from
    _, lo_pkts = _read_path(captures / "lo.pcap")
    _, any_pkts = _read_path(captures / "any.pcap")
    assert sorted(g[1:4] for g in got if g[0] == 0) == sorted(p[1:4] for p in lo_pkts)
    assert sorted(g[1:4] for g in got if g[0] == 1) == sorted(p[1:4] for p in any_pkts)
    assert sorted(g[2] for g in got if g[0] == 1) == sorted(d for _t, d in _dpkt(captures / "any.pcap", dpkt.pcap))


def _stats(path) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "pcap_stats.py"), str(path), "--json"],
                         capture_output=True, text=True, check=True, cwd=str(path.parent))
    return json.loads(out.stdout)


def test_pcap_stats_same_counts_on_pcapng_as_on_pcap(captures):
    classic = _stats(captures / "lo.pcap")
    ng = _stats(captures / "lo.pcapng")
    assert classic["packets"] == PACKETS and classic["udp"] == PACKETS
    assert ng == classic
    assert _stats(captures / "dc.pcapng")["udp"] == PACKETS
    # a two-interface file counts what its two sources count together
    merged = _stats(captures / "merged.pcapng")
    other = _stats(captures / "any.pcap")
    for key in ("packets", "bytes", "captured_bytes", "ipv4", "udp", "truncated", "snap_truncated"):
        assert merged[key] == classic[key] + other[key], key


# ------------------------------------------------- a spec-following writer --

def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def _opts(order: str, opts) -> bytes:
    out = b""
    for code, value in opts:
        out += struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack(order + "HH", 0, 0) if opts else b""


def shb(order: str, opts=()) -> bytes:
    return _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opts(order, opts))


def idb(order: str, linktype: int, snaplen: int = 0, tsresol: int | None = None, tsoffset: int = 0,
        name: str = "") -> bytes:
    opts = []
    if name:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset:
        opts.append((14, struct.pack(order + "q", tsoffset)))
    return _block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + _opts(order, opts))


def epb(order: str, iface: int, ticks: int, data: bytes, wire: int | None = None, opts=()) -> bytes:
    wire = len(data) if wire is None else wire
    return _block(order, 6, struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wire)
                  + data + b"\0" * (-len(data) % 4) + _opts(order, opts))


def spb(order: str, data: bytes, wire: int | None = None) -> bytes:
    return _block(order, 3, struct.pack(order + "I", len(data) if wire is None else wire) + data)


def pb(order: str, iface: int, ticks: int, data: bytes) -> bytes:
    return _block(order, 2, struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(data), len(data)) + data)


def isb(order: str) -> bytes:  # interface statistics: skipped
    return _block(order, 5, struct.pack(order + "III", 0, 0, 0))


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_byte_orders_and_every_packet_block(order, pool):
    pkts = generate_packets(9, seed=3)
    raw = ipv4(udp(1, 2, b"raw"), 17)
    t = 1_700_000_000
    data = b"".join([
        shb(order, [(3, b"spec writer")]),
        idb(order, LINKTYPE_ETHERNET, 0, None, name="eth0"),      # default: microseconds
        idb(order, LINKTYPE_RAW, 0, 0x80 | 20, tsoffset=100),      # 2**-20 s, +100 s
        idb(order, LINKTYPE_ETHERNET, 0, 3),                        # milliseconds
        epb(order, 0, t * 10**6 + 5, pkts[0], opts=[(1, b"a comment")]),
        epb(order, 0, t * 10**6 + 6, pkts[1], wire=len(pkts[1]) + 100),
        epb(order, 1, (t << 20) + (1 << 19), raw),                  # t + 0.5 s, then +100 s
        isb(order),
        epb(order, 2, t * 1000 + 7, pkts[2]),
        pb(order, 0, t * 10**6 + 8, pkts[3]),
        spb(order, pkts[4]),
    ])
    with PcapngReader(io.BytesIO(data), pool, 16) as reader:
        assert reader.byteorder == order and reader.linktype == LINKTYPE_ETHERNET
        got = _read_all(reader, pool)
        assert reader.skipped_blocks == 1 and reader.packets == 6
    ns = 10**9
    assert got == [
        (0, t * ns + 5000, pkts[0], len(pkts[0]), LINKTYPE_ETHERNET),
        (0, t * ns + 6000, pkts[1], len(pkts[1]) + 100, LINKTYPE_ETHERNET),
        (1, (t + 100) * ns + ns // 2, raw, len(raw), LINKTYPE_RAW),
        (2, t * ns + 7_000_000, pkts[2], len(pkts[2]), LINKTYPE_ETHERNET),
        (0, t * ns + 8000, pkts[3], len(pkts[3]), LINKTYPE_ETHERNET),
        (0, 0, pkts[4], len(pkts[4]), LINKTYPE_ETHERNET),  # a simple packet block has no timestamp
    ]


@pytest.mark.parametrize("order", ["<", ">"])
def test_single_interface_file_agrees_with_dpkt(order, pool):
    pkts = generate_packets(40, seed=order == ">")
    data = shb(order) + idb(order, LINKTYPE_ETHERNET, 65535, 9) + b"".join(
        epb(order, 0, 1_700_000_000 * 10**9 + i * 1_234_567, p) for i, p in enumerate(pkts))
    with PcapngReader(io.BytesIO(data), pool, 8) as reader:
        got = _read_all(reader, pool)
    ref = [(ts, bytes(b)) for ts, b in dpkt.pcapng.Reader(io.BytesIO(data))]
    assert [g[2] for g in got] == [b for _, b in ref] == pkts
    assert all(abs(g[1] / 1e9 - ts) < 1e-6 for g, (ts, _) in zip(got, ref))


def test_sections_restart_interfaces_and_may_change_byte_order(pool):
    a, b = generate_packets(2, seed=9)
    data = (shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, a)
            + shb(">") + idb(">", LINKTYPE_RAW, tsresol=9) + idb(">", LINKTYPE_ETHERNET, tsresol=9)
            + epb(">", 1, 2, b))
    with PcapngReader(io.BytesIO(data), pool, 8) as reader:
        got = _read_all(reader, pool)
        assert reader.sections == 2 and reader.byteorder == ">"
        assert [i.section for i in reader.interfaces] == [1, 1]
    assert got == [(0, 1000, a, len(a), LINKTYPE_ETHERNET), (1, 2, b, len(b), LINKTYPE_ETHERNET)]


def test_spb_is_cut_to_the_snaplen(pool):
    data = shb("<") + idb("<", LINKTYPE_ETHERNET, snaplen=10) + spb("<", bytes(range(10)), wire=60)
    with PcapngReader(io.BytesIO(data), pool) as reader:
        ((_i, _ts, payload, wire, _lt),) = _read_all(reader, pool)
    assert (payload, wire) == (bytes(range(10)), 60)


@pytest.mark.pool_args(obj_size=64, capacity=32)
def test_oversize_packets_truncate_or_raise(pool):
    big = bytes(range(200))
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, big) + epb("<", 0, 2, b"x" * 10)
    with PcapngReader(io.BytesIO(data), pool) as reader:
        got = _read_all(reader, pool)
        assert reader.truncated == 1
    assert [(g[2], g[3]) for g in got] == [(big[:64], 200), (b"x" * 10, 10)]
    with PcapngReader(io.BytesIO(data), pool, oversize="error") as reader:
        with pytest.raises(PcapError, match="does not fit"):
            reader.read_burst()
    assert pool.available == pool.capacity


GOOD = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, b"A" * 60) + epb("<", 0, 2, b"B" * 60)
FIRST_EPB = len(shb("<")) + len(idb("<", LINKTYPE_ETHERNET))
SECOND_EPB = FIRST_EPB + len(epb("<", 0, 1, b"A" * 60))


def _corrupt(at: int, value: bytes) -> bytes:
    return GOOD[:at] + value + GOOD[at + len(value):]


@pytest.mark.parametrize("data, offset, words", [
    (_corrupt(SECOND_EPB + 4, struct.pack("<I", 14)), SECOND_EPB, "bad block length"),
    (_corrupt(SECOND_EPB + 4, struct.pack("<I", 1 << 30)), SECOND_EPB, "exceeds"),
    (_corrupt(SECOND_EPB + 4, struct.pack("<I", 88)), SECOND_EPB, "trailing length"),
    (_corrupt(SECOND_EPB + 8, struct.pack("<I", 5)), SECOND_EPB, "interface 5"),
    (_corrupt(SECOND_EPB + 20, struct.pack("<I", 500)), SECOND_EPB, "runs past"),
    (GOOD[:-3], SECOND_EPB, "truncated block"),
    (GOOD + b"\x06\0\0", len(GOOD), "truncated block header"),
], ids=["short-length", "huge-length", "trailer", "unknown-interface", "caplen-past-block", "cut-body",
        "cut-header"])
def test_corruption_raises_with_offset_after_good_packets(pool, data, offset, words):
    with PcapngReader(io.BytesIO(data), pool, 8) as reader:
        first = reader.read_burst() if offset > FIRST_EPB else None
        if first is not None:
            pool.put_bulk(first[0])
        with pytest.raises(PcapError, match=words) as info:
            reader.read_burst()
    assert info.value.offset == offset
    assert pool.available == pool.capacity


def test_header_errors(pool):
    with pytest.raises(PcapError, match="byte-order") as info:
        PcapngReader(io.BytesIO(_corrupt(11, b"\xff")), pool)
    assert info.value.offset == 8
    with pytest.raises(PcapError, match="not a pcapng"):
        PcapngReader(io.BytesIO(b"\xd4\xc3\xb2\xa1" + bytes(40)), pool)
    with pytest.raises(PcapError, match="version"):
        PcapngReader(io.BytesIO(_corrupt(12, struct.pack("<H", 2))), pool)
    with pytest.raises(PcapError, match="before any interface"):
        with PcapngReader(io.BytesIO(shb("<") + spb("<", b"x")), pool) as reader:
            reader.read_burst()
    with pytest.raises(PcapError, match="if_tsresol"):
        PcapngReader(io.BytesIO(shb("<") + idb("<", 1, tsresol=40)), pool)
    with pytest.raises(ValueError, match="closed"):
        reader.read_burst()
    assert pool.available == pool.capacity


def test_open_capture_picks_the_format_and_rewinds(tmp_path, pool):
    assert is_pcapng(GOOD) and not is_pcapng(b"\xd4\xc3\xb2\xa1")
    f = io.BytesIO(GOOD)
    with open_capture(f, pool) as reader:
        assert isinstance(reader, PcapngReader)
        assert [g[2] for g in _read_all(reader, pool)] == [b"A" * 60, b"B" * 60]
    path = tmp_path / "x.pcapng"
    path.write_bytes(GOOD)
    assert summarize(path)["packets"] == 2


@pytest.mark.pool_args(obj_size=4096, capacity=8)
def test_a_block_bigger_than_the_read_buffer(pool):
    """A 2 MiB packet (bigger than the 1 MiB read buffer) is read whole, cut to obj_size, and counted."""
    big = bytes(range(256)) * 8192
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 5, b"x" * 10) + epb("<", 0, 6, big) + epb("<", 0, 7, b"y")
    with PcapngReader(io.BytesIO(data), pool, 2) as reader:
        got = _read_all(reader, pool)
        assert reader.truncated == 1
    assert [(g[2], g[3]) for g in got] == [(b"x" * 10, 10), (big[:4096], len(big)), (b"y", 1)]
