"""PcapWriter refuses what a pcap header cannot hold; PcapWriter -> PcapReader round-trips.

Every header field is 32 bits: a timestamp, length or original length out of
range must raise before a byte is written, never wrap.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import turbomem as tm
from turbomem.errors import InvalidHandleError
from turbomem.packet.pcap import MAX_RECORD, PcapReader, PcapWriter

pytestmark = pytest.mark.pool_args(256, 32)

MAX_TS = (1 << 32) * 1_000_000_000


@pytest.mark.parametrize("byteorder", ["", "<>", "x", "==", None, b"<", 1, "!"])
def test_writer_refuses_bad_byteorder(byteorder):
    with pytest.raises(ValueError):
        PcapWriter(io.BytesIO(), byteorder=byteorder)


@pytest.mark.parametrize("kw", [{"snaplen": 0}, {"snaplen": -1}, {"snaplen": MAX_RECORD + 1},
                                {"snaplen": True}, {"snaplen": 1.5}, {"linktype": -1},
                                {"linktype": 2**32}, {"linktype": 1.0}, {"linktype": True}])
def test_writer_refuses_bad_header_fields(kw):
    with pytest.raises((TypeError, ValueError)):
        PcapWriter(io.BytesIO(), **kw)


BAD_BURSTS = {
    "negative_ts": dict(timestamps_ns=[-1]),
    "ts_2**32_s": dict(timestamps_ns=[MAX_TS]),
    "ts_2**63": dict(timestamps_ns=[2**63]),
    "ts_2**64": dict(timestamps_ns=[2**64]),
    "float_ts": dict(timestamps_ns=[1.5]),
    "bool_ts": dict(timestamps_ns=[True]),
    "float_ts_array": dict(timestamps_ns=np.array([1e9])),
    "ts_count": dict(timestamps_ns=[1, 2]),
    "negative_orig": dict(orig_lengths=[-1]),
    "orig_2**32": dict(orig_lengths=[2**32]),
    "orig_2**33": dict(orig_lengths=[2**33]),
    "float_orig": dict(orig_lengths=[10.5]),
    "orig_count": dict(orig_lengths=[10, 10]),
    "negative_length": dict(lengths=[-1]),
    "length_past_obj_size": dict(lengths=[257]),
    "float_length": dict(lengths=[1.5]),
    "bool_length": dict(lengths=[True]),
    "float_handle": dict(handles=[1.7]),
    "bool_handle": dict(handles=[True]),
    "handle_past_capacity": dict(handles=[32]),
    "negative_handle": dict(handles=[-1]),
    "float_handle_array": dict(handles=np.array([1.0])),
}


@pytest.mark.parametrize("bad", list(BAD_BURSTS.values()), ids=list(BAD_BURSTS))
def test_write_burst_refuses_out_of_range_fields_and_writes_nothing(pool, bad):
    args = dict(handles=[1], lengths=[10], timestamps_ns=[5], orig_lengths=None)
    args.update(bad)
    out = io.BytesIO()
    w = PcapWriter(out)
    with pytest.raises((TypeError, ValueError)) as info:
        w.write_burst(pool, args["handles"], args["lengths"], args["timestamps_ns"],
                      args["orig_lengths"])
    if "handle" in next(iter(bad)):
        assert isinstance(info.value, InvalidHandleError)
    assert len(out.getvalue()) == 24 and w.packets == 0


@pytest.mark.parametrize("kw", [dict(timestamp_ns=-1), dict(timestamp_ns=MAX_TS), dict(timestamp_ns=0.5),
                                dict(orig_length=-1), dict(orig_length=2**32), dict(orig_length=1.5)])
def test_write_packet_refuses_out_of_range_fields(kw):
    out = io.BytesIO()
    with pytest.raises((TypeError, ValueError)):
        PcapWriter(out).write_packet(b"abc", **kw)
    assert len(out.getvalue()) == 24


def test_the_largest_values_round_trip(pool):
    out = io.BytesIO()
    w = PcapWriter(out, nanosecond=True)
    h = pool.get_bulk(1)
    w.write_burst(pool, h, [256], [MAX_TS - 1], [2**32 - 1])
    out.seek(0)
    with PcapReader(out, pool) as r:
        hs, ls, ts, orig = r.read_burst()
    assert list(ls) == [256] and list(ts) == [MAX_TS - 1] and list(orig) == [2**32 - 1]
    pool.put_bulk(np.concatenate([h, hs]))


def test_read_burst_of_zero_is_empty_not_end_of_file(pool):
    out = io.BytesIO()
    w = PcapWriter(out)
    w.write_packet(b"x" * 20, timestamp_ns=0)
    out.seek(0)
    with PcapReader(out, pool) as r:
        empty = r.read_burst(0)
        assert empty is not None and all(len(a) == 0 for a in empty)
        hs, ls, _, _ = r.read_burst()
        assert list(ls) == [20]
        pool.put_bulk(hs)
        assert r.read_burst() is None
        for bad in (-1, True, 1.5):
            with pytest.raises((TypeError, ValueError)):
                r.read_burst(bad)


packets = st.lists(st.tuples(st.binary(max_size=300),
                             st.integers(0, MAX_TS - 1),
                             st.integers(0, 2**32 - 1)),
                   max_size=40)


@settings(max_examples=60, deadline=None)
@given(packets=packets, byteorder=st.sampled_from(["=", "<", ">"]), nanosecond=st.booleans(),
       snaplen=st.sampled_from([1, 64, 200, MAX_RECORD]), obj_size=st.sampled_from([64, 300]),
       read_size=st.sampled_from([16, 128, 300]), burst=st.integers(1, 17),
       orig_given=st.booleans())
def test_round_trip_fuzz(packets, byteorder, nanosecond, snaplen, obj_size, read_size, burst,
                         orig_given):
    wpool = tm.Pool(obj_size, 64)
    rpool = tm.Pool(read_size, 64)
    try:
        out = io.BytesIO()
        w = PcapWriter(out, snaplen=snaplen, nanosecond=nanosecond, byteorder=byteorder)
        expect = []
        for i in range(0, len(packets), 7):
            chunk = [(d[:obj_size], t, o) for d, t, o in packets[i:i + 7]]
            hs = wpool.get_bulk(len(chunk))
            for h, (d, _, _) in zip(hs, chunk):
                wpool.view(int(h))[:len(d)] = d
            w.write_burst(wpool, hs, [len(d) for d, _, _ in chunk], [t for _, t, _ in chunk],
                          [o for _, _, o in chunk] if orig_given else None)
            wpool.put_bulk(hs)
            for d, t, o in chunk:
                stored = d[:snaplen]
                expect.append((stored[:read_size], t if nanosecond else t // 1000 * 1000,
                               o if orig_given else len(d)))
        assert w.packets == len(expect)
        out.seek(0)
        got = []
        with PcapReader(out, rpool, burst) as r:
            assert r.snaplen == snaplen and r.nanosecond == nanosecond
            for hs, ls, ts, orig in r:
                for h, n, t, o in zip(hs.tolist(), ls.tolist(), ts.tolist(), orig.tolist()):
                    got.append((bytes(rpool.view(h)[:n]), t, o))
                rpool.put_bulk(hs)
        assert got == expect
        assert rpool.available == rpool.capacity
    finally:
        wpool.close()
        rpool.close()
