"""pcap read/write into pool objects: both magics, both byte orders, corruption."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

import turbomem as tm
from turbomem.errors import PoolEmptyError, TurbomemError
from turbomem.packet.pcap import MAGIC_NSEC, MAGIC_USEC, PcapError, PcapReader, PcapWriter

pytestmark = pytest.mark.pool_args(512, 256)  # the leak-checked `pool` fixture (conftest.py)

PACKETS = [bytes([i % 256]) * (10 + 37 * i % 300) for i in range(200)]
TIMES = [1_700_000_000_123_456_789 + i * 1_000_003 for i in range(200)]


def _read_all(source, pool, **kw):
    out = []
    with PcapReader(source, pool, **kw) as reader:
        for h, ln, ts, orig in reader:
            for a, b, t, o in zip(h.tolist(), ln.tolist(), ts.tolist(), orig.tolist()):
                out.append((bytes(pool.view(a)[:b]), t, o))
            pool.put_bulk(h)
    return out, reader


def _hand_file(order, magic, records, *, snaplen=65535, version=(2, 4), linktype=1):
    """A pcap file built with struct only (no PcapWriter)."""
    out = struct.pack(order + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)
    for data, sec, frac in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def test_errors_are_turbomem_and_value_errors():
    assert issubclass(PcapError, TurbomemError) and issubclass(PcapError, ValueError)


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("order", ["<", ">"])
def test_round_trip(pool, tmp_path, nanosecond, order):
    src = tm.Pool(512, 256)
    hs = src.get_bulk(len(PACKETS))
    for h, p in zip(hs.tolist(), PACKETS):
        src.view(h)[:len(p)] = p
    path = tmp_path / "rt.pcap"
    with PcapWriter(path, linktype=113, nanosecond=nanosecond, byteorder=order) as w:
        w.write_burst(src, hs[:150], [len(p) for p in PACKETS[:150]], TIMES[:150])
        w.write_burst(src, hs[150:], [len(p) for p in PACKETS[150:]], TIMES[150:])
    src.put_bulk(hs)
    src.close()
    raw = path.read_bytes()
    magic = MAGIC_NSEC if nanosecond else MAGIC_USEC
    assert struct.unpack_from(order + "I", raw)[0] == magic
    got, reader = _read_all(path, pool, burst=64)
    assert reader.linktype == 113 and reader.nanosecond == nanosecond
    assert reader.byteorder == order and reader.version == (2, 4)
    assert [g[0] for g in got] == PACKETS
    want_ts = TIMES if nanosecond else [t // 1000 * 1000 for t in TIMES]
    assert [g[1] for g in got] == want_ts
    assert [g[2] for g in got] == [len(p) for p in PACKETS]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("magic", [MAGIC_USEC, MAGIC_NSEC])
def test_hand_crafted_files(pool, order, magic):
    recs = [(b"abc", 10, 5), (b"\x01" * 100, 11, 999_999), (b"", 12, 0)]
    got, reader = _read_all(io.BytesIO(_hand_file(order, magic, recs)), pool)
    scale = 1 if magic == MAGIC_NSEC else 1000
    assert got == [(d, s * 1_000_000_000 + f * scale, len(d)) for d, s, f in recs]


def _expect_error(pool, data, offset, words, **kw):
    good = []
    with pytest.raises(PcapError) as info:
        with PcapReader(io.BytesIO(data), pool, **kw) as reader:
            for h, ln, _ts, _o in reader:
                good.extend(bytes(pool.view(a)[:b]) for a, b in zip(h.tolist(), ln.tolist()))
                pool.put_bulk(h)
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)
    assert any(w in str(info.value) for w in words), str(info.value)
    assert pool.available == pool.capacity
    return good


def test_corrupt_and_truncated_files(pool):
    recs = [(b"A" * 50, 1, 0), (b"B" * 60, 2, 0), (b"C" * 70, 3, 0)]
    good = _hand_file("<", MAGIC_USEC, recs)
    r2 = 24 + 16 + 50 + 16 + 60  # offset of the third record
    _expect_error(pool, b"\x0a\x0d\x0d\x0a" + good[4:], 0, ["magic"])  # pcapng
    _expect_error(pool, good[:10], 0, ["file header"])
    _expect_error(pool, _hand_file("<", MAGIC_USEC, recs, version=(3, 0)), 4, ["version"])
    # a record header cut short, a record body cut short
    assert _expect_error(pool, good[:r2 + 7], r2, ["record header"]) == [b"A" * 50, b"B" * 60]
    assert _expect_error(pool, good[:r2 + 16 + 10], r2, ["record body"]) == \
        [b"A" * 50, b"B" * 60]
    # caplen > snaplen, and > 256 KiB when the snaplen says nothing
    _expect_error(pool, _hand_file("<", MAGIC_USEC, recs, snaplen=55), 24 + 16 + 50,
                  ["snaplen"])
    huge = bytearray(_hand_file("<", MAGIC_USEC, recs, snaplen=0))
    struct.pack_into("<I", huge, 24 + 8, 300_000)
    _expect_error(pool, bytes(huge), 24, ["256 KiB"])
    # big-endian corruption names the same offsets
    big = _hand_file(">", MAGIC_NSEC, recs)
    _expect_error(pool, big[:r2 + 3], r2, ["record header"])


def test_errors_in_small_bursts_release_everything(pool):
    recs = [(bytes([i]) * 20, i, 0) for i in range(40)]
    data = _hand_file("<", MAGIC_USEC, recs)
    for cut in range(24, len(data), 7):
        try:
            with PcapReader(io.BytesIO(data[:cut]), pool, burst=8) as reader:
                for h, *_ in reader:
                    pool.put_bulk(h)
        except PcapError as err:
            assert 24 <= err.offset < cut
        assert pool.available == pool.capacity


def test_oversize_records_truncate_or_raise(tmp_path):
    with tm.Pool(64, 16) as small:
        recs = [(b"x" * 100, 0, 0), (b"y" * 10, 0, 0)]
        got, reader = _read_all(io.BytesIO(_hand_file("<", MAGIC_USEC, recs)), small)
        assert [len(g[0]) for g in got] == [64, 10] and [g[2] for g in got] == [100, 10]
        assert reader.truncated == 1
        with pytest.raises(PcapError, match="does not fit"):
            _read_all(io.BytesIO(_hand_file("<", MAGIC_USEC, recs)), small, oversize="error")
        assert small.available == small.capacity


def test_empty_pool_raises_without_losing_position():
    recs = [(b"abc", 0, 0), (b"def", 0, 0)]
    with tm.Pool(64, 2, cache_size=0) as p:
        with PcapReader(io.BytesIO(_hand_file("<", MAGIC_USEC, recs)), p, burst=1) as r:
            held = p.get_bulk(2)
            with pytest.raises(PoolEmptyError):
                r.read_burst()
            p.put_bulk(held)
            h, ln, _, _ = r.read_burst()
            assert bytes(p.view(int(h[0]))[:3]) == b"abc"
            p.put_bulk(h)
            h, *_ = r.read_burst()
            p.put_bulk(h)
            assert r.read_burst() is None
        assert p.available == 2


def test_writer_checks_arguments(pool):
    w = PcapWriter(io.BytesIO())
    h = pool.get_bulk(2)
    try:
        with pytest.raises(ValueError):
            w.write_burst(pool, h, [1])
        with pytest.raises(ValueError):
            w.write_burst(pool, h, [1, 10_000])
        with pytest.raises(ValueError):
            PcapWriter(io.BytesIO(), snaplen=0)
    finally:
        pool.put_bulk(h)


def test_snaplen_cuts_but_keeps_orig_length(pool):
    buf = io.BytesIO()
    with PcapWriter(buf, snaplen=8) as w:
        w.write_packet(b"0123456789abcdef", 5000)
        buf = io.BytesIO(buf.getvalue())
    got, _ = _read_all(buf, pool)
    assert got == [(b"01234567", 5000, 16)]


class _Trickle(io.RawIOBase):
    """A file object that hands out at most 777 bytes per read (like a pipe)."""

    def __init__(self, data):
        self._src = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self._src.read(min(len(b), 777))
        b[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("trickle", [False, True])
def test_large_file_across_buffer_refills(tmp_path, trickle):
    pkts = [bytes([i % 251]) * (200 + (i * 7919) % 1200) for i in range(4000)]  # ~5.6 MB
    times = [1_600_000_000_000_000_000 + i * 1000 for i in range(len(pkts))]
    buf = io.BytesIO()
    w = PcapWriter(buf, nanosecond=True)
    for p, t in zip(pkts, times):
        w.write_packet(p, t)
    data = buf.getvalue()
    with tm.Pool(2048, 128) as pool:
        source = _Trickle(data) if trickle else io.BytesIO(data)
        got, _ = _read_all(source, pool, burst=100)
        assert [g[0] for g in got] == pkts
        assert [g[1] for g in got] == times
        assert pool.available == pool.capacity


def test_compiled_record_walk_never_writes_outside_the_pool():
    from turbomem.packet._pcapwalk import copy_records as _pcap_copy_records

    record = struct.pack("<IIII", 0, 0, 4, 4) + b"abcd"
    buf = np.frombuffer(record * 3, dtype=np.uint8)
    offsets = np.empty(3, dtype=np.intp)
    with tm.Pool(64, 4) as pool:
        # a handle beyond the pool stops the walk before any write
        k, pos = _pcap_copy_records(buf, 0, len(buf), pool, np.array([1, 9, 2], np.uint32), 0, 64, False, offsets)
        assert (k, pos) == (1, 20) and bytes(pool.view(1)[:4]) == b"abcd"
        # a record longer than the limit stops it too (the Python slow path takes it)
        k, pos = _pcap_copy_records(buf, 0, len(buf), pool, np.array([2, 3], np.uint32), 0, 3, False, offsets)
        assert (k, pos) == (0, 0)
        # byte-swapped headers: 4 read as big-endian is 0x04000000, far over the limit
        k, _ = _pcap_copy_records(buf, 0, len(buf), pool, np.array([2], np.uint32), 0, 64, True, offsets)
        assert k == 0
        with pytest.raises(ValueError):
            _pcap_copy_records(buf, 0, len(buf) + 1, pool, np.array([2], np.uint32), 0, 64, False, offsets)
    with pytest.raises(tm.PoolClosedError):
        _pcap_copy_records(buf, 0, len(buf), pool, np.array([2], np.uint32), 0, 64, False, offsets)
