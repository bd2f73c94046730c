"""Burst socket I/O into pool objects: UDP (v4/v6) and AF_PACKET on loopback."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time

import numpy as np
import pytest

import turbomem as tm
from turbomem.packet import io as net
from turbomem.errors import PoolEmptyError

pytestmark = pytest.mark.pool_args(2048, 512)  # the leak-checked `pool` fixture (conftest.py)


@pytest.fixture
def udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield rx, tx
    rx.close()
    tx.close()


def _drain(rx, pool, want, *, burst=32, deadline=5.0):
    """Receive until ``want`` datagrams (bounded); returns list of bytes."""
    receiver = net.BurstReceiver(rx, pool, burst)
    out = []
    end = time.monotonic() + deadline
    while len(out) < want and time.monotonic() < end:
        h, ln = receiver.recv(timeout=0.2)
        out.extend(bytes(pool.view(int(a))[:int(b)]) for a, b in zip(h, ln))
        pool.put_bulk(h)
    return out, receiver


def test_struct_layout_matches_c():
    assert net.MMSG_DTYPE.itemsize == 64 and net.IOV_DTYPE.itemsize == 16  # x86-64 / aarch64
    assert net.MMSG_DTYPE.fields["len"][1] == 56


def test_every_datagram_once_in_order_with_its_bytes(pool, udp_pair):
    rx, tx = udp_pair
    sent = [struct.pack("!I", i) + os.urandom(i % 300) for i in range(1000)]
    got = []
    # interleave sends and receives so the socket buffer never overflows
    for start in range(0, len(sent), 200):
        for d in sent[start:start + 200]:
            tx.send(d)
        chunk, receiver = _drain(rx, pool, 200)
        got.extend(chunk)
    assert got == sent
    assert pool.available == pool.capacity


def test_ipv6_loopback(pool):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("::1", 0))
    except OSError as err:
        pytest.skip(f"::1 unavailable: {err}")
    with rx, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        for i in range(20):
            tx.sendto(b"six%d" % i, rx.getsockname()[:2])
        receiver = net.BurstReceiver(rx, pool, 32, addresses=True)
        h, ln = receiver.recv(timeout=1.0)
        try:
            assert [bytes(pool.view(int(a))[:int(b)]) for a, b in zip(h, ln)][:3] == \
                [b"six0", b"six1", b"six2"]
            assert receiver.last_addresses()[0][:2] == ("::1", tx.getsockname()[1])
        finally:
            pool.put_bulk(h)


def test_empty_socket_nonblocking_and_timeout(pool, udp_pair):
    rx, _ = udp_pair
    receiver = net.BurstReceiver(rx, pool, 16)
    h, ln = receiver.recv(timeout=0)
    assert len(h) == 0 and len(ln) == 0 and pool.available == pool.capacity
    t0 = time.monotonic()
    h, ln = receiver.recv(timeout=0.1)
    assert len(h) == 0 and 0.05 <= time.monotonic() - t0 < 2.0
    rx.settimeout(0.05)
    assert len(receiver.recv()[0]) == 0  # follows the socket's own timeout
    rx.setblocking(False)
    assert len(net.recv_burst(rx, pool, 8)[0]) == 0  # EAGAIN -> empty
    assert pool.available == pool.capacity


def test_blocking_waits_for_first_then_takes_queued(pool, udp_pair):
    rx, tx = udp_pair
    for i in range(5):
        tx.send(b"%d" % i)
    h, ln = net.recv_burst(rx, pool, 16)  # blocking socket: MSG_WAITFORONE
    assert len(h) == 5
    pool.put_bulk(h)


def test_oversize_datagram_is_truncated_and_counted(udp_pair):
    rx, tx = udp_pair
    with tm.Pool(100, 8) as small:
        tx.send(bytes(range(250)))
        tx.send(b"short")
        receiver = net.BurstReceiver(rx, small, 4)
        h, ln = receiver.recv(timeout=1.0)
        assert list(ln) == [100, 5]
        assert receiver.truncated == 1
        assert bytes(small.view(int(h[0]))) == bytes(range(100))
        small.put_bulk(h)
        assert small.available == small.capacity


def test_given_handles_are_consumed_unused_go_back(pool, udp_pair):
    rx, tx = udp_pair
    tx.send(b"one")
    mine = pool.get_bulk(8)
    h, ln = net.recv_burst(rx, pool, 8, handles=mine, timeout=1.0)
    assert len(h) == 1 and h[0] == mine[0] and bytes(pool.view(int(h[0]))[:3]) == b"one"
    assert pool.in_use == 1
    pool.put_bulk(h)


def test_pool_empty_raises_and_holds_nothing(udp_pair):
    rx, tx = udp_pair
    with tm.Pool(64, 4, cache_size=0) as p:
        all_ = p.get_bulk(4)
        tx.send(b"x")
        with pytest.raises(PoolEmptyError):
            net.BurstReceiver(rx, p, 4).recv(timeout=0)
        p.put_bulk(all_[:2])
        h, _ = net.BurstReceiver(rx, p, 4).recv(timeout=1.0)  # partial pool: still works
        assert len(h) == 1
        p.put_bulk(h)
        p.put_bulk(all_[2:])
        assert p.available == 4


def test_errno_becomes_oserror_and_handles_return(pool):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = net.BurstReceiver(s, pool, 8)
    s.close()  # fileno() is now -1: EBADF
    with pytest.raises(OSError) as info:
        receiver.recv(timeout=0)
    assert info.value.errno == errno.EBADF and "recvmmsg" in str(info.value)
    assert pool.available == pool.capacity


def test_send_burst_connected_unconnected_and_errors(pool, udp_pair):
    rx, tx = udp_pair
    hs = pool.get_bulk(10)
    for i, h in enumerate(hs):
        pool.view(int(h))[:4] = struct.pack("!I", i)
    lens = np.full(10, 4, dtype=np.uint32)
    assert net.send_burst(tx, pool, hs, lens) == 10          # connected
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as un:
        assert net.BurstSender(un, pool, 4).send(hs, lens, addr=rx.getsockname()) == 10
        with pytest.raises(OSError) as info:
            net.send_burst(un, pool, hs, lens)             # no destination
        assert info.value.errno == errno.EDESTADDRREQ
    with pytest.raises(ValueError):
        net.send_burst(tx, pool, hs, np.full(10, 4096, dtype=np.uint32))
    got, _ = _drain(rx, pool, 20)
    assert [struct.unpack("!I", g)[0] for g in got] == list(range(10)) * 2
    # release=True returns the handles whatever happens
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as un, pytest.raises(OSError):
        net.send_burst(un, pool, hs, lens, release=True)
    assert pool.available == pool.capacity


def test_echo_with_per_message_addresses(pool, udp_pair):
    rx, _ = udp_pair
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            c.settimeout(2.0)
            c.sendto(b"hello %d" % i, rx.getsockname())
        receiver = net.BurstReceiver(rx, pool, 8, addresses=True)
        sender = net.BurstSender(rx, pool, 8)
        h, ln = receiver.recv(timeout=1.0)
        assert sorted(a[1] for a in receiver.last_addresses()) == \
            sorted(c.getsockname()[1] for c in clients)
        assert sender.send(h, ln, addresses=receiver.address_block(), release=True) == len(h)
        for i, c in enumerate(clients):
            assert c.recv(100) == b"hello %d" % i
    finally:
        for c in clients:
            c.close()


def test_sockaddr_round_trip():
    for fam, addr in ((socket.AF_INET, ("127.0.0.1", 80)),
                      (socket.AF_INET6, ("::1", 443, 0, 0))):
        assert net.decode_sockaddr(net.encode_sockaddr(fam, addr)) == addr
    raw = net.encode_sockaddr(socket.AF_PACKET, ("lo", 0x88B5))
    assert net.decode_sockaddr(raw)[:2] == ("lo", 0x88B5)
    with pytest.raises(ValueError):
        net.encode_sockaddr(socket.AF_UNIX, "/x")


def _af_packet(proto):
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        s.bind(("lo", proto))
        return s
    except (PermissionError, OSError) as err:
        pytest.skip(f"AF_PACKET raw socket on lo not permitted here: {err}")


def test_af_packet_on_loopback(pool):
    proto = 0x88B5  # IEEE local experimental ethertype
    rx = _af_packet(proto)
    tx = _af_packet(proto)
    nonce = os.urandom(8)
    try:
        hs = pool.get_bulk(16)
        lens = []
        for i, h in enumerate(hs):
            frame = bytes(6) + bytes(6) + struct.pack("!H", proto) + nonce + struct.pack("!I", i)
            frame = frame.ljust(60, b"\0")
            pool.view(int(h))[:len(frame)] = frame
            lens.append(len(frame))
        assert net.BurstSender(tx, pool, 8).send(hs, lens, release=True) == 16
        receiver = net.BurstReceiver(rx, pool, 32)
        seen = []
        end = time.monotonic() + 5
        while time.monotonic() < end and len(seen) < 16:
            h, ln = receiver.recv(timeout=0.2)
            for a, b in zip(h.tolist(), ln.tolist()):
                data = bytes(pool.view(a)[:b])
                if data[14:22] == nonce:  # ignore frames of any parallel test
                    seen.append(struct.unpack_from("!I", data, 22)[0])
            pool.put_bulk(h)
        # lo shows each frame once per direction it is seen on; count distinct
        assert sorted(set(seen)) == list(range(16))
    finally:
        rx.close()
        tx.close()
