"""The `hugepages` suite: what huge pages buy a big pool.

For a 1 GiB pool (128 MiB with --quick) of 2048-byte objects, with
hugepages="auto" (THP) and "none" (and "hugetlb" when pages are reserved):
creation + populate time, a random dependent-read chase across all objects
(pointer chase in C, chase.c, one load per object visited), a sequential
write pass, close() time, the pool's hugepage_report() beside each row, and
dTLB-load-misses from `perf stat` where hardware counters work.

A raw mmap reference (MADV_HUGEPAGE vs MADV_NOHUGEPAGE, no TurboMem) runs
too, so the suite says something on a machine where turbomem.Pool is not
built, and shows what the pool adds on top of the kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _paths, machine
from .report import ratio, summarize

OBJ_SIZE = 2048
FULL = dict(size=1 << 30, reps=5, steps=2_000_000)
QUICK = dict(size=128 << 20, reps=5, steps=500_000)
SMOKE = dict(size=8 << 20, reps=2, steps=20_000)


# ---- the C helpers ---------------------------------------------------------------

_LIB = None


def chase_lib():
    """Compile chase.c once into the cache dir and load it."""
    global _LIB
    if _LIB is not None:
        return _LIB
    cc = os.environ.get("CC") or "cc"
    src = _paths.bench_source("chase.c")
    key = hashlib.sha256(src.read_bytes() + cc.encode()).hexdigest()[:16]
    out = _paths.cache_dir() / ("chase-%s.so" % key)
    if not out.exists():
        tmp = str(out) + ".%d.tmp" % os.getpid()
        r = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", tmp], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("compiling chase.c failed: %s" % r.stderr.strip()[-500:])
        os.replace(tmp, out)
    lib = ctypes.CDLL(str(out))
    lib.tmb_link.restype = ctypes.c_uint64
    lib.tmb_link.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint64]
    lib.tmb_chase.restype = ctypes.c_uint64
    lib.tmb_chase.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
    lib.tmb_write.restype = None
    lib.tmb_write.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.tmb_touch.restype = None
    lib.tmb_touch.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    _LIB = lib
    return lib


# ---- perf -------------------------------------------------------------------------

class PerfCounter:
    """Counts EVENT for this process while the `with` block runs (perf stat -p)."""

    def __init__(self, event: str = "dTLB-load-misses"):
        self.event = event
        self.value: Optional[int] = None
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", self.event, "-p", str(os.getpid())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)  # let perf attach
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        for line in (err or "").splitlines():
            f = line.split(",")
            if len(f) >= 3 and self.event in f[2]:
                try:
                    self.value = int(f[0])
                except ValueError:
                    self.value = None
        return False


class _NoCounter:
    value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- regions ----------------------------------------------------------------------

def _addr(obj) -> int:
    """Address of a buffer (numpy array, memoryview...) without copying."""
    try:
        import numpy as np

        return int(np.asarray(obj).ctypes.data)
    except Exception:
        c = ctypes.c_char.from_buffer(obj)
        try:
            return ctypes.addressof(c)
        finally:
            del c


def pool_region(pool, capacity: int) -> Tuple[int, int, int, list]:
    """(base address, stride, objects, handles held) of a turbomem.Pool.

    Uses array() when it is 2-D (one row per object); otherwise takes all
    objects and measures the stride between two views.  Returns the handles it
    took so the caller can put them back before close().
    """
    import numpy as np

    held: list = []
    try:
        a = pool.array()
        arr = np.asarray(a)
        if arr.ndim == 2 and arr.shape[0] >= capacity:
            return int(arr.ctypes.data), int(arr.strides[0]), capacity, held
    except Exception:
        pass
    hs = pool.get_bulk(capacity)
    held.append(hs)
    h0, h1 = int(hs[0]), int(hs[1])
    a0, a1 = _addr(pool.view(h0)), _addr(pool.view(h1))
    stride = (a1 - a0) // (h1 - h0)
    return a0 - h0 * stride, stride, capacity, held


class RawRegion:
    """Reference: an anonymous mapping with MADV_HUGEPAGE or MADV_NOHUGEPAGE."""

    def __init__(self, size: int, huge: bool):
        self.size = size
        self.m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        adv = getattr(mmap, "MADV_HUGEPAGE" if huge else "MADV_NOHUGEPAGE", None)
        if adv is not None:
            self.m.madvise(adv)
        self._c = ctypes.c_char.from_buffer(self.m)
        self.base = ctypes.addressof(self._c)

    def populate(self, lib) -> None:
        lib.tmb_touch(self.base, self.size, 4096)

    def report(self) -> Dict[str, Any]:
        return {"anon_huge_bytes": smaps_anon_huge(self.base, self.size), "size": self.size}

    def close(self) -> None:
        del self._c
        self.m.close()


def smaps_anon_huge(addr: int, size: int) -> Optional[int]:
    """AnonHugePages (bytes) of the mapping(s) overlapping [addr, addr+size)."""
    from turbomem import procfs
    from turbomem.errors import SmapsParseError

    try:
        vmas = procfs.mappings_for(addr, addr + size)
    except (OSError, SmapsParseError):
        return None
    return sum(vma.fields.get("AnonHugePages", 0) for vma in vmas)


def coverage_of(report: Any, size: int) -> Optional[float]:
    """A 0..1 huge-page coverage out of whatever hugepage_report() returned."""
    if not isinstance(report, dict):
        return None
    for k in ("coverage", "huge_fraction", "fraction"):
        v = report.get(k)
        if isinstance(v, (int, float)):
            return float(v) / 100 if v > 1 else float(v)
    for k in ("anon_huge_bytes", "huge_bytes", "hugepage_bytes", "AnonHugePages"):
        v = report.get(k)
        if isinstance(v, (int, float)) and size:
            return float(v) / size
    return None


# ---- one measurement ------------------------------------------------------------

def measure(kind: str, mode: str, size: int, steps: int, perm, lib, Pool, counter_cls) -> Dict[str, Any]:
    """kind: 'pool' (turbomem.Pool, hugepages=mode) or 'raw' (mode 'thp'/'none')."""
    capacity = size // OBJ_SIZE
    t0 = time.perf_counter()
    if kind == "pool":
        obj = Pool(OBJ_SIZE, capacity, cache_size=0, hugepages=mode, populate=True)
    else:
        obj = RawRegion(size, huge=(mode == "thp"))
        obj.populate(lib)
    t_create = time.perf_counter() - t0
    held: list = []
    try:
        if kind == "pool":
            base, stride, n, held = pool_region(obj, capacity)
            rep = obj.hugepage_report()
            rep = dict(rep) if hasattr(rep, "keys") else rep
        else:
            base, stride, n = obj.base, OBJ_SIZE, capacity
            rep = obj.report()
        start = lib.tmb_link(base, stride, perm.ctypes.data, n)
        lib.tmb_chase(base, start, min(steps // 10, n))  # warm caches a little, not the whole TLB story
        with counter_cls() as ctr:
            t0 = time.perf_counter()
            lib.tmb_chase(base, start, steps)
            t_chase = time.perf_counter() - t0
        t0 = time.perf_counter()
        lib.tmb_write(base, n * stride, 0x5A)
        t_write = time.perf_counter() - t0
    finally:
        if kind == "pool":
            for hs in held:
                obj.put_bulk(hs)
        t0 = time.perf_counter()
        obj.close()
        t_close = time.perf_counter() - t0
    return {"kind": kind, "mode": mode, "size": size, "objects": capacity, "create_s": t_create,
            "chase_ns": t_chase * 1e9 / steps, "write_gbs": n * stride / t_write / 1e9, "close_s": t_close,
            "coverage": coverage_of(rep, size), "report": rep, "dtlb_misses": ctr.value,
            "dtlb_per_read": None if ctr.value is None else ctr.value / steps}


COLUMNS = [
    {"key": "label", "title": "region"},
    {"key": "mib", "title": "MiB", "fmt": "d"},
    {"key": "create_ms", "title": "create+populate ms", "fmt": "f"},
    {"key": "create_range", "title": "(min-max)", "fmt": "r"},
    {"key": "chase_ns", "title": "random read ns", "fmt": "f"},
    {"key": "chase_range", "title": "(min-max)", "fmt": "r"},
    {"key": "write_gbs", "title": "seq write GB/s", "fmt": "f"},
    {"key": "close_ms", "title": "close ms", "fmt": "f"},
    {"key": "coverage", "title": "huge coverage", "fmt": "%"},
    {"key": "dtlb", "title": "dTLB miss/read", "fmt": "f"},
]


def run(quick: bool = False, progress=None, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    import numpy as np

    params = dict(params or (QUICK if quick else FULL))
    size, reps, steps = int(params["size"]), int(params["reps"]), int(params["steps"])
    res: Dict[str, Any] = {"suite": "hugepages", "skipped": None, "notes": [], "columns": COLUMNS,
                           "rows": [], "goals": [], "params": params}
    try:
        lib = chase_lib()
    except Exception as e:
        res["skipped"] = "cannot build chase.c: %s" % e
        return res
    from .python_suite import load_pool_class

    Pool, why = load_pool_class()
    perf = machine.perf_counters()
    counter_cls = _NoCounter
    if perf["available"] and shutil.which("perf"):
        counter_cls = PerfCounter
    else:
        res["notes"].append("dTLB-load-misses not recorded: hardware counters unavailable (%s)" % perf["why"])

    configs: List[Tuple[str, str]] = []
    if Pool is not None:
        configs += [("pool", "auto"), ("pool", "none")]
        ht = machine.hugetlb_pages()
        if ht.get("HugePages_Free", 0) * ht.get("Hugepagesize", 0) * 1024 >= size:
            configs.append(("pool", "hugetlb"))
        else:
            res["notes"].append("hugetlb row skipped: %s free hugetlb pages < pool size"
                                % ht.get("HugePages_Free", 0))
    else:
        res["notes"].append("TurboMem rows skipped: turbomem.Pool is not importable (%s)" % why)
    configs += [("raw", "thp"), ("raw", "none")]

    n = size // OBJ_SIZE
    perm = np.random.default_rng(12345).permutation(n).astype(np.uint32)
    raw: List[Dict[str, Any]] = []
    total = (reps + 1) * len(configs)
    done = 0
    for rep in range(-1, reps):  # rep -1: warm-up
        for i in range(len(configs)):
            kind, mode = configs[(i + max(rep, 0)) % len(configs)]
            try:
                m = measure(kind, mode, size, steps, perm, lib, Pool, counter_cls)
                m["rep"] = rep
                if rep >= 0:
                    raw.append(m)
            except Exception as e:
                res["notes"].append("%s %s rep %d: %s: %s" % (kind, mode, rep, e.__class__.__name__, e))
            done += 1
            if progress:
                progress.update(done, total, "hugepages: %s %s rep %d" % (kind, mode, rep))
    if progress:
        progress.done()
    res["raw"] = raw
    res["rows"] = build_rows(raw, configs)
    res["goals"] = evaluate_goals(res["rows"], Pool is not None)
    res["chart"] = {"title": "hugepages: random dependent read, ns (lower is better)",
                    "labels": [r["label"] for r in res["rows"]],
                    "series": {"random read ns": [r["chase_ns"] for r in res["rows"]],
                               "create+populate ms / 10": [None if r["create_ms"] is None else r["create_ms"] / 10
                                                           for r in res["rows"]]},
                    "unit": "ns / (ms/10)"}
    res["notes"].append("random read = one dependent load per object visited, a single cycle through all "
                        "%d objects (%d steps); coverage from hugepage_report() (pool) or smaps (raw)"
                        % (n, steps))
    return res


_LABELS = {("pool", "auto"): 'Pool hugepages="auto"', ("pool", "none"): 'Pool hugepages="none"',
           ("pool", "hugetlb"): 'Pool hugepages="hugetlb"', ("raw", "thp"): "raw mmap MADV_HUGEPAGE",
           ("raw", "none"): "raw mmap MADV_NOHUGEPAGE"}


def build_rows(raw: List[Dict[str, Any]], configs: List[Tuple[str, str]]) -> List[Dict[str, Any]]:
    rows = []
    for kind, mode in configs:
        ms = [m for m in raw if (m["kind"], m["mode"]) == (kind, mode)]
        if not ms:
            continue
        c = summarize(m["create_s"] * 1e3 for m in ms)
        ch = summarize(m["chase_ns"] for m in ms)
        cov = summarize(m["coverage"] for m in ms)
        dt = summarize(m["dtlb_per_read"] for m in ms)
        rows.append({"label": _LABELS[(kind, mode)], "kind": kind, "mode": mode, "mib": ms[0]["size"] >> 20,
                     "create_ms": c["median"], "create_min": c["min"], "create_max": c["max"],
                     "create_range": None if c["min"] is None else "%.0f-%.0f" % (c["min"], c["max"]),
                     "chase_ns": ch["median"], "chase_min": ch["min"], "chase_max": ch["max"],
                     "chase_range": None if ch["min"] is None else "%.1f-%.1f" % (ch["min"], ch["max"]),
                     "write_gbs": summarize(m["write_gbs"] for m in ms)["median"],
                     "close_ms": summarize(m["close_s"] * 1e3 for m in ms)["median"],
                     "coverage": cov["median"], "dtlb": dt["median"], "reps": len(ms),
                     "report": ms[-1]["report"]})
    return rows


def evaluate_goals(rows: List[Dict[str, Any]], have_pool: bool) -> List[Dict[str, Any]]:
    def get(kind, mode):
        return next((r for r in rows if (r["kind"], r["mode"]) == (kind, mode)), None)

    huge, small = (get("pool", "auto"), get("pool", "none")) if have_pool else (None, None)
    rh, rs = get("raw", "thp"), get("raw", "none")
    goals = []
    for text, key, target in (("random reads, huge pages vs none (speed-up)", "chase_ns", 1.3),
                              ("populate, huge pages vs none (speed-up)", "create_ms", 2.0)):
        x = ratio(small and small[key], huge and huge[key])
        ref = ratio(rs and rs[key], rh and rh[key])
        detail = "raw mmap reference: %s" % ("-" if ref is None else "%.2fx" % ref)
        if not have_pool:
            detail = "turbomem.Pool not importable; " + detail
        elif huge and not huge.get("coverage"):
            detail += "; huge coverage of the auto pool: %s" % huge.get("coverage")
        goals.append({"goal": text, "target": target, "target_text": ">= %.1fx" % target, "measured": x,
                      "met": None if x is None else x >= target, "detail": detail})
    return goals
