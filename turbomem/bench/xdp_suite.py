"""The ``xdp`` benchmark: packet receive rate on a veth pair, five ways, one run.

    python -m turbomem bench xdp [--quick] [--json FILE] [--plot FILE.png]

A C generator (xdpgen.c: sendmmsg on an AF_PACKET socket, qdisc bypassed)
runs in the far namespace of a fresh veth pair, pinned to the last CPU, and
sends UDP/IPv4 frames of 64 and of 1500 bytes to the near end as fast as it
can.  The receiver runs in this process (pinned to CPU 0) and counts the
packets it gets in a fixed window after a short warm-up:

* ``af_xdp``     XdpSocket on queue 0, the pool as UMEM; each burst of
                 handles goes back to the pool (put_bulk) as a consumer would;
* ``tpacket_v3`` TPacketReceiver (block walk, one copy into pool objects);
* ``recvmmsg``   turbomem.packet.io.BurstReceiver on a UDP socket (today's path);
* ``recvfrom``   a ``sock.recv_into`` loop on the same UDP socket;
* ``testpmd``    ``dpdk-testpmd`` rxonly with ``net_af_xdp`` on the same
                 veth (its forwarding lcore on CPU 0), rate from its port
                 statistics (``Rx-pps`` between two ``show port stats``).

The contenders alternate (the order rotates every round) and each keeps its
best round.  Ratios are taken inside one run, at the same packet size.  On a
2-CPU machine the generator's CPU also does the kernel's receive work (veth
runs the receive path on the sending CPU), so every contender is bounded by
that CPU as well as by its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .report import Progress

if TYPE_CHECKING:
    from turbomem.packet.vethlab import VethLab

__all__ = ["run", "suite"]

CONTENDERS = ("af_xdp", "tpacket_v3", "recvmmsg", "recvfrom", "testpmd")
SIZES = (64, 1500)
UDP_PORT = 9999
GOALS = [
    ("af_xdp", "recvmmsg", 3.0, "AF_XDP on a pool vs recvmmsg bursts"),
    ("af_xdp", "testpmd", 0.8, "AF_XDP on a pool vs DPDK net_af_xdp (testpmd rxonly)"),
    ("tpacket_v3", "recvmmsg", 1.5, "TPACKET_V3 vs recvmmsg bursts"),
]


def _generator() -> str:
    """Compile xdpgen.c once (cached by content)."""
    import hashlib

    from ._paths import bench_source, cache_dir

    src = bench_source("xdpgen.c")
    key = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = cache_dir() / f"xdpgen-{key}"
    if not out.exists():
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            raise RuntimeError("no C compiler for the traffic generator")
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([cc, "-O2", "-o", str(tmp), str(src)], check=True, capture_output=True)
        os.replace(tmp, out)
    return str(out)


class _Cpus:
    """Receiver on the first CPU we may use, generator on the last one."""

    def __init__(self) -> None:
        self.allowed = sorted(os.sched_getaffinity(0))
        self.rx = self.allowed[0]
        self.gen = self.allowed[-1]

    def pin_rx(self) -> None:
        if len(self.allowed) > 1:
            os.sched_setaffinity(0, {self.rx})

    def unpin(self) -> None:
        os.sched_setaffinity(0, set(self.allowed))


def _start_generator(lab: VethLab, gen: str, cpus: _Cpus, size: int, seconds: float,
                     count: Optional[int] = None) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", lab.ns, gen, lab.far, lab.near_mac.hex(":"),
            lab.far_mac.hex(":"), lab.far_ip, lab.near_ip, str(size), f"{seconds:.2f}"]
    if count is not None:
        argv.append(str(count))
    if len(cpus.allowed) > 1 and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpus.gen)] + argv
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_generator(p: subprocess.Popen[str]) -> int:
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"generator failed: {err.strip()}")
    return int(out.split()[0])


def _window(step: Callable[[], int], warmup: float, window: float) -> Tuple[int, float]:
    """Call step() (returns packets) through warm-up then a timed window."""
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        step()
    count = 0
    t0 = time.perf_counter()
    t_end = t0 + window
    now = t0
    while now < t_end:
        count += step()
        now = time.perf_counter()
    return count, now - t0


@contextlib.contextmanager
def _receiver(kind, lab, pool):
    """Yield (step, stats): step() receives one burst (or one datagram),
    gives the buffers back as a consumer would, and returns the count."""
    if kind == "af_xdp":
        from turbomem.packet.xdp import XdpSocket

        with XdpSocket(pool, lab.near, 0, ring_size=8192, batch=256) as s:
            put = pool.put_bulk

            def step():
                h, _ = s.recv(timeout=0)
                if len(h):
                    put(h)
                return len(h)

            def stats():
                st = s.statistics()
                return {"mode": f"{s.mode} / xdp {s.xdp_mode}",
                        "kernel_drops": st["rx_dropped"] + st["rx_ring_full"]}

            yield step, stats
        return
    if kind == "tpacket_v3":
        from turbomem.packet.tpacket import TPacketReceiver

        with TPacketReceiver(pool, lab.near, block_size=1 << 18, block_nr=64, burst=256) as rx:
            put = pool.put_bulk

            def step():
                h, _ = rx.recv(timeout=0)
                if len(h):
                    put(h)
                return len(h)

            rx.statistics()  # reading resets the kernel's counters
            yield step, lambda: {"kernel_drops": rx.statistics()["tp_drops"]}
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind((lab.near_ip, UDP_PORT))
        if kind == "recvmmsg":
            from turbomem.packet.io import BurstReceiver

            rx = BurstReceiver(sock, pool, 256)
            put = pool.put_bulk

            def step():
                h, _ = rx.recv(timeout=0)
                if len(h):
                    put(h)
                return len(h)

            yield step, dict
            return
        sock.setblocking(False)
        buf = bytearray(2048)
        recv_into = sock.recv_into

        def step():
            try:
                recv_into(buf)
                return 1
            except BlockingIOError:
                return 0

        yield step, dict
    finally:
        sock.close()


def _measure_live(kind, lab, pool, warmup, window):
    with _receiver(kind, lab, pool) as (step, stats):
        n, dt = _window(step, warmup, window)
        return n, dt, stats()


def _measure_drain(kind, lab, pool, gen, cpus, size, count, reps):
    """The receive path alone: the generator queues ``count`` packets while
    nobody reads, then the receiver empties the queue against the clock."""
    total = 0
    seconds = 0.0
    with _receiver(kind, lab, pool) as (step, stats):
        while step():
            pass
        for _ in range(reps):
            g = _start_generator(lab, gen, cpus, size, 10.0, count)
            _finish_generator(g)
            time.sleep(0.02)  # let the kernel finish (veth NAPI, TPACKET block retire timer)
            got = 0
            t0 = time.perf_counter()
            while True:
                k = step()
                if not k:
                    break
                got += k
            seconds += time.perf_counter() - t0
            total += got
        extra = stats()
    extra["packets"] = total
    extra["queued_per_rep"] = count
    return total / seconds if seconds > 0 else None, extra


_PPS = re.compile(r"Rx-pps:\s+(\d+)")
_MISSED = re.compile(r"RX-missed:\s+(\d+)")


def _testpmd_ready(proc, timeout=30.0) -> str:
    import select

    buf = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not chunk:
                break
            buf += chunk
            if "testpmd>" in buf:
                return buf
    raise RuntimeError("testpmd did not come up: " + buf[-800:])


def _measure_testpmd(lab, cpus, warmup, window, gen, size):
    exe = shutil.which("dpdk-testpmd") or shutil.which("testpmd")
    if exe is None:
        return None, "dpdk-testpmd is not installed"
    lcores = f"{cpus.gen},{cpus.rx}" if len(cpus.allowed) > 1 else f"{cpus.rx}"
    argv = [exe, "-l", lcores, "--main-lcore", str(cpus.gen), "--no-huge", "--no-pci", "-m", "512",
            "--file-prefix", f"tmx{lab.tag}", "--log-level", "pmd.net.af_xdp:error",
            "--vdev", f"net_af_xdp0,iface={lab.near},start_queue=0,queue_count=1",
            "--", "-i", "--forward-mode=rxonly", "--total-num-mbufs=16384", "--nb-cores=1"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    g = None
    try:
        try:
            _testpmd_ready(proc)
        except RuntimeError as exc:
            return None, str(exc)[-300:]
        proc.stdin.write(b"start\n")
        proc.stdin.flush()
        g = _start_generator(lab, gen, cpus, size, warmup + window + 1.0)
        time.sleep(warmup)
        proc.stdin.write(b"show port stats all\n")
        proc.stdin.flush()
        time.sleep(window)
        proc.stdin.write(b"show port stats all\nstop\nquit\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=30)
        text = out.decode(errors="replace")
        pps = [int(x) for x in _PPS.findall(text)]
        missed = [int(x) for x in _MISSED.findall(text)]
        if len(pps) < 2:
            return None, "testpmd printed no port statistics: " + text[-500:]
        return {"pps": float(pps[1]), "kernel_drops": (missed[1] - missed[0]) if len(missed) > 1 else None,
                "command": " ".join(argv)}, None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if g is not None:
            _finish_generator(g)
        shutil.rmtree(f"/var/run/dpdk/tmx{lab.tag}", ignore_errors=True)


DRAIN_CONTENDERS = ("af_xdp", "tpacket_v3", "recvmmsg", "recvfrom")


def run(quick: bool = False, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Measure every receiver on a veth pair (needs root): live packets/s per contender and
    frame size, best of the rounds, and the drain test.  Returns rows, notes and settings, or
    ``skipped`` with the reason."""
    from turbomem.packet import vethlab

    why = vethlab.available()
    if why:
        return {"skipped": why, "rows": []}
    import turbomem as tm

    gen = _generator()
    cpus = _Cpus()
    warmup, window = (0.3, 1.0) if quick else (0.5, 2.0)
    rounds = 1 if quick else 3
    drain_count, drain_reps = 6000, (3 if quick else 8)
    best: Dict[tuple, Dict[str, Any]] = {}
    notes: List[str] = []
    total = len(SIZES) * rounds * (len(CONTENDERS) + len(DRAIN_CONTENDERS))
    done = 0

    def keep(key, row):
        prev = best.get(key)
        if prev is None or prev.get("pps") is None or (row.get("pps") or 0) > prev["pps"]:
            best[key] = row

    with vethlab.VethLab("bench") as lab:
        for size in SIZES:
            for rnd in range(rounds):
                order = CONTENDERS[rnd % len(CONTENDERS):] + CONTENDERS[:rnd % len(CONTENDERS)]
                for kind in order:
                    if progress is not None:
                        progress.update(done, total, f"xdp live {kind} {size} B")
                    done += 1
                    if kind == "testpmd":
                        res, skip = _measure_testpmd(lab, cpus, warmup, window, gen, size)
                        if res is None:
                            best.setdefault(("live", kind, size), {"skipped": skip})
                            continue
                        keep(("live", kind, size), {"pps": res["pps"], "kernel_drops": res["kernel_drops"],
                                                    "command": res["command"]})
                        continue
                    gen_seconds = warmup + window + 1.0
                    g = _start_generator(lab, gen, cpus, size, gen_seconds)
                    try:
                        time.sleep(0.05)
                        cpus.pin_rx()
                        try:
                            with tm.Pool(2048, 32768) as pool:
                                n, dt, extra = _measure_live(kind, lab, pool, warmup, window)
                        finally:
                            cpus.unpin()
                    finally:
                        sent = _finish_generator(g)
                    keep(("live", kind, size), {"pps": n / dt, "packets": n,
                                                "generator_pps": sent / gen_seconds, **extra})
                order = DRAIN_CONTENDERS[rnd % 4:] + DRAIN_CONTENDERS[:rnd % 4]
                for kind in order:
                    if progress is not None:
                        progress.update(done, total, f"xdp drain {kind} {size} B")
                    done += 1
                    cpus.pin_rx()
                    try:
                        with tm.Pool(2048, 32768) as pool:
                            pps, extra = _measure_drain(kind, lab, pool, gen, cpus, size, drain_count,
                                                        drain_reps)
                    finally:
                        cpus.unpin()
                    keep(("drain", kind, size), {"pps": pps, **extra})
    if progress is not None:
        progress.update(total, total, "xdp")
        progress.done()
    rows = []
    for phase, kinds in (("live", CONTENDERS), ("drain", DRAIN_CONTENDERS)):
        for size in SIZES:
            base = best.get((phase, "recvmmsg", size), {}).get("pps")
            for kind in kinds:
                r = best.get((phase, kind, size), {})
                pps = r.get("pps")
                rows.append({"name": f"{phase} {kind} {size} B", "phase": phase, "contender": kind,
                             "size": size, "packets_per_sec": pps,
                             "vs_recvmmsg": (pps / base) if pps is not None and base else None,
                             "packets": r.get("packets"), "generator_pps": r.get("generator_pps"),
                             "kernel_drops": r.get("kernel_drops"), "mode": r.get("mode"),
                             "skipped": r.get("skipped")})
                if kind == "testpmd" and r.get("command") and size == SIZES[0]:
                    notes.append(f"testpmd: {r['command']}")
    return {"skipped": None, "rows": rows, "notes": notes, "cpus": {"rx": cpus.rx, "gen": cpus.gen},
            "window_s": window, "rounds": rounds, "drain": {"queued": drain_count, "reps": drain_reps}}


def suite(quick: bool = False, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """run() as a suite result for `python -m turbomem bench xdp`."""
    res = run(quick, progress)
    out: Dict[str, Any] = {
        "suite": "xdp",
        "skipped": res.get("skipped"),
        "columns": [{"key": "name", "title": "receiver"},
                    {"key": "packets_per_sec", "title": "packets/s", "fmt": "d"},
                    {"key": "vs_recvmmsg", "title": "vs recvmmsg", "fmt": "x"},
                    {"key": "packets", "title": "packets", "fmt": "d"},
                    {"key": "generator_pps", "title": "generator sent/s", "fmt": "d"},
                    {"key": "kernel_drops", "title": "kernel drops", "fmt": "d"},
                    {"key": "mode", "title": "mode"},
                    {"key": "skipped", "title": "skipped"}],
        "rows": res.get("rows", []),
        "goals": [],
        "notes": ["receive packets/s on a veth pair, generator (C, sendmmsg, AF_PACKET) in the far "
                  "namespace pinned to CPU %s, receiver pinned to CPU %s; best of %s round(s) of %s s, "
                  "contenders alternating" % (res.get("cpus", {}).get("gen"), res.get("cpus", {}).get("rx"),
                                              res.get("rounds"), res.get("window_s")),
                  "live: the receiver reads while the generator sends flat out; drain: the generator "
                  "queues %s packets while nobody reads, then the receiver empties the queue against "
                  "the clock (the receive path alone, %s times per round); testpmd is live only"
                  % (res.get("drain", {}).get("queued"), res.get("drain", {}).get("reps")),
                  "generator sent/s: what the kernel accepted from the generator over its whole run "
                  "(the live ceiling)",
                  "copies per packet: AF_XDP copy mode 1 (kernel, into the pool object; on veth the driver "
                  "copies the sender's skb once more to get XDP headroom), zero-copy mode 0; TPACKET_V3 2 (kernel into the ring block, block into the pool object); "
                  "recvmmsg 1 (kernel into the pool object); recvfrom 1 (into a bytearray)"]
                 + res.get("notes", []),
    }
    if res.get("skipped"):
        return out
    by = {(r["phase"], r["contender"], r["size"]): r["packets_per_sec"] for r in out["rows"]}
    for phase in ("live", "drain"):
        for a, b, target, text in GOALS:
            for size in SIZES:
                if (phase, b, size) not in by:
                    continue
                pa, pb = by.get((phase, a, size)), by.get((phase, b, size))
                measured = (pa / pb) if pa and pb else None
                out["goals"].append({"goal": f"{text}, {size} B, {phase}", "target": target,
                                     "target_text": f">= {target:g}x", "measured": measured,
                                     "met": measured is not None and measured >= target,
                                     "detail": "same run, same veth, same generator"})
    labels = [f"{p} {s} B" for p in ("live", "drain") for s in SIZES]
    out["chart"] = {"title": "receive packets/s on a veth pair", "labels": labels,
                    "series": {k: [by.get((p, k, s)) for p in ("live", "drain") for s in SIZES]
                               for k in CONTENDERS},
                    "unit": "packets/s", "log": True}
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(suite("--quick" in sys.argv), indent=2, default=str))
