"""UDP on loopback: burst receive into pool objects vs a socket.recvfrom loop.

Two measurements, used by examples/udp_echo.py and the pipeline benchmark:

* ``drain``: N datagrams are queued on a socket first (sendmmsg from this
  process, loopback delivers synchronously), then the clock runs while the
  receiver empties the queue.  This isolates the receive path.
* ``echo``: a load generator in a child process (``python -m
  turbomem.bench.udpbench client ...``, itself using sendmmsg/recvmmsg and keeping
  ``window`` datagrams in flight) talks to an echo server in this process;
  the server's packets/s is measured.  Each echoed datagram costs the server
  a kernel send too, which is the same in both modes.

Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from turbomem.packet.io import BurstReceiver, BurstSender

__all__ = ["drain_benchmark", "echo_benchmark", "serve_burst", "serve_recvfrom", "client"]

STOP_LEN = 1  # a datagram of this length tells an echo server to stop


def _big_rcvbuf(sock, nbytes):
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, nbytes)  # SO_RCVBUFFORCE (needs CAP_NET_ADMIN)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)


def _fill(tx_sock, pool, handle, size, count, burst=256):
    sender = BurstSender(tx_sock, pool, burst)
    hs = np.full(burst, handle, dtype=np.uint32)
    ls = np.full(burst, size, dtype=np.uint32)
    left = count
    while left:
        k = min(burst, left)
        sent = sender.send(hs[:k], ls[:k], timeout=0)
        if sent == 0:
            break
        left -= sent
    return count - left


def drain_benchmark(mode: str, *, count: int = 50_000, size: int = 64, burst: int = 64,
                    rounds: int = 3) -> dict:
    """Receive-path packets/s: time to empty a socket queue of ``count`` datagrams."""
    import turbomem as tm

    if mode not in ("burst", "recvfrom"):
        raise ValueError("mode must be 'burst' or 'recvfrom'")
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pool = tm.Pool(2048, 4 * burst + 8)
    total, seconds, lost = 0, 0.0, 0
    try:
        _big_rcvbuf(rx, 1 << 28)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.connect(rx.getsockname())
        src = pool.get()
        pool.view(src)[:size] = bytes(range(256))[:size].ljust(size, b"x")
        receiver = BurstReceiver(rx, pool, burst)
        for _ in range(rounds):
            queued = _fill(tx, pool, src, size, count)
            got = 0
            t0 = time.perf_counter()
            if mode == "burst":
                while got < queued:
                    h, ln = receiver.recv(timeout=0)
                    if not len(h):
                        break
                    got += len(h)
                    pool.put_bulk(h)
            else:
                recvfrom = rx.recvfrom
                while got < queued:
                    try:
                        recvfrom(2048)
                    except BlockingIOError:
                        break
                    got += 1
            seconds += time.perf_counter() - t0
            total += got
            lost += queued - got
        pool.put(src)
    finally:
        rx.close()
        tx.close()
        pool.close()
    return {"mode": mode, "packets": total, "seconds": seconds, "lost": lost,
            "packets_per_sec": total / seconds if seconds > 0 else 0.0}


# -------------------------------------------------------------------- echo --

def serve_burst(sock, pool, burst: int = 64, *, timeout: float = 10.0) -> dict:
    """Echo every datagram back to its sender with recvmmsg/sendmmsg until STOP."""
    rx = BurstReceiver(sock, pool, burst, addresses=True)
    tx = BurstSender(sock, pool, burst)
    packets, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h, ln = rx.recv(timeout=0.05)
        if not len(h):
            continue
        try:
            stop = ln == STOP_LEN
            if first is None:
                first = time.perf_counter()
            if stop.any():
                keep = ~stop
                names, lens = rx.address_block()
                tx.send(h[keep], ln[keep], addresses=(names[keep], lens[keep]))
                packets += int(keep.sum())
                last = time.perf_counter()
                break
            tx.send(h, ln, addresses=rx.address_block())
            packets += len(h)
            last = time.perf_counter()
        finally:
            pool.put_bulk(h)
    return _rate("burst", packets, first, last)


def serve_recvfrom(sock, *, timeout: float = 10.0) -> dict:
    """The plain loop: recvfrom, sendto, one datagram at a time, until STOP."""
    sock.settimeout(0.05)
    packets, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while time.monotonic() < deadline:
        try:
            data, addr = recvfrom(2048)
        except TimeoutError:
            continue
        if first is None:
            first = time.perf_counter()
        if len(data) == STOP_LEN:
            break
        sendto(data, addr)
        packets += 1
        last = time.perf_counter()
    return _rate("recvfrom", packets, first, last)


def _rate(mode, packets, first, last):
    span = (last - first) if first is not None and last is not None else 0.0
    return {"mode": mode, "packets": packets, "seconds": span,
            "packets_per_sec": packets / span if span > 0 else 0.0}


def client(port: int, count: int, size: int = 64, window: int = 256,
           timeout: float = 1.0) -> dict:
    """Load generator: keep ``window`` datagrams in flight, check every echo."""
    import turbomem as tm

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _big_rcvbuf(sock, 1 << 24)
    sock.connect(("127.0.0.1", port))
    pool = tm.Pool(2048, 2 * window + 8)
    sent = received = lost = 0
    try:
        payload = pool.get()
        pool.view(payload)[:size] = bytes(size)
        tx = BurstSender(sock, pool, window)
        rx = BurstReceiver(sock, pool, window)
        hs = np.full(window, payload, dtype=np.uint32)
        ls = np.full(window, size, dtype=np.uint32)
        t0 = time.perf_counter()
        while sent < count:
            k = min(window, count - sent)
            sent += tx.send(hs[:k], ls[:k])
            want = k
            deadline = time.monotonic() + timeout
            while want and time.monotonic() < deadline:
                h, ln = rx.recv(want, timeout=timeout)
                pool.put_bulk(h)
                want -= len(h)
                received += len(h)
            lost += want
        elapsed = time.perf_counter() - t0
        sock.send(b"S")  # STOP_LEN
        pool.put(payload)
    finally:
        sock.close()
        pool.close()
    return {"sent": sent, "received": received, "lost": lost, "seconds": elapsed}


def echo_benchmark(mode: str, *, count: int = 100_000, size: int = 64, window: int = 256,
                   burst: int = 64, timeout: float = 60.0) -> dict:
    """Echo server in this process (burst or recvfrom), load generator in a child."""
    import turbomem as tm

    if mode not in ("burst", "recvfrom"):
        raise ValueError("mode must be 'burst' or 'recvfrom'")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _big_rcvbuf(sock, 1 << 24)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "turbomem.bench.udpbench", "client", str(port),
                             str(count), str(size), str(window)],
                            stdout=subprocess.PIPE, env=env, text=True)
    pool = tm.Pool(2048, 4 * burst) if mode == "burst" else None
    try:
        if mode == "burst":
            server = serve_burst(sock, pool, burst, timeout=timeout)
        else:
            server = serve_recvfrom(sock, timeout=timeout)
        out, _ = proc.communicate(timeout=timeout)
        server["client"] = json.loads(out.strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        if pool is not None:
            pool.close()
    return server


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "client":
        args = [int(a) for a in sys.argv[2:6]]
        print(json.dumps(client(*args)))
    else:
        print("usage: python -m turbomem.bench.udpbench client PORT COUNT [SIZE [WINDOW]]",
              file=sys.stderr)
        sys.exit(2)
