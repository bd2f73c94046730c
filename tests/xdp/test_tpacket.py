"""AF_PACKET TPACKET_V3 receive into pool objects, on a veth pair (root; skipped otherwise)."""

import errno
import math
import sys
import threading
import time

import pytest

import turbomem as tm
from turbomem.packet.tpacket import TPacketError, TPacketReceiver
from turbomem.packet.vethlab import FRAME_ETHERTYPE

from .helpers import collect

_SEND = r"""
import socket, struct, sys
ifname, dst, src, first, count, size = sys.argv[1:7]
dst, src, first, count, size = bytes.fromhex(dst), bytes.fromhex(src), int(first), int(count), int(size)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for seq in range(first, first + count):
    body = size - 14
    fill = bytes((seq * 7 + i) & 0xFF for i in range(max(0, body - 8)))
    s.send(dst + src + struct.pack("!H", 0x88B5) + (struct.pack("!II", seq, size) + fill)[:body])
"""


def _send_async(lab, count, size, first=0):
    return lab.spawn([sys.executable, "-c", _SEND, lab.far, lab.near_mac.hex(), lab.far_mac.hex(),
                      str(first), str(count), str(size)])


@pytest.mark.parametrize("size", [64, 1500])
def test_every_frame_arrives_once(lab, size):
    count = 2000
    with tm.Pool(2048, 4096) as pool:
        with TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=64) as rx:  # holds all 2000
            sender = _send_async(lab, count, size)
            try:
                seen, foreign, good = collect(lambda: rx.recv(timeout=0.2), pool, count)
            finally:
                assert sender.wait(timeout=20) == 0
            st = rx.statistics()
            assert st["tp_drops"] == 0, st
            assert sorted(seen) == list(range(count)) and set(seen.values()) == {1}
            assert good
            assert st["bad_headers"] == 0
            assert pool.available == pool.capacity
        assert pool.available == pool.capacity


def test_long_packets_are_cut_to_the_object_and_wire_length_kept(lab):
    with tm.Pool(256, 512) as pool:
        with TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=4) as rx:
            lab.send_frames(10, 1200)
            got = 0
            deadline = time.monotonic() + 3
            while got < 10 and time.monotonic() < deadline:
                h, ln = rx.recv(timeout=0.2)
                wire = rx.wire_lengths
                arr = pool.array()
                for hh, n, w in zip(h, ln, wire):
                    if bytes(arr[hh, 12:14]) == FRAME_ETHERTYPE.to_bytes(2, "big"):
                        assert n == 256 and w == 1200
                        got += 1
                pool.put_bulk(h)
            assert got == 10
        assert pool.available == pool.capacity


def test_pool_exhaustion_keeps_packets_in_the_ring(lab):
    with tm.Pool(2048, 16) as pool:
        with TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=4) as rx:
            lab.send_frames(40, 64)
            held = pool.get_bulk(16)
            with pytest.raises(tm.PoolEmptyError):
                rx.recv(timeout=0.5)
            pool.put_bulk(held)
            seen, _, good = collect(lambda: rx.recv(8, timeout=0.2), pool, 40)
            assert sorted(seen) == list(range(40)) and good
        assert pool.available == pool.capacity


def test_bad_interface_and_geometry(lab):
    with tm.Pool(2048, 64) as pool:
        with pytest.raises(OSError) as ei:
            TPacketReceiver(pool, "tmxnosuchif0")
        assert ei.value.errno == errno.ENODEV
        for kw in ({"block_size": 1000}, {"block_size": 4096 * 3}, {"block_nr": 0},
                   {"retire_ms": 0}, {"burst": 0}, {"block_size": True}):
            with pytest.raises(ValueError):
                TPacketReceiver(pool, lab.near, **kw)
        assert pool.available == pool.capacity
    closed = tm.Pool(2048, 8)
    closed.close()
    with pytest.raises(tm.PoolClosedError):
        TPacketReceiver(closed, lab.near)


@pytest.mark.parametrize("timeout", [-1, math.nan, math.inf, "0.1", False])
def test_bad_timeouts(lab, timeout):
    with tm.Pool(2048, 64) as pool:
        with TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=2) as rx:
            with pytest.raises((ValueError, TypeError)):
                rx.recv(timeout=timeout)


def test_close_under_receive(lab):
    with tm.Pool(2048, 64) as pool:
        rx = TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=2)
        errors = []

        def blocked():
            try:
                rx.recv(timeout=None)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)
        rx.close()
        t.join(2.0)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], TPacketError)
        assert pool.available == pool.capacity
        rx.close()


def test_interface_removed_under_a_blocked_receive(lab):
    import subprocess

    with tm.Pool(2048, 64) as pool:
        rx = TPacketReceiver(pool, lab.near, block_size=1 << 16, block_nr=2)
        errors = []

        def blocked():
            try:
                rx.recv(timeout=None)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)
        subprocess.run(["ip", "link", "del", lab.near], check=True)
        t.join(3.0)
        alive = t.is_alive()
        rx.close()
        t.join(2.0)
        assert not alive, "recv kept waiting on a deleted interface"
        assert len(errors) == 1 and isinstance(errors[0], OSError)
        assert pool.available == pool.capacity
