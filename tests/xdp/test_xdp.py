"""AF_XDP with a pool as the UMEM, on a veth pair (root; skipped otherwise)."""

import errno
import math
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import turbomem as tm
from turbomem.packet.vethlab import FRAME_ETHERTYPE, frame_payload, make_frame
from turbomem.packet.xdp import XdpError, XdpSocket, attached_program

from .helpers import collect


def _recv(sock):
    return lambda: sock.recv(timeout=0.2, offsets=True)


@pytest.mark.parametrize("size", [64, 1500])
def test_every_frame_arrives_once_zero_copy_into_the_pool(lab, size):
    count = 600
    with tm.Pool(2048, 4096) as pool:
        with XdpSocket(pool, lab.near, ring_size=1024) as sock:
            assert sock.mode in ("copy", "zerocopy")
            assert sock.xdp_mode in ("drv", "skb")
            assert attached_program(lab.near) is not None
            assert pool.available == pool.capacity - 1024  # the fill ring is full
            lab.send_frames(count, size)
            seen, foreign, good = collect(_recv(sock), pool, count)
            assert sorted(seen) == list(range(count))
            assert set(seen.values()) == {1}
            assert good
            st = sock.statistics()
            assert st["bad_descriptors"] == 0
            assert st["rx_invalid_descs"] == 0
            # Only the fill ring's frames are out of the pool.
            assert pool.available + sock.in_kernel == pool.capacity
        assert pool.available == pool.capacity
        assert attached_program(lab.near) is None


def test_receive_is_zero_copy_the_descriptor_is_the_pool_object(lab):
    with tm.Pool(2048, 2048) as pool:
        with XdpSocket(pool, lab.near, ring_size=256) as sock:
            lab.send_frames(1, 200)
            h, ln, off = sock.recv(timeout=2.0, offsets=True)
            assert len(h) == 1 and ln[0] == 200 and off[0] == sock.rx_offset
            # The bytes are in the pool object itself: write through the pool
            # view and read them back at the UMEM address the kernel used.
            view = pool.view(int(h[0]))
            assert bytes(view[off[0] + 14:off[0] + 200]) == frame_payload(0, 200)
            assert pool.is_in_use(int(h[0]))
            pool.put_bulk(h)
        assert pool.available == pool.capacity


def test_transmit_and_completion_return_frames_to_the_pool(lab):
    count = 300
    listener = lab.spawn([sys.executable, "-c", _COUNT_FRAMES, lab.far, str(count), "5"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        with tm.Pool(2048, 2048) as pool:
            with XdpSocket(pool, lab.near, rx=False, tx=True, ring_size=512) as sock:
                assert attached_program(lab.near) is None  # tx only: no program
                hs = pool.get_bulk(count)
                arr = pool.array()
                for i, h in enumerate(hs):
                    frame = make_frame(lab.far_mac, lab.near_mac, i, 128)
                    arr[h, :len(frame)] = np.frombuffer(frame, dtype=np.uint8)
                sent = 0
                while sent < count:
                    k = sock.send(hs[sent:], np.full(count - sent, 128, dtype=np.uint32))
                    sent += k
                    if not k:
                        sock.complete(timeout=0.01)
                sock.complete(timeout=2.0)
                assert sock.in_flight_tx == 0
                assert pool.available == pool.capacity
        out, _ = listener.communicate(timeout=10)
    finally:
        listener.kill()
    got = sorted(int(x) for x in out.split())  # the listener's lines after "ready"
    assert got == list(range(count))


_COUNT_FRAMES = r"""
import socket, struct, sys, time
ifname, want, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: never drop while we are slow
s.bind((ifname, 0x88B5))
s.settimeout(0.2)
print("ready", flush=True)
seqs = []
end = time.time() + secs
while len(seqs) < want and time.time() < end:
    try:
        data = s.recv(4096)
    except socket.timeout:
        continue
    seq, size = struct.unpack_from("!II", data, 14)
    body = size - 14
    fill = bytes((seq * 7 + i) & 0xFF for i in range(max(0, body - 8)))
    if data[14:size] == (struct.pack("!II", seq, size) + fill)[:body]:
        seqs.append(seq)
print("\n".join(map(str, seqs)))
"""


def test_two_queues_share_one_pool_and_one_program(lab2):
    lab = lab2
    # Steer the far end's transmit queues by CPU (XPS): one sender per CPU.
    for q, mask in ((0, "1"), (1, "2")):
        lab.exec(["sh", "-c", f"echo {mask} > /sys/class/net/{lab.far}/queues/tx-{q}/xps_cpus"],
                 check=False)
    count = 300
    with tm.Pool(2048, 4096) as pool:
        with XdpSocket(pool, lab.near, 0, ring_size=512) as s0, \
                XdpSocket(pool, lab.near, 1, ring_size=512) as s1:
            prog = attached_program(lab.near)
            assert prog is not None
            procs = [subprocess.Popen(["taskset", "-c", str(cpu), "ip", "netns", "exec", lab.ns,
                                       sys.executable, "-c", _SEND, lab.far, lab.near_mac.hex(),
                                       lab.far_mac.hex(), str(first), str(count)])
                     for cpu, first in ((0, 0), (1, count))]
            for p in procs:
                assert p.wait(timeout=20) == 0
            seen = {}
            per_queue = []
            for sock in (s0, s1):
                got, foreign, good = collect(_recv(sock), pool, 2 * count, seconds=1.0)
                assert good
                per_queue.append(sum(got.values()))
                for k, v in got.items():
                    seen[k] = seen.get(k, 0) + v
            assert sorted(seen) == list(range(2 * count)) and set(seen.values()) == {1}
            if 0 in per_queue:
                pytest.skip(f"the veth did not spread traffic over both queues here: {per_queue}")
            s0.close()
            assert attached_program(lab.near) == prog  # still used by queue 1
        assert attached_program(lab.near) is None
        assert pool.available == pool.capacity


_SEND = r"""
import socket, struct, sys
ifname, dst, src, first, count = sys.argv[1:6]
dst, src, first, count = bytes.fromhex(dst), bytes.fromhex(src), int(first), int(count)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for seq in range(first, first + count):
    body = 50
    fill = bytes((seq * 7 + i) & 0xFF for i in range(body - 8))
    s.send(dst + src + struct.pack("!H", 0x88B5) + struct.pack("!II", seq, 64) + fill)
"""


# ------------------------------------------------------------ hostile ----

def test_bad_interface(lab):
    with tm.Pool(2048, 256) as pool:
        with pytest.raises(OSError) as ei:
            XdpSocket(pool, "tmxnosuchif0")
        assert ei.value.errno == errno.ENODEV
        for bad in ("", "x" * 20, "a/b", 3):
            with pytest.raises(ValueError):
                XdpSocket(pool, bad)
        assert pool.available == pool.capacity


def test_queue_that_does_not_exist(lab):
    with tm.Pool(2048, 256) as pool:
        with pytest.raises(ValueError, match="queue 7"):
            XdpSocket(pool, lab.near, 7)
        for bad in (-1, 1.5, True, "0"):
            with pytest.raises(ValueError):
                XdpSocket(pool, lab.near, bad)
        assert pool.available == pool.capacity
        assert attached_program(lab.near) is None


@pytest.mark.parametrize("obj_size, align", [(1024, 64), (2100, 64), (8192, 64), (3000, 1024)])
def test_stride_not_a_frame_size(lab, obj_size, align):
    with tm.Pool(obj_size, 64, align=align) as pool:
        with pytest.raises(ValueError, match="2048 or 4096"):
            XdpSocket(pool, lab.near)
    assert attached_program(lab.near) is None


def test_objects_smaller_than_the_frame_are_refused(lab):
    with tm.Pool(1000, 64, align=4096) as pool:
        assert pool.stride == 4096
        with pytest.raises(ValueError, match="obj_size 4096"):
            XdpSocket(pool, lab.near)
    assert attached_program(lab.near) is None


def test_frames_of_4096_work(lab):
    with tm.Pool(4096, 512) as pool:
        with XdpSocket(pool, lab.near, ring_size=128) as sock:
            lab.send_frames(50, 1000)
            seen, _, good = collect(_recv(sock), pool, 50)
            assert sorted(seen) == list(range(50)) and good
        assert pool.available == pool.capacity


def test_closed_pool_and_bad_options(lab):
    pool = tm.Pool(2048, 256)
    pool.close()
    with pytest.raises(tm.PoolClosedError):
        XdpSocket(pool, lab.near)
    with tm.Pool(2048, 256) as pool:
        for kw in ({"mode": "fast"}, {"xdp_mode": "hw"}, {"ring_size": 100}, {"ring_size": 0},
                   {"batch": 0}, {"rx": False, "tx": False}):
            with pytest.raises(ValueError):
                XdpSocket(pool, lab.near, **kw)
        assert pool.available == pool.capacity
    assert attached_program(lab.near) is None


def test_zerocopy_on_veth_fails_cleanly(lab):
    with tm.Pool(2048, 512) as pool:
        try:
            sock = XdpSocket(pool, lab.near, mode="zerocopy", ring_size=128)
        except XdpError as exc:
            assert "zero copy" in str(exc)
        else:  # a kernel whose veth grew zero-copy support
            assert sock.mode == "zerocopy"
            sock.close()
        assert pool.available == pool.capacity
        assert attached_program(lab.near) is None


def test_pool_too_small_for_the_fill_ring_still_works(lab):
    with tm.Pool(2048, 64) as pool:
        with XdpSocket(pool, lab.near, ring_size=256) as sock:
            assert pool.available == 0 and sock.in_kernel == 64
            lab.send_frames(20, 64)
            seen, _, good = collect(_recv(sock), pool, 20)
            assert sorted(seen) == list(range(20)) and good
        assert pool.available == pool.capacity


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, math.inf, "1", True, [1], 1j])
def test_bad_timeouts(lab, timeout):
    with tm.Pool(2048, 256) as pool:
        with XdpSocket(pool, lab.near, ring_size=64) as sock:
            with pytest.raises((ValueError, TypeError)):
                sock.recv(timeout=timeout)
            with pytest.raises((ValueError, TypeError)):
                sock.complete(timeout=timeout)
        assert pool.available == pool.capacity


def test_close_under_receive(lab):
    with tm.Pool(2048, 512) as pool:
        sock = XdpSocket(pool, lab.near, ring_size=256)
        errors = []

        def blocked():
            try:
                sock.recv(timeout=None)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        sock.close()
        t.join(2.0)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], XdpError)
        assert pool.available == pool.capacity
        assert attached_program(lab.near) is None
        with pytest.raises(XdpError):
            sock.recv(timeout=0)
        sock.close()  # idempotent


def test_send_validation(lab):
    with tm.Pool(2048, 512) as pool:
        with XdpSocket(pool, lab.near, ring_size=64) as sock:
            h = pool.get_bulk(2)
            for hs, ls, kw in (([600], [64], {}), (h, [0, 64], {}), (h, [64, 2049], {}),
                               (h, [64, 2000], {"offset": 100}), ([h[0], h[0]], [64, 64], {}),
                               (h, [64], {}), (h, [64, 64], {"offset": -1})):
                with pytest.raises(ValueError):
                    sock.send(np.asarray(hs), np.asarray(ls), **kw)
            with pytest.raises(TypeError):
                sock.send(np.array([1.0]), np.array([64]))
            free = [x for x in range(pool.capacity) if not pool.is_in_use(x)][0]
            with pytest.raises(ValueError, match="free in the pool"):
                sock.send(np.array([free]), np.array([64]))
            for bad in (1.5, True, "3"):
                with pytest.raises(TypeError):
                    sock.recv(bad, timeout=0)
            # A frame on the fill ring is the kernel's: sending it is refused.
            kernel_frame = int(np.flatnonzero(sock._rings.owned_array())[0])
            with pytest.raises(ValueError, match="already with the kernel"):
                sock.send(np.array([kernel_frame]), np.array([64]))
            pool.put_bulk(h)
        assert pool.available == pool.capacity


_EXIT_WITHOUT_CLOSE = r"""
import os, signal, sys, time
import turbomem as tm
from turbomem.packet.xdp import XdpSocket
pool = tm.Pool(2048, 512)
sock = XdpSocket(pool, sys.argv[1], ring_size=128)
print("attached", flush=True)
if sys.argv[2] == "kill":
    time.sleep(30)
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_nothing_stays_attached_after_exit_or_kill(lab, how):
    p = subprocess.Popen([sys.executable, "-c", _EXIT_WITHOUT_CLOSE, lab.near, how],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "attached"
        if how == "kill":
            assert attached_program(lab.near) is not None
            p.kill()
        p.wait(timeout=10)
    finally:
        p.kill()
    deadline = time.monotonic() + 2
    while attached_program(lab.near) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert attached_program(lab.near) is None


def test_garbage_collected_socket_detaches(lab):
    import gc

    with tm.Pool(2048, 512) as pool:
        sock = XdpSocket(pool, lab.near, ring_size=128)
        assert attached_program(lab.near) is not None
        del sock
        gc.collect()
        assert attached_program(lab.near) is None
        assert pool.available == pool.capacity


_BLOCK_IN_RECV = r"""
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
import turbomem as tm
from turbomem.packet.xdp import XdpSocket
from turbomem.packet.tpacket import TPacketReceiver
pool = tm.Pool(2048, 512)
if sys.argv[2] == "xdp":
    sock = XdpSocket(pool, sys.argv[1], ring_size=128)
else:
    sock = TPacketReceiver(pool, sys.argv[1], block_size=1 << 16, block_nr=2)
print("blocking", flush=True)
try:
    sock.recv(timeout=None)
except KeyboardInterrupt:
    sock.close()
    print("interrupted", pool.available == pool.capacity, flush=True)
"""


@pytest.mark.parametrize("kind", ["xdp", "packet"])
def test_ctrl_c_interrupts_a_blocking_recv(lab, kind):
    import signal

    p = subprocess.Popen([sys.executable, "-c", _BLOCK_IN_RECV, lab.near, kind],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "blocking"
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=5)
    finally:
        p.kill()
    assert out.strip() == "interrupted True"
    assert attached_program(lab.near) is None


def test_pool_closed_while_the_socket_is_open(lab):
    pool = tm.Pool(2048, 512)
    sock = XdpSocket(pool, lab.near, ring_size=128)
    lab.send_frames(10, 64)
    pool.close()
    assert not pool.memory_released  # the socket's anchor keeps the UMEM mapped
    with pytest.raises(tm.PoolClosedError):
        sock.recv(timeout=0)
    sock.close()
    assert pool.memory_released
    assert attached_program(lab.near) is None


def test_interface_removed_under_an_open_socket(lab):
    with tm.Pool(2048, 512) as pool:
        sock = XdpSocket(pool, lab.near, ring_size=128)
        lab.send_frames(5, 64)
        subprocess.run(["ip", "link", "del", lab.near], check=True)
        try:
            h, _ = sock.recv(timeout=0.2)  # what arrived before, or nothing: never a crash
            pool.put_bulk(h)
        except OSError:
            pass
        with pytest.raises(XdpError, match="no longer bound"):
            sock.recv(timeout=None)  # must not wait forever
        sock.close()
        assert pool.available == pool.capacity


def test_a_forked_child_does_not_keep_the_program_attached(lab):
    import os
    import signal

    with tm.Pool(2048, 512) as pool:
        sock = XdpSocket(pool, lab.near, ring_size=128)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the socket is the parent's; report, then outlive the parent's close
            try:
                os.write(w, b"%d %d" % (int(sock.closed), pool.available))
                time.sleep(10)
            finally:
                os._exit(0)
        os.close(w)
        try:
            closed, avail = os.read(r, 100).split()
            assert closed == b"1" and int(avail) == pool.capacity  # the child's copy is whole
            sock.close()
            assert attached_program(lab.near) is None  # although the child still runs
            assert pool.available == pool.capacity
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)


def test_second_socket_on_the_same_queue_is_refused(lab):
    with tm.Pool(2048, 1024) as pool:
        with XdpSocket(pool, lab.near, ring_size=128) as first:
            with pytest.raises(XdpError):
                XdpSocket(pool, lab.near, ring_size=128)
            lab.send_frames(20, 64)
            seen, _, good = collect(_recv(first), pool, 20)
            assert sorted(seen) == list(range(20)) and good
            assert pool.available + first.in_kernel == pool.capacity
        assert pool.available == pool.capacity
        assert attached_program(lab.near) is None


def test_debug_pool(lab):
    with tm.Pool(2048, 512, debug=True) as pool:
        with XdpSocket(pool, lab.near, ring_size=128) as sock:
            lab.send_frames(30, 200)
            seen, _, good = collect(_recv(sock), pool, 30)
            assert sorted(seen) == list(range(30)) and good
        assert pool.available == pool.capacity


def test_interface_with_someone_elses_program_is_refused(lab):
    import os

    from turbomem import _sys

    map_fd = _sys.bpf_create_xskmap(1)
    prog_fd = _sys.bpf_load_xdp_program(_sys.xsk_redirect_program(map_fd), b"other_prog")
    link_fd = _sys.bpf_link_xdp(prog_fd, _sys.if_nametoindex(lab.near), _sys.XDP_FLAGS_SKB_MODE)
    try:
        theirs = attached_program(lab.near)
        with tm.Pool(2048, 512) as pool:
            with pytest.raises(XdpError, match="cannot attach"):
                XdpSocket(pool, lab.near, ring_size=128)
            assert pool.available == pool.capacity
        assert attached_program(lab.near) == theirs  # theirs is untouched
    finally:
        for fd in (link_fd, prog_fd, map_fd):
            os.close(fd)
    assert attached_program(lab.near) is None


def test_handle_returned_while_in_flight_is_reported_and_the_rest_is_exact(lab):
    with tm.Pool(2048, 512) as pool:
        with XdpSocket(pool, lab.near, rx=False, tx=True, ring_size=64) as sock:
            hs = pool.get_bulk(8)
            arr = pool.array()
            for i, h in enumerate(hs):
                frame = make_frame(lab.far_mac, lab.near_mac, i, 64)
                arr[h, :64] = np.frombuffer(frame, dtype=np.uint8)
            assert sock.send(hs, np.full(8, 64, dtype=np.uint32)) == 8
            pool.put(int(hs[3]))  # a caller bug: returned while the kernel sends it
            deadline = time.monotonic() + 2
            with pytest.raises(tm.InvalidHandleError, match="already free"):
                while time.monotonic() < deadline:
                    sock.complete(timeout=0.1)
            assert sock.in_flight_tx == 0
        assert pool.available == pool.capacity
