"""The `dpdk` suite: the turbomem mempool driver inside DPDK's own testpmd.

`python -m turbomem bench dpdk [--quick]` builds dpdk/ (the driver and its
mempool_perf harness) with make, then, in one run and alternating:

* dpdk-testpmd, io forwarding, in two topologies:
    null       two net_null vdevs with copy=1 (RX copies a packet into each
               mbuf, TX copies it out: packet memory is really touched);
    af_packet  net_af_packet on both ends of a veth pair in a network
               namespace made by the suite (real bytes through the kernel),
               primed with `start tx_first`;
  and three setups, everything else equal (same lcores, same mbuf count,
  same lcore cache):
    ring_mp_mc/hugetlb  DPDK's default ops on explicit 2 MB pages (the suite
                        raises nr_hugepages and puts it back afterwards);
    turbomem/THP        the driver, EAL --no-huge (its own THP region);
    ring_mp_mc/4K       DPDK's default ops, EAL --no-huge (4 KB pages);
  measured as Mpps forwarded (the sum of testpmd's Tx-pps over both ports,
  from `show port stats all` after a warm-up), with the huge page coverage
  of each pool's memory read from testpmd's /proc/<pid>/smaps while it runs;
* dpdk/mempool_perf (mempool_perf_autotest's loop, seconds per point instead
  of dpdk-test's 5 s x 720 points) for ring_mp_mc against turbomem.

Needs root (hugepages, namespaces), dpdk-testpmd and libdpdk-dev; what is
missing is skipped with the reason.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

from . import _paths, machine
from .report import Progress, ratio, summarize

SETUPS = ("ring_mp_mc/hugetlb", "turbomem/THP", "ring_mp_mc/4K")
TOPOLOGIES = ("null", "af_packet")
MBUFS = 32768
FULL = dict(reps=5, warm=2.0, seconds=5.0, perf_seconds=0.2, perf_reps=5)
QUICK = dict(reps=2, warm=1.0, seconds=2.0, perf_seconds=0.05, perf_reps=3)
HUGEPAGES_WANTED = 192  # 384 MB: the pool (~78 MB) plus EAL's own zones, with room
EAL_LCORES = "0-1"       # lcore 0: testpmd's CLI, lcore 1: forwarding
NOHUGE_MB = 512

GOALS = [
    # (goal, topology, setup, baseline, target)
    ("testpmd io (net_null): turbomem/THP vs ring_mp_mc on explicit hugepages", "null", "turbomem/THP",
     "ring_mp_mc/hugetlb", 1.0),
    ("testpmd io (net_null): turbomem/THP vs ring_mp_mc on 4 KB pages", "null", "turbomem/THP",
     "ring_mp_mc/4K", 1.1),
    ("testpmd io (af_packet): turbomem/THP vs ring_mp_mc on explicit hugepages", "af_packet", "turbomem/THP",
     "ring_mp_mc/hugetlb", 1.0),
    ("testpmd io (af_packet): turbomem/THP vs ring_mp_mc on 4 KB pages", "af_packet", "turbomem/THP",
     "ring_mp_mc/4K", 1.1),
]


# ---- building dpdk/ ---------------------------------------------------------------

def dpdk_dir() -> Optional[Path]:
    """The dpdk/ sources of a source checkout (None in an installed package)."""
    d = Path(__file__).resolve().parents[2] / "dpdk"
    return d if (d / "Makefile").is_file() and (d / "turbomem_mempool.c").is_file() else None


def build(out_dir: Optional[Path] = None) -> Tuple[Optional[Path], str]:
    """make -C dpdk O=<cache dir>.  Returns (output dir, "") or (None, why not).

    The output goes under the cache directory, never /tmp: EAL refuses to
    load a -d driver from a world-writable directory.  A lock keeps parallel
    builders (pytest workers) from racing."""
    src = dpdk_dir()
    if src is None:
        return None, "dpdk/ sources not found (run from a source checkout)"
    if not shutil.which("make") or not shutil.which("pkg-config"):
        return None, "make or pkg-config is not installed"
    if subprocess.run(["pkg-config", "--exists", "libdpdk"]).returncode != 0:
        return None, "libdpdk not found by pkg-config (install libdpdk-dev)"
    if out_dir is None:
        h = hashlib.sha256()
        for f in sorted(src.iterdir()) + sorted((src.parent / "include" / "turbomem").glob("*.h")) + \
                sorted((src.parent / "src").glob("*.c")):
            if f.is_file():
                h.update(f.name.encode() + f.read_bytes())
        out_dir = _paths.cache_dir() / ("dpdk-" + h.hexdigest()[:16])
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in [out_dir.resolve()] + list(out_dir.resolve().parents):
        if d.stat().st_mode & 0o002:
            return None, ("%s is world-writable: EAL would refuse to load the driver from %s "
                          "(set TURBOMEM_CACHE_DIR elsewhere)" % (d, out_dir))
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(["make", "-s", "-C", str(src), "O=%s" % out_dir, "all"], capture_output=True,
                           text=True, timeout=600)
    if r.returncode != 0:
        return None, "make -C dpdk failed: %s" % (r.stderr or r.stdout).strip()[-800:]
    return out_dir, ""


# ---- parsing testpmd's output ---------------------------------------------------------

_STATS_BLOCK = re.compile(r"NIC statistics for port (\d+)\s*#+[ \t]*\n(.*?)\n\s*#{20,}", re.S)


def parse_port_stats(text: str) -> List[Dict[int, Dict[str, int]]]:
    """Every `show port stats all` in order: [{port: {"tx_pps", "rx_pps", "tx_packets", ...}}]."""
    shows: List[Dict[int, Dict[str, int]]] = []
    current: Dict[int, Dict[str, int]] = {}
    for m in _STATS_BLOCK.finditer(text):
        port, body = int(m.group(1)), m.group(2)
        if port in current:  # the next show starts again at a port already seen
            shows.append(current)
            current = {}
        vals = {}
        for key, pat in (("rx_packets", r"RX-packets:\s+(\d+)"), ("tx_packets", r"TX-packets:\s+(\d+)"),
                         ("rx_pps", r"Rx-pps:\s+(\d+)"), ("tx_pps", r"Tx-pps:\s+(\d+)"),
                         ("rx_nombuf", r"RX-nombuf:\s+(\d+)")):
            f = re.search(pat, body)
            if f:
                vals[key] = int(f.group(1))
        current[port] = vals
    if current:
        shows.append(current)
    return shows


_ZONE = re.compile(r"Zone \d+: name:<([^>]*)>, len:0x([0-9a-fA-F]+), virt:0x([0-9a-fA-F]+)")
_TM_REGION = re.compile(r"turbomem: pool (\S+): .*? in 0x([0-9a-f]+)-0x([0-9a-f]+)")


def pool_ranges(text: str, pool: str = "mb_pool_0") -> List[Tuple[int, int]]:
    """[start, end) of a mempool's objects: the driver's own region when it logged
    one, else the memzones DPDK reserved for it (MP_<pool>_<n>)."""
    tm = [(int(a, 16), int(b, 16)) for name, a, b in _TM_REGION.findall(text) if name == pool]
    if tm:
        return tm
    out = []
    for name, ln, virt in _ZONE.findall(text):
        if re.fullmatch(r"MP_%s_\d+" % re.escape(pool), name):
            out.append((int(virt, 16), int(virt, 16) + int(ln, 16)))
    return out


def parse_smaps(text: str) -> List[Dict[str, Any]]:
    """VMAs of a smaps file: start, end, kernel page size, AnonHugePages, hugetlb bytes."""
    vmas: List[Dict[str, Any]] = []
    for line in text.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            vmas.append({"start": int(m.group(1), 16), "end": int(m.group(2), 16), "kps": 4096,
                         "anon_huge": 0, "hugetlb": 0})
            continue
        if not vmas:
            continue
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            kb = int(f[1]) * 1024
            if f[0] == "KernelPageSize:":
                vmas[-1]["kps"] = kb
            elif f[0] == "AnonHugePages:":
                vmas[-1]["anon_huge"] = kb
            elif f[0] in ("Private_Hugetlb:", "Shared_Hugetlb:"):
                vmas[-1]["hugetlb"] += kb
    return vmas


def coverage(vmas: List[Dict[str, Any]], ranges: List[Tuple[int, int]]) -> Tuple[Optional[float], str]:
    """Fraction of the ranges' bytes on huge pages, and how it was established.

    hugetlb VMAs (KernelPageSize > 4 KB) are huge throughout.  An anonymous VMA
    inside a range counts its AnonHugePages exactly; one that extends beyond
    the range (DPDK's --no-huge heap) contributes exactly 0 when it has no
    huge pages, otherwise its huge share pro rata (marked "estimate")."""
    total = sum(b - a for a, b in ranges)
    if not total:
        return None, "pool memory not found"
    huge, how = 0.0, "exact"
    for a, b in ranges:
        for v in vmas:
            lo, hi = max(a, v["start"]), min(b, v["end"])
            if lo >= hi:
                continue
            size = v["end"] - v["start"]
            if v["kps"] > 4096:
                huge += hi - lo
            elif v["start"] >= a and v["end"] <= b:
                huge += v["anon_huge"]
            elif v["anon_huge"]:
                huge += (hi - lo) * v["anon_huge"] / size
                how = "estimate (a VMA wider than the pool)"
    return min(1.0, huge / total), how


# ---- hugepages and namespaces -----------------------------------------------------------

_NR = "/proc/sys/vm/nr_hugepages"


class Hugepages:
    """Raise nr_hugepages to hold `want` free pages; put the old value back on exit."""

    #: free 2 MB pages wanted
    want: int
    #: nr_hugepages before (None until read; nothing to put back)
    old: Optional[int]
    #: why the pages could not be had ("" when they were)
    why: str

    def __init__(self, want: int) -> None:
        self.want, self.old, self.why = want, None, ""

    def __enter__(self) -> Hugepages:
        """Reserve the pages (best effort: ``why`` says what went wrong); returns self."""
        try:
            ht = machine.hugetlb_pages()
            free = ht.get("HugePages_Free", 0)
            if ht.get("Hugepagesize", 0) != 2048:
                self.why = "default hugepage size is %s kB, not 2048" % ht.get("Hugepagesize")
                return self
            self.old = int(open(_NR).read())
            if free < self.want:
                with open(_NR, "w") as f:
                    f.write(str(self.old + self.want - free))
            free = machine.hugetlb_pages().get("HugePages_Free", 0)
            if free < self.want:
                self.why = "only %d of %d 2 MB hugepages could be reserved" % (free, self.want)
        except OSError as e:
            self.why = "cannot reserve hugepages (%s; root needed)" % e
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        """Put nr_hugepages back to its old value."""
        if self.old is not None:
            try:
                with open(_NR, "w") as f:
                    f.write(str(self.old))
            except OSError:
                pass
        return False


class VethNamespace:
    """A network namespace with a veth pair tmv0 <-> tmv1, deleted on exit."""

    #: the namespace's name
    name: str
    #: why the namespace could not be made ("" when it was)
    why: str

    def __init__(self) -> None:
        self.name = "tmbench%d" % os.getpid()
        self.why = ""

    def __enter__(self) -> VethNamespace:
        """Make the namespace and the pair (best effort: ``why`` says what failed); returns self."""
        ip = shutil.which("ip")
        if not ip:
            self.why = "iproute2 (ip) not installed"
            return self
        cmds = [[ip, "netns", "add", self.name],
                [ip, "-n", self.name, "link", "add", "tmv0", "type", "veth", "peer", "name", "tmv1"],
                [ip, "-n", self.name, "link", "set", "tmv0", "up"],
                [ip, "-n", self.name, "link", "set", "tmv1", "up"]]
        for c in cmds:
            r = subprocess.run(c, capture_output=True, text=True)
            if r.returncode != 0:
                self.why = "%s: %s" % (" ".join(c[1:]), r.stderr.strip())
                self.__exit__()
                return self
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        """Delete the namespace (and with it the pair)."""
        if shutil.which("ip"):
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        return False


# ---- one testpmd run ---------------------------------------------------------------------

def testpmd_command(setup: str, topology: str, driver: Path, prefix: str, netns: Optional[str]) -> List[str]:
    """The dpdk-testpmd argv for one setup ("ops/memory") and topology ("null" or
    "af_packet"), run inside ``netns`` when given; ``driver`` is the build output dir."""
    ops, memory = setup.split("/")
    cmd = ["ip", "netns", "exec", netns] if netns else []
    if shutil.which("stdbuf"):
        # testpmd printf()s into a pipe (block buffered) while its command line
        # echoes with write(): unbuffered, the two cannot interleave mid-line.
        cmd += ["stdbuf", "-o0"]
    cmd += [shutil.which("dpdk-testpmd") or "dpdk-testpmd", "-l", EAL_LCORES, "--no-pci",
            "--log-level=lib.eal:warning", "--file-prefix", prefix]
    if memory == "hugetlb":
        cmd += ["--in-memory"]  # memfd hugetlb pages: no hugetlbfs mount, no files left behind
    else:
        cmd += ["--no-huge", "--no-shconf", "-m", str(NOHUGE_MB)]
    if ops == "turbomem":
        cmd += ["-d", str(driver / "librte_mempool_turbomem.so"), "--mbuf-pool-ops-name", "turbomem"]
    else:
        cmd += ["--mbuf-pool-ops-name", ops]
    if topology == "null":
        cmd += ["--vdev", "net_null0,copy=1", "--vdev", "net_null1,copy=1"]
    else:
        cmd += ["--vdev", "net_af_packet0,iface=tmv0", "--vdev", "net_af_packet1,iface=tmv1"]
    cmd += ["--", "-i", "--forward-mode=io", "--nb-cores=1", "--total-num-mbufs=%d" % MBUFS]
    return cmd


class _Reader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.chunks, self.lock = stream, [], threading.Lock()

    def run(self):
        while True:
            b = os.read(self.stream.fileno(), 65536)
            if not b:
                return
            with self.lock:
                self.chunks.append(b.decode(errors="replace"))

    def text(self) -> str:
        with self.lock:
            return "".join(self.chunks)


def run_testpmd(setup: str, topology: str, driver: Path, warm: float, seconds: float,
                netns: Optional[str] = None) -> Dict[str, Any]:
    """Start testpmd, forward for warm + seconds, return Mpps and pool coverage."""
    prefix = "tmbench%d_%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    cmd = testpmd_command(setup, topology, driver, prefix, netns)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = _Reader(p.stdout)
    reader.start()
    row: Dict[str, Any] = {"setup": setup, "topology": topology, "command": " ".join(cmd)}

    stdin = p.stdin
    assert stdin is not None  # stdin=PIPE

    def send(line: str) -> None:
        stdin.write((line + "\n").encode())
        stdin.flush()

    def wait_for(pattern: str, timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if re.search(pattern, reader.text()) or p.poll() is not None:
                return bool(re.search(pattern, reader.text()))
            time.sleep(0.05)
        return False

    def count(pattern: str) -> int:
        return len(re.findall(pattern, reader.text()))

    t_launch = time.time()
    try:
        if not wait_for(r"testpmd> ", 120):
            row["error"] = "testpmd did not start: " + reader.text()[-600:].strip()
            return row
        row["startup_s"] = time.time() - t_launch
        prompts = count(r"testpmd> ")
        # One command at a time, each after the previous one's prompt came back.
        for c in ("dump_memzone", "start tx_first 4" if topology == "af_packet" else "start"):
            send(c)
            wait_for(r"(?s)(testpmd> .*){%d}" % (prompts + 1), 30)
            prompts += 1
        time.sleep(warm)
        send("show port stats all")
        wait_for(r"(?s)(NIC statistics for port.*){2}", 30)
        t0 = time.time()
        time.sleep(seconds)
        send("show port stats all")
        t1 = time.time()
        wait_for(r"(?s)(NIC statistics for port.*){4}", 30)
        try:
            # `ip netns exec` and stdbuf exec testpmd: p.pid is testpmd's pid.
            smaps = open("/proc/%d/smaps" % p.pid).read()
        except OSError as e:
            smaps = ""
            row["coverage_how"] = "smaps unreadable: %s" % e
        send("stop")
        send("quit")
        t_quit = time.time()
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        reader.join(timeout=5)
        row["quit_s"] = time.time() - t_quit
        text = reader.text()
        shows = parse_port_stats(text)
        if len(shows) < 2:
            row["error"] = "no port statistics: " + text[-600:].strip()
            return row
        first, last = shows[-2], shows[-1]
        row["mpps"] = sum(v.get("tx_pps", 0) for v in last.values()) / 1e6
        sent = sum(last[k].get("tx_packets", 0) - first.get(k, {}).get("tx_packets", 0) for k in last)
        row["mpps_wallclock"] = sent / max(t1 - t0, 1e-9) / 1e6  # cross-check, our own clock
        row["rx_nombuf"] = sum(v.get("rx_nombuf", 0) for v in last.values())
        ranges = pool_ranges(text)
        row["pool_bytes"] = sum(b - a for a, b in ranges)
        if smaps:
            row["coverage"], row["coverage_how"] = coverage(parse_smaps(smaps), ranges)
        m = _TM_REGION.search(text)
        if m:
            line = text[m.start():text.find("\n", m.start())]
            row["driver_log"] = line.strip()
        return row
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---- mempool_perf ---------------------------------------------------------------------

def run_mempool_perf(out: Path, seconds: float, reps: int) -> Tuple[List[Dict[str, Any]], str]:
    """Run the built mempool_perf (ring_mp_mc vs turbomem).  Returns its JSON rows and
    the command line, or the rows so far and why it failed."""
    exe = out / "mempool_perf"
    cmd = [str(exe), "--no-huge", "--no-pci", "--no-shconf", "-m", "512", "-l", EAL_LCORES,
           "--file-prefix", "tmperf%d" % os.getpid(), "--log-level=lib.eal:warning",
           "--log-level=user.turbomem:warning", "--",
           "--ops", "ring_mp_mc,turbomem", "--cache", "0,256", "--bulk", "1,32", "--keep", "128,2048",
           "--cores", "1,all", "--seconds", str(seconds), "--reps", str(reps)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0:
        return rows, "mempool_perf failed (%d): %s" % (r.returncode, r.stderr.strip()[-400:])
    return rows, " ".join(cmd)


def perf_rows(raw: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per mempool_perf case: median Mobj/s of ring_mp_mc and turbomem, and their ratio."""
    groups: Dict[tuple, Dict[str, List[float]]] = {}
    for r in raw:
        k = (r["cache"], r["bulk"], r["keep"], r["cores"])
        groups.setdefault(k, {}).setdefault(r["ops"], []).append(r["objs_per_s"])
    rows = []
    for (cache, bulk, keep, cores), by in sorted(groups.items()):
        ring = summarize(by.get("ring_mp_mc", []))["median"]
        tm = summarize(by.get("turbomem", []))["median"]
        rows.append({"case": "cache %d, bulk %d, keep %d, %d lcore%s" % (cache, bulk, keep, cores,
                                                                        "s" if cores > 1 else ""),
                     "ring_mops": None if ring is None else ring / 1e6,
                     "turbomem_mops": None if tm is None else tm / 1e6, "ratio": ratio(tm, ring)})
    return rows


# ---- the suite -----------------------------------------------------------------------

COLUMNS = [
    {"key": "topology", "title": "topology"},
    {"key": "setup", "title": "setup"},
    {"key": "mpps", "title": "Mpps (median)", "fmt": "f"},
    {"key": "range", "title": "(min-max)", "fmt": "r"},
    {"key": "vs_hugetlb", "title": "vs ring/hugetlb", "fmt": "x"},
    {"key": "vs_4k", "title": "vs ring/4K", "fmt": "x"},
    {"key": "paired_hugetlb", "title": "paired vs hugetlb", "fmt": "x"},
    {"key": "paired_4k", "title": "paired vs 4K", "fmt": "x"},
    {"key": "coverage", "title": "pool on huge pages", "fmt": "%"},
    {"key": "pool_mib", "title": "pool MiB", "fmt": "d"},
    {"key": "n", "title": "runs", "fmt": "d"},
]


def build_rows(raw: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The table (``COLUMNS``): one row per topology and setup, median Mpps over the runs,
    ratios to both ring_mp_mc setups, huge page coverage and pool size."""
    rows = []
    med: Dict[Tuple[str, str], Optional[float]] = {}
    for topo in TOPOLOGIES:
        for setup in SETUPS:
            runs = [r for r in raw if r["topology"] == topo and r["setup"] == setup and "mpps" in r]
            s = summarize([r["mpps"] for r in runs])
            med[(topo, setup)] = s["median"]
            covs = [r["coverage"] for r in runs if r.get("coverage") is not None]
            sizes = [r["pool_bytes"] for r in runs if r.get("pool_bytes")]
            rows.append({"topology": topo, "setup": setup, "mpps": s["median"],
                         "range": None if s["median"] is None else "%.2f-%.2f" % (s["min"], s["max"]),
                         "coverage": min(covs) if covs else None,
                         "pool_mib": max(sizes) / 2**20 if sizes else None, "n": s["n"]})
    for r in rows:
        r["vs_hugetlb"] = ratio(r["mpps"], med.get((r["topology"], "ring_mp_mc/hugetlb")))
        r["vs_4k"] = ratio(r["mpps"], med.get((r["topology"], "ring_mp_mc/4K")))
        r["paired_hugetlb"] = paired_ratio(raw, r["topology"], r["setup"], "ring_mp_mc/hugetlb")
        r["paired_4k"] = paired_ratio(raw, r["topology"], r["setup"], "ring_mp_mc/4K")
    return rows


def paired_ratio(raw: List[Dict[str, Any]], topo: str, setup: str, base: str) -> Optional[float]:
    """Median over repetitions of setup/base within the same repetition: the
    setups of one repetition run back to back, so a load change on a shared
    machine hits both sides of each ratio about equally."""
    by: Dict[Tuple[str, int], float] = {(r["setup"], r["rep"]): r["mpps"] for r in raw
                                        if r["topology"] == topo and r.get("mpps") and "rep" in r}
    rs = [by[(setup, rep)] / by[(base, rep)] for (s_, rep) in by if s_ == setup and (base, rep) in by]
    return statistics.median(rs) if rs else None


def evaluate_goals(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``GOALS`` and the driver's THP coverage, each measured against its target (met: bool or None)."""
    by = {(r["topology"], r["setup"]): r for r in rows}
    goals = []
    for text, topo, setup, base, target in GOALS:
        a, b = by.get((topo, setup), {}).get("mpps"), by.get((topo, base), {}).get("mpps")
        m = ratio(a, b)
        goals.append({"goal": text, "target": target, "target_text": ">= %.1fx" % target, "measured": m,
                      "met": None if m is None else m >= target,
                      "detail": "medians %s vs %s Mpps; paired per-repetition ratio %s" % (
                          "-" if a is None else "%.2f" % a, "-" if b is None else "%.2f" % b,
                          _x(by.get((topo, setup), {}).get("paired_hugetlb" if "hugetlb" in base else "paired_4k")))})
    thp = (machine.thp_mode() or {}).get("enabled")
    tm_cov = [r["coverage"] for r in rows if r["setup"] == "turbomem/THP" and r.get("coverage") is not None]
    goals.append({"goal": "THP coverage of the driver's region (THP enabled=%s)" % thp, "target": 1.0,
                  "target_text": "100%" if thp in ("madvise", "always") else "n/a (THP %s)" % thp,
                  "measured": min(tm_cov) if tm_cov else None,
                  "met": (min(tm_cov) >= 1.0) if tm_cov and thp in ("madvise", "always") else None,
                  "detail": "lowest over every turbomem run, from testpmd's /proc/<pid>/smaps"})
    return goals


def run(quick: bool = False, progress: Optional[Progress] = None,
        params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run the suite (``QUICK`` or ``FULL`` parameters unless ``params``) and return its result:
    rows, goals, mempool_perf, chart and notes, or ``skipped`` with the reason."""
    params = dict(params or (QUICK if quick else FULL))
    res: Dict[str, Any] = {"suite": "dpdk", "skipped": None, "notes": [], "columns": COLUMNS, "rows": [],
                           "goals": [], "params": params}
    out, why = build()
    if out is None:
        res["skipped"] = why
        return res
    if not shutil.which("dpdk-testpmd"):
        res["skipped"] = "dpdk-testpmd not installed (apt install dpdk)"
        return res
    if os.geteuid() != 0:
        res["notes"].append("not root: explicit hugepages and the veth namespace need root")
    reps = int(params["reps"])
    raw: List[Dict[str, Any]] = []
    perf_raw: List[Dict[str, Any]] = []
    with Hugepages(HUGEPAGES_WANTED) as hp, VethNamespace() as ns:
        setups = [s for s in SETUPS if not (s.endswith("hugetlb") and hp.why)]
        if hp.why:
            res["notes"].append("ring_mp_mc/hugetlb skipped: %s" % hp.why)
        topos = [t for t in TOPOLOGIES if not (t == "af_packet" and ns.why)]
        if ns.why:
            res["notes"].append("af_packet topology skipped: %s" % ns.why)
        total = reps * len(topos) * len(setups) + 1
        done = 0
        for rep in range(reps):
            for topo in topos:
                for i in range(len(setups)):
                    setup = setups[(i + rep) % len(setups)]  # rotate who goes first
                    if progress:
                        progress.update(done, total, "dpdk: %s %s rep %d" % (topo, setup, rep))
                    r = run_testpmd(setup, topo, out, params["warm"], params["seconds"],
                                    ns.name if topo == "af_packet" else None)
                    r["rep"] = rep
                    raw.append(r)
                    if r.get("error"):
                        res["notes"].append("%s %s rep %d: %s" % (topo, setup, rep, r["error"][:300]))
                    done += 1
        if progress:
            progress.update(done, total, "dpdk: mempool_perf")
        perf_raw, perf_cmd = run_mempool_perf(out, params["perf_seconds"], int(params["perf_reps"]))
        if progress:
            progress.update(total, total, "dpdk")
            progress.done()
    res["raw"] = raw
    res["rows"] = build_rows(raw)
    res["goals"] = evaluate_goals(res["rows"])
    res["mempool_perf"] = {"command": perf_cmd, "rows": perf_rows(perf_raw), "raw": perf_raw}
    # Ratios, not Mpps: af_packet moves ~1/200 of net_null's packets and would vanish on one axis.
    by = {(r["topology"], r["setup"]): r for r in res["rows"]}
    res["chart"] = {"title": "dpdk: testpmd io forwarding, Mpps relative to ring_mp_mc on explicit hugepages "
                             "(median; higher is better)",
                    "labels": list(TOPOLOGIES),
                    "series": {s_: [by.get((t, s_), {}).get("vs_hugetlb") for t in TOPOLOGIES] for s_ in SETUPS},
                    "unit": "x ring_mp_mc/hugetlb"}
    for r in raw:
        if r.get("driver_log"):
            res["notes"].append("driver: " + r["driver_log"].split("turbomem: ", 1)[-1])
            break
    res["notes"].append("testpmd: -l %s (lcore 1 forwards), --total-num-mbufs=%d, default lcore cache (250), "
                        "io forwarding; Mpps = sum of both ports' Tx-pps from `show port stats all` over %.0f s "
                        "after %.0f s warm-up; hugetlb: --in-memory on 2 MB pages; 4K and THP: --no-huge -m %d"
                        % (EAL_LCORES, MBUFS, params["seconds"], params["warm"], NOHUGE_MB))
    res["notes"].append("mempool_perf (%s):" % perf_cmd)
    for r in res["mempool_perf"]["rows"]:
        res["notes"].append("  %s: ring_mp_mc %s, turbomem %s Mobj/s (%s)" % (
            r["case"], _f(r["ring_mops"]), _f(r["turbomem_mops"]),
            "-" if r["ratio"] is None else "%.2fx" % r["ratio"]))
    perf = machine.perf_counters()
    if not perf.get("available"):
        res["notes"].append("dTLB-load-misses not measured: no hardware perf counters here (%s)"
                            % perf.get("why"))
    return res


def _x(v: Optional[float]) -> str:
    return "-" if v is None else "%.2fx" % v


def _f(v: Optional[float]) -> str:
    return "-" if v is None else "%.1f" % v


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1, default=str))
