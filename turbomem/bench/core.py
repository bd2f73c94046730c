"""The `core` suite: TurboMem's C pool against DPDK's rte_mempool.

Compiles core_bench.c with the core's src/pool.c into the cache directory, with DPDK when `pkg-config libdpdk` finds it, runs it, and turns
its JSON lines into median / min / max per configuration and TurboMem/DPDK
ratios per row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _paths
from .report import Progress, ratio, summarize

# The entry points; the rest is the suite's machinery, not API.
__all__ = ["run"]


DRIVERS = ("ring_mp_mc", "stack", "lf_stack")

# TurboMem's modes, as the harness names them (impl "turbomem", driver =
# mode), the row-key prefix each gets and the prefix of its ratios to DPDK:
# tm_* is checked (the default mode), tmu_* unchecked (TM_POOL_UNCHECKED), both
# through a thread cache looked up once per thread, as DPDK's harness passes
# its per-lcore cache; tmt_* is unchecked through tm_pool_get/put, which find
# the thread's cache on every call.
MODES = (("checked", "tm", "x_"), ("unchecked", "tmu", "xu_"), ("unchecked_tls", "tmt", "xt_"))

# DPDK's mempool_perf_autotest matrix; `all` threads = every core; "bulk" is
# n_keep == bulk, the autotest's own shape.
FULL = dict(caches="0,256,512", bulks="1,4,8,32,64,128,256", keeps="bulk,128,512,2048",
            threads="1,all", reps=5, seconds=0.2, warmup=0.02)
# Every configuration the goals name, and n_keep 128 beside them.
QUICK = dict(caches="0,256", bulks="1,32", keeps="bulk,128,512",
             threads="1,all", reps=5, seconds=0.1, warmup=0.01)
SMOKE = dict(caches="0,256", bulks="1,32", keeps="128", threads="1", reps=2, seconds=0.01, warmup=0.0)

# (goal text, mode, cache, bulk, n_keep (0: == bulk), threads ("1"/"all"), driver, target).
# mode "checked-all-256" means: every cache-256 row of checked mode (the minimum).
#: (goal, mode, cache, bulk, n_keep (0: == bulk), threads ("1"/"all"), baseline driver, target ratio);
#: the "checked-all-256" goal leaves bulk, n_keep and threads None (every cache-256 row)
GOALS: List[Tuple[str, str, int, Optional[int], Optional[int], Optional[str], str, float]] = [
    ("unchecked, cache 256, keep == bulk 1, 1 thread vs ring_mp_mc", "unchecked", 256, 1, 0, "1", "ring_mp_mc", 1.2),
    ("unchecked, cache 256, keep == bulk 1, all threads vs ring_mp_mc", "unchecked", 256, 1, 0, "all", "ring_mp_mc", 1.2),
    ("unchecked, cache 256, keep == bulk 32, 1 thread vs ring_mp_mc", "unchecked", 256, 32, 0, "1", "ring_mp_mc", 1.8),
    ("unchecked, cache 256, keep == bulk 32, all threads vs ring_mp_mc", "unchecked", 256, 32, 0, "all", "ring_mp_mc", 1.8),
    ("unchecked, cache 256, n_keep 512, bulk 1, 1 thread vs ring_mp_mc", "unchecked", 256, 1, 512, "1", "ring_mp_mc", 1.0),
    ("unchecked, cache 256, n_keep 512, bulk 32, 1 thread vs ring_mp_mc", "unchecked", 256, 32, 512, "1", "ring_mp_mc", 1.0),
    ("unchecked, cache 256, n_keep 512, bulk 1, all threads vs ring_mp_mc", "unchecked", 256, 1, 512, "all", "ring_mp_mc", 1.0),
    ("unchecked, cache 256, n_keep 512, bulk 32, all threads vs ring_mp_mc", "unchecked", 256, 32, 512, "all", "ring_mp_mc", 1.0),
    ("unchecked, no cache, keep == bulk 1, 1 thread vs ring_mp_mc", "unchecked", 0, 1, 0, "1", "ring_mp_mc", 1.0),
    ("unchecked, no cache, keep == bulk 1, 1 thread vs lf_stack", "unchecked", 0, 1, 0, "1", "lf_stack", 3.0),
    ("unchecked, no cache, keep == bulk 32, 1 thread vs ring_mp_mc", "unchecked", 0, 32, 0, "1", "ring_mp_mc", 0.8),
    ("checked, every cache-256 row vs ring_mp_mc (the lowest)", "checked-all-256", 256, None, None, None,
     "ring_mp_mc", 0.9),
]


@dataclass
class Build:
    """The compiled C harness: where it is, and whether DPDK is in it (and why not)."""
    path: Optional[str]
    with_dpdk: bool
    dpdk_skipped: Optional[str]  # why the DPDK comparison is skipped (None: it is not)
    command: List[str] = field(default_factory=list)
    error: Optional[str] = None  # the harness could not be built at all


def _run(cmd: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def dpdk_flags() -> tuple[list[str], list[str], Optional[str]]:
    """(cflags, libs, reason): flags from `pkg-config libdpdk`, or reason=why not."""
    pc = shutil.which("pkg-config")
    if not pc:
        return [], [], "pkg-config is not installed"
    try:
        c = _run([pc, "--cflags", "libdpdk"], 30)
        l = _run([pc, "--libs", "libdpdk"], 30)
    except (OSError, subprocess.SubprocessError) as e:
        return [], [], "pkg-config failed: %s" % e
    if c.returncode != 0 or l.returncode != 0:
        return [], [], "libdpdk not found by pkg-config (install libdpdk-dev)"
    return shlex.split(c.stdout), shlex.split(l.stdout), None


def _digest(parts: Sequence[Any], files: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    for f in files:
        with open(f, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def compile_harness(want_dpdk: bool = True, cc: Optional[str] = None,
                    out_dir: Optional[str] = None, force: bool = False) -> Build:
    """Build core_bench (cached by a hash of sources, headers and flags)."""
    cc = cc or os.environ.get("CC") or "cc"
    src = str(_paths.bench_source("core_bench.c"))
    try:
        inc = str(_paths.include_dir())
        core_srcs = [str(p) for p in _paths.core_sources()]
    except FileNotFoundError as e:
        return Build(None, False, str(e), error=str(e))
    headers = sorted(os.path.join(inc, "turbomem", f) for f in os.listdir(os.path.join(inc, "turbomem"))
                     if f.endswith(".h"))
    out_dir = out_dir or str(_paths.cache_dir())
    base = [cc, "-O2", "-g"]
    # -march=native comes after pkg-config's cflags: DPDK's .pc carries its own
    # -march (corei7 on Debian) and the last one wins.
    tail = ["-march=native", "-I", inc, src] + core_srcs

    dpdk_reason: Optional[str] = "not requested"
    if want_dpdk:
        cflags, libs, dpdk_reason = dpdk_flags()
        if dpdk_reason is None:
            cmd = base + cflags + ["-DTM_WITH_DPDK"] + tail
            key = _digest([cmd, libs, _cc_version(cc)], [src] + core_srcs + headers)
            out = os.path.join(out_dir, "core_bench-dpdk-%s" % key)
            cmd = cmd + ["-o", out] + libs + ["-lpthread"]
            if not force and os.access(out, os.X_OK):
                return Build(out, True, None, cmd)
            r = _run(cmd)
            if r.returncode == 0:
                return Build(out, True, None, cmd)
            dpdk_reason = "building with DPDK failed: %s" % _tail(r.stderr)
    cmd = base + tail
    key = _digest([cmd, _cc_version(cc)], [src] + core_srcs + headers)
    out = os.path.join(out_dir, "core_bench-%s" % key)
    cmd = cmd + ["-o", out, "-lpthread"]
    if not force and os.access(out, os.X_OK):
        return Build(out, False, dpdk_reason, cmd)
    try:
        r = _run(cmd)
    except (OSError, subprocess.SubprocessError) as e:
        return Build(None, False, dpdk_reason, cmd, error="cannot run %s: %s" % (cc, e))
    if r.returncode != 0:
        return Build(None, False, dpdk_reason, cmd, error="compiling core_bench.c failed: %s" % _tail(r.stderr))
    return Build(out, False, dpdk_reason, cmd)


def _cc_version(cc: str) -> str:
    try:
        return _run([cc, "--version"], 30).stdout.splitlines()[0]
    except Exception:
        return "?"


def _tail(text: str, n: int = 6) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def harness_args(params: Dict[str, Any], with_dpdk: bool) -> List[str]:
    """The harness's command-line arguments for one parameter set."""
    ours = "tm,tm_unchecked,tm_unchecked_tls"
    impls = ours + "," + ",".join(DRIVERS) if with_dpdk else ours
    args = ["--impls", impls, "--caches", str(params["caches"]), "--bulks", str(params["bulks"]),
            "--keeps", str(params["keeps"]), "--threads", str(params["threads"]),
            "--reps", str(params["reps"]), "--seconds", str(params["seconds"]),
            "--warmup", str(params["warmup"])]
    if params.get("pool_size"):
        args += ["--pool-size", str(params["pool_size"])]
    eal = os.environ.get("TURBOMEM_BENCH_EAL")
    if with_dpdk and eal:
        args += ["--"] + shlex.split(eal)
    return args


def parse_lines(lines: Sequence[str]) -> Dict[str, Any]:
    """Split harness output into meta, results and errors (bad lines kept aside)."""
    meta: Dict[str, Any] = {}
    results: List[Dict[str, Any]] = []
    errors: List[Dict[str, Any]] = []
    garbage: List[str] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            if line:
                garbage.append(line)
            continue
        try:
            d = json.loads(line)
        except ValueError:
            garbage.append(line)
            continue
        t = d.get("type")
        if t == "meta":
            meta = d
        elif t == "result":
            results.append(d)
        elif t == "error":
            errors.append(d)
    return {"meta": meta, "results": results, "errors": errors, "garbage": garbage}


def run_harness(build: Build, params: Dict[str, Any],
                on_line: Optional[Callable[[int, int, Dict[str, Any]], None]] = None,
                timeout: float = 1800) -> Dict[str, Any]:
    """Run the harness; its JSON lines as a suite result (progress through on_line)."""
    args = harness_args(params, build.with_dpdk)
    if build.path is None:
        raise ValueError("the harness was not built")
    total = 0
    try:
        plan = _run([build.path, "--list"] + args, 60)
        total = sum(1 for l in plan.stdout.splitlines() if '"plan"' in l) * int(params["reps"])
    except (OSError, subprocess.SubprocessError):
        pass
    proc = subprocess.Popen([build.path] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: List[str] = []
    done = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if '"result"' in line or ('"error"' in line and '"rep"' in line):
            done += 1
            if on_line:
                try:
                    on_line(done, total, json.loads(line))
                except ValueError:
                    pass
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    out = parse_lines(lines)
    out["returncode"] = proc.returncode
    out["stderr"] = err[-4000:] if err else ""
    out["command"] = [build.path] + args
    out["planned"] = total
    return out


def aggregate(results: Sequence[Dict[str, Any]]) -> Dict[tuple[Any, ...], Dict[str, Any]]:
    """(impl, driver, cache, bulk, n_keep, threads) -> summaries of rate and ns."""
    groups: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["impl"], r["driver"], r["cache"], r["bulk"], r["n_keep"], r["threads"])].append(r)
    out = {}
    for k, rs in groups.items():
        out[k] = {"rate": summarize(x["rate_persec"] for x in rs),
                  "ns": summarize(x["ns_per_obj"] for x in rs),
                  "reps": len(rs)}
    return out


def paired_ratios(results: Sequence[Dict[str, Any]], config: tuple[Any, ...], driver: str,
                  mode: str = "checked") -> List[float]:
    """TurboMem/DPDK rate per repetition (the two ran back to back in that rep)."""
    cache, bulk, keep, threads = config
    tm, dp = {}, {}
    for r in results:
        if (r["cache"], r["bulk"], r["n_keep"], r["threads"]) != config:
            continue
        if r["impl"] == "turbomem" and r["driver"] == mode:
            tm[r["rep"]] = r["rate_persec"]
        elif r["driver"] == driver:
            dp[r["rep"]] = r["rate_persec"]
    return [tm[k] / dp[k] for k in sorted(tm) if k in dp and dp[k] > 0]


COLUMNS = [
    {"key": "cache", "title": "cache", "fmt": "d"},
    {"key": "bulk", "title": "bulk", "fmt": "d"},
    {"key": "n_keep", "title": "n_keep", "fmt": "d"},
    {"key": "threads", "title": "thr", "fmt": "d"},
    {"key": "tm_ns", "title": "checked ns/obj", "fmt": "ns"},
    {"key": "tmu_ns", "title": "unchecked ns/obj", "fmt": "ns"},
    {"key": "tmt_ns", "title": "unchecked, lookup per call", "fmt": "ns"},
    {"key": "ring_mp_mc_ns", "title": "ring_mp_mc", "fmt": "ns"},
    {"key": "stack_ns", "title": "stack", "fmt": "ns"},
    {"key": "lf_stack_ns", "title": "lf_stack", "fmt": "ns"},
    {"key": "x_ring_mp_mc", "title": "checked/ring", "fmt": "x"},
    {"key": "xu_ring_mp_mc", "title": "unchecked/ring", "fmt": "x"},
    {"key": "xt_ring_mp_mc", "title": "per-call/ring", "fmt": "x"},
    {"key": "xu_stack", "title": "unchecked/stack", "fmt": "x"},
    {"key": "xu_lf_stack", "title": "unchecked/lf", "fmt": "x"},
]


def _range(s: Dict[str, Any]) -> Optional[str]:
    if s["min"] is None:
        return None
    return "%.1f-%.1f" % (s["min"] / 1e6, s["max"] / 1e6)


def build_rows(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per configuration: each TurboMem mode (tm_* checked, tmu_*
    unchecked, tmt_* unchecked with a lookup per call) and each DPDK driver;
    x_<driver> / xu_<driver> / xt_<driver> are their TurboMem-to-DPDK rate
    ratios (medians), *_paired per repetition."""
    agg = aggregate(results)
    configs = sorted({(k[2], k[3], k[4], k[5]) for k in agg}, key=lambda c: (c[3], c[0], c[1], c[2]))
    rows = []
    for cfg in configs:
        cache, bulk, keep, threads = cfg
        row: Dict[str, Any] = {"cache": cache, "bulk": bulk, "n_keep": keep, "threads": threads}
        for mode, pre, _x in MODES:
            tm = agg.get(("turbomem", mode) + cfg)
            if tm:
                row.update({pre + "_mops": tm["rate"]["median"], pre + "_min": tm["rate"]["min"],
                            pre + "_max": tm["rate"]["max"], pre + "_range": _range(tm["rate"]),
                            pre + "_ns": tm["ns"]["median"], pre + "_reps": tm["reps"]})
        for d in DRIVERS:
            a = agg.get(("dpdk", d) + cfg)
            if not a:
                continue
            row[d + "_mops"] = a["rate"]["median"]
            row[d + "_min"] = a["rate"]["min"]
            row[d + "_max"] = a["rate"]["max"]
            row[d + "_ns"] = a["ns"]["median"]
            for mode, pre, x in MODES:
                row[x + d] = ratio(row.get(pre + "_mops"), a["rate"]["median"])
                row[x + d + "_paired"] = summarize(paired_ratios(results, cfg, d, mode))
        rows.append(row)
    return rows


def evaluate_goals(rows: Sequence[Dict[str, Any]], with_dpdk: bool) -> List[Dict[str, Any]]:
    """The goals of the core suite, checked against the rows."""
    if not rows:
        return []
    maxthr = max(r["threads"] for r in rows)
    goals = []
    for text, mode, cache, bulk, keep, thr, drv, target in GOALS:
        g: Dict[str, Any] = {"goal": text, "target": target, "target_text": ">= %.1fx" % target,
                             "measured": None, "met": None, "detail": ""}
        goals.append(g)
        if not with_dpdk:
            g["detail"] = "DPDK comparison skipped"
            continue
        if mode == "checked-all-256":
            sel = [r for r in rows if r["cache"] == cache and r.get("x_" + drv) is not None]
            if not sel:
                g["detail"] = "configuration not measured in this run"
                continue
            worst = min(sel, key=lambda r: r["x_" + drv])
            g["measured"] = worst["x_" + drv]
            g["met"] = g["measured"] >= target
            g["detail"] = "%d rows; lowest at bulk %d, n_keep %d, %d thr (%.2f vs %.2f ns/obj)" % (
                len(sel), worst["bulk"], worst["n_keep"], worst["threads"], worst["tm_ns"],
                worst[drv + "_ns"])
            continue
        if thr == "all" and maxthr < 2:
            g["detail"] = "needs >= 2 threads"
            continue
        threads = 1 if thr == "1" else maxthr
        want_keep = keep or bulk
        row = next((r for r in rows if (r["cache"], r["bulk"], r["n_keep"], r["threads"]) ==
                    (cache, bulk, want_keep, threads)), None)
        pre, x = ("tm", "x_") if mode == "checked" else ("tmu", "xu_")
        if row is None or row.get(x + drv) is None:
            g["detail"] = "configuration not measured in this run"
            continue
        g["measured"] = row[x + drv]
        g["met"] = g["measured"] >= target
        pr = row.get(x + drv + "_paired") or {}
        det = "n_keep %s, %d thr; %s %.2f vs %.2f ns/obj" % (
            want_keep, threads, mode, row[pre + "_ns"], row[drv + "_ns"])
        if pr.get("n"):
            det += "; per-rep ratio %.2f-%.2f" % (pr["min"], pr["max"])
        g["detail"] = det
    return goals


def chart(rows: Sequence[Dict[str, Any]], with_dpdk: bool) -> Dict[str, Any]:
    """Bar-chart data (Mobj/s per configuration and contender) for the report plot."""
    sel = [r for r in rows if r["n_keep"] == r["bulk"]] or list(rows)
    labels = ["c%d b%d t%d" % (r["cache"], r["bulk"], r["threads"]) for r in sel]
    series = {}
    for mode, pre, _x in MODES:
        series["TurboMem " + mode] = [None if r.get(pre + "_mops") is None else r[pre + "_mops"] / 1e6
                                      for r in sel]
    if with_dpdk:
        for d in DRIVERS:
            series["DPDK " + d] = [None if r.get(d + "_mops") is None else r[d + "_mops"] / 1e6 for r in sel]
    return {"title": "core: objects per second (get+put), n_keep == bulk (higher is better)",
            "labels": labels, "series": series, "unit": "Mobj/s", "log": True}


def run(quick: bool = False, progress: Optional[Progress] = None, params: Optional[Dict[str, Any]] = None,
        want_dpdk: bool = True) -> Dict[str, Any]:
    """Build, run, summarise.  Returns a suite result (see report.py)."""
    params = dict(params or (QUICK if quick else FULL))
    res: Dict[str, Any] = {"suite": "core", "skipped": None, "notes": [], "columns": COLUMNS,
                           "rows": [], "goals": [], "params": params}
    if progress:
        progress.update(0, 1, "core: compiling core_bench.c")
    b = compile_harness(want_dpdk=want_dpdk)
    res["build"] = {"path": b.path, "with_dpdk": b.with_dpdk, "command": " ".join(b.command),
                    "dpdk_skipped": b.dpdk_skipped}
    if b.error:
        res["skipped"] = b.error
        return res
    if b.dpdk_skipped:
        res["notes"].append("DPDK comparison skipped: %s" % b.dpdk_skipped)

    def on_line(done: int, total: int, d: Dict[str, Any]) -> None:
        if progress:
            progress.update(done, max(total, done), "core: %s %s c%s b%s k%s t%s" % (
                d.get("impl"), d.get("driver"), d.get("cache"), d.get("bulk"), d.get("n_keep"), d.get("threads")))

    out = run_harness(b, params, on_line)
    if progress:
        progress.done()
    res["meta"] = out["meta"]
    res["raw"] = out["results"]
    res["errors"] = out["errors"]
    res["command"] = " ".join(shlex.quote(x) for x in out["command"])
    if out["returncode"] not in (0, 1):
        res["notes"].append("harness exited with %s: %s" % (out["returncode"], _tail(out["stderr"])))
    if out["errors"]:
        kinds = sorted({e.get("error", "?") for e in out["errors"]})
        res["notes"].append("%d measurement(s) failed: %s" % (len(out["errors"]), "; ".join(kinds[:3])))
    res["rows"] = build_rows(out["results"])
    res["goals"] = evaluate_goals(res["rows"], b.with_dpdk)
    res["chart"] = chart(res["rows"], b.with_dpdk)
    res["notes"].append("unit: one object = one get + one put; ns/obj = 1e9 / aggregate rate; "
                        "ratios are TurboMem median / DPDK median; %s reps, %ss each after %ss warm-up"
                        % (params["reps"], params["seconds"], params["warmup"]))
    if not res["rows"] and not res["skipped"]:
        res["skipped"] = "no measurement succeeded: %s" % _tail(out["stderr"])
    return res
