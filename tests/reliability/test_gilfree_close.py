"""close() races against every path that touches pool memory without the GIL.

The compiled pcap walk and recvmmsg/sendmmsg run under ``pool.hold()`` /
``region_acquire``: a concurrent ``pool.close()`` marks the pool closed at
once but unmaps the region only when the GIL-free work is done.  Each race
runs many times in child processes (batched), so a crash (SIGSEGV) or a
write into memory that is no longer the pool's shows up as a failing child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

from support import REPO_ROOT, child_env


def run_children(code: str, children: int, timeout: float = 60, env: dict | None = None) -> None:
    """Run ``code`` in ``children`` processes (two at a time); each must print 'ok'."""
    def one(_):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env or child_env(), timeout=timeout)

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(one, range(children)))
    bad = [(r.returncode, r.stdout[-300:], r.stderr[-600:]) for r in results
           if r.returncode != 0 or "ok" not in r.stdout]
    assert not bad, f"{len(bad)} of {children} children failed: {bad[:3]}"


PCAP_RACE = textwrap.dedent("""\
    import io, random, struct, threading, time
    import turbomem as tm
    from turbomem.packet.pcap import PcapReader

    body = bytes(range(256)) * 6  # 1536-byte records
    record = struct.pack("<IIII", 1, 2, len(body), len(body)) + body
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + record * 6000
    unexpected = []
    for it in range(ITERATIONS):
        pool = tm.Pool(2048, 4096, hugepages="none")
        reader = PcapReader(io.BytesIO(data), pool, burst=4096)

        def walk():
            try:
                for handles, *_ in reader:
                    pool.put_bulk(handles)
            except (ValueError, tm.PoolClosedError):
                pass  # the reader or the pool went away: a clean error is the promise
            except BaseException as err:
                unexpected.append(repr(err))

        t = threading.Thread(target=walk)
        t.start()
        time.sleep(random.uniform(0, 0.004))
        reader.close()
        pool.close()
        t.join()
    assert not unexpected, unexpected[:3]
    print("ok")
    """)


def test_pcap_reader_and_pool_closed_during_the_compiled_walk():
    # Before the region hold ~1 run in 5 died of SIGSEGV in the nogil memcpy.
    run_children(PCAP_RACE.replace("ITERATIONS", "12"), children=6)


RECV_RACE = textwrap.dedent("""\
    import socket, threading, time
    import numpy as np
    import turbomem as tm
    from turbomem.packet import io as net

    for it in range(ITERATIONS):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        pool = tm.Pool(4096, 16, hugepages="none", cache_size=0)
        receiver = net.BurstReceiver(rx, pool, 8)
        result = []

        def recv():
            try:
                result.append(receiver.recv())  # blocking: no timeout
            except tm.PoolClosedError as err:
                result.append(err)

        t = threading.Thread(target=recv)
        t.start()
        time.sleep(0.03)  # blocked in the receive
        pool.close()
        # A new pool (often at the address just unmapped), then a datagram:
        # it must never land in the new pool's objects.
        fresh = tm.Pool(4096, 16, hugepages="none", cache_size=0)
        tx.send(b"\\xAB" * 1000)
        t.join(5)
        assert not t.is_alive(), "recv did not return after close()"
        assert not (fresh.array() == 0xAB).any(), "the datagram was written into another pool"
        assert isinstance(result[0], tm.PoolClosedError), result
        fresh.close()
        rx.close()
        tx.close()
    print("ok")
    """)


def test_pool_closed_while_recv_is_blocked_never_lets_the_kernel_write_elsewhere():
    run_children(RECV_RACE.replace("ITERATIONS", "5"), children=2)


SEND_RACE = textwrap.dedent("""\
    import random, socket, threading, time
    import numpy as np
    import turbomem as tm
    from turbomem.packet import io as net

    unexpected = []
    for it in range(ITERATIONS):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(rx.getsockname())
        pool = tm.Pool(2048, 256, hugepages="none")
        hs = pool.get_bulk(256)
        sender = net.BurstSender(tx, pool, 64)

        def send():
            try:
                for _ in range(50):
                    sender.send(hs, np.full(256, 1400), timeout=0)
            except tm.PoolClosedError:
                pass
            except BaseException as err:
                unexpected.append(repr(err))

        t = threading.Thread(target=send)
        t.start()
        time.sleep(random.uniform(0, 0.003))
        pool.close()
        t.join()
        rx.close()
        tx.close()
    assert not unexpected, unexpected[:3]
    print("ok")
    """)


def test_pool_closed_during_sendmmsg():
    run_children(SEND_RACE.replace("ITERATIONS", "10"), children=2)


def test_ring_closed_during_every_wait_loses_nothing():
    code = textwrap.dedent("""\
        import threading, time
        import numpy as np
        import turbomem as tm

        for it in range(30):
            r = tm.Ring(8)
            sent, got, errors = [], [], []

            def producer():
                try:
                    r.enqueue_burst_wait(np.arange(1000, dtype=np.uint32))
                    sent.append(1000)
                except tm.PoolClosedError as err:
                    sent.append(err.enqueued)

            def consumer():
                try:
                    while True:
                        got.extend(r.dequeue_burst_wait(3).tolist())
                except tm.PoolClosedError:
                    pass

            ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
            for t in ts:
                t.start()
            time.sleep(0.001 * (it % 5))
            r.close()
            for t in ts:
                t.join(5)
            got.extend(r.dequeue_burst(16).tolist())
            assert got == list(range(sent[0])), (sent, len(got))
        print("ok")
        """)
    run_children(code, children=1)


def test_cimport_users_hold_the_region_with_the_pxd_api():
    # A Cython extension (tests/cy/tmstress.pyx) writes pool memory without
    # the GIL between region_acquire and region_release while the pool is
    # closed: the unmap waits for the release, and a closed pool is refused.
    code = textwrap.dedent("""\
        import threading, time
        import turbomem as tm
        from cy.tmstress_build import load_stress
        stress = load_stress()
        closed_while_held = 0
        for it in range(20):
            pool = tm.Pool(1 << 16, 8, hugepages="none")
            h = pool.get()
            done = []
            t = threading.Thread(target=lambda: done.append(stress.held_scribble(pool, h, 100, 500)))
            t.start()
            while bytes(pool.view(h)[:1]) == b"\\0":  # until round 1: the hold is taken
                time.sleep(0.0002)
            pool.close()
            closed_while_held += not pool.memory_released  # the writer still holds it
            t.join()  # a premature unmap would have killed the process with SIGSEGV
            assert done == [100] and pool.memory_released
            try:
                stress.held_scribble(pool, h, 1, 0)
            except tm.PoolClosedError:
                pass
            else:
                raise AssertionError("region_acquire accepted a closed pool")
        assert closed_while_held > 0
        print("ok")
        """)
    env = child_env()
    env["PYTHONPATH"] = str(REPO_ROOT / "tests") + os.pathsep + env["PYTHONPATH"]
    run_children(code, children=1, timeout=120, env=env)
