"""``python -m turbomem`` (or ``turbomem``): show what this machine gives a pool, with proof.

    python -m turbomem            the main job: machine, pool, huge-page proof, workload
    python -m turbomem --json     the same as JSON
    python -m turbomem bench ...  the benchmark suites (see ``bench --help``)

The workload's ns/get+put is per thread: with 2 threads it is the time one
thread waits for its own get+put while the other runs too (they share the GIL),
so 2 threads showing twice the 1-thread figure means the same total rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from typing import Any, Optional

import numpy as np

import turbomem as tm
from turbomem import memory
from turbomem._cli import run_main
from turbomem.constants import HUGEPAGE_POLICIES, HugePagePolicy
from turbomem.results import PageNodes

DEFAULT_OBJ_SIZE = 2048
DEFAULT_POOL_BYTES = 64 * 1024 * 1024
DEFAULT_SECONDS = 0.5


__all__ = ["main", "console_main", "main_job", "machine_info", "run_workload", "render", "build_parser",
           "program_name"]


def machine_info() -> dict[str, Any]:
    """Kernel, Python, CPUs, NUMA nodes, THP mode, hugetlb pages and the cache hit path."""
    topo = tm.topology()
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus_online": len(topo["online_cpus"]),
        "cpus_allowed": len(topo["allowed_cpus"]),
        "numa_nodes": {str(n): info["cpus"] for n, info in topo["nodes"].items()},
        "numa_source": topo.get("source", ""),
        "thp_mode": memory.thp_mode(),
        "hugetlb_2m": memory.hugetlb_pages(),
        "hit_path": "fence-free (membarrier steal)" if tm.hit_path_is_fence_free() else "seq_cst",
    }


def _workload(pool: tm.Pool, seconds: float, cpu: int | None, out: dict[str, float], start: threading.Barrier) -> None:
    """Single and bulk-32 get/put in a loop; records objects per second."""
    if cpu is not None:
        try:
            tm.pin_thread(cpu)
        except OSError:
            pass  # pinning refused (container): run unpinned, numbers say the same
    get, put, get_bulk, put_bulk = pool.get, pool.put, pool.get_bulk, pool.put_bulk
    single = bulk = 0
    start.wait()
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(1000):
            put(get())
        single += 1000
    t1 = time.perf_counter()
    deadline = t1 + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            put_bulk(get_bulk(32))
        bulk += 3200
    t2 = time.perf_counter()
    out["single_per_s"] = single / (t1 - t0)
    out["bulk32_per_s"] = bulk / (t2 - t1)


def run_workload(pool: tm.Pool, threads: int, seconds: float) -> dict[str, Any]:
    """``threads`` threads doing single and bulk-32 get/put on ``pool``; rates summed over threads."""
    cpus = sorted(os.sched_getaffinity(0))
    results: list[dict[str, float]] = [{} for _ in range(threads)]
    barrier = threading.Barrier(threads)
    workers = [
        threading.Thread(target=_workload, args=(pool, seconds, cpus[i % len(cpus)], results[i], barrier))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {
        "threads": threads,
        "single_get_put_per_s": sum(r["single_per_s"] for r in results),
        "bulk32_objects_per_s": sum(r["bulk32_per_s"] for r in results),
        # per thread: the mean time one thread spends on one get+put while the others run
        "ns_per_single_get_put": 1e9 * threads / sum(r["single_per_s"] for r in results),
        "available_after": pool.available,
        "accounting_exact": pool.available == pool.capacity and pool.in_use == 0,
    }


def main_job(obj_size: int, pool_bytes: int, seconds: float, hugepages: HugePagePolicy) -> dict[str, Any]:
    """Create the pool, read its huge-page report, run the workload; everything as one dict."""
    capacity = pool_bytes // obj_size
    result: dict[str, Any] = {"machine": machine_info()}
    t0 = time.perf_counter()
    with tm.Pool(obj_size, capacity, hugepages=hugepages) as pool:
        created = time.perf_counter() - t0
        report: dict[str, Any] = {**pool.hugepage_report(), "create_seconds": created}
        result["pool"] = {"obj_size": obj_size, "capacity": capacity, "stride": pool.stride,
                          "cache_size": pool.cache_size}
        result["hugepages"] = report
        result["workload"] = [run_workload(pool, n, seconds) for n in (1, 2)]
        result["stats"] = pool.stats()
    return result


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(result: dict[str, Any]) -> str:
    """The main job's result as the text report."""
    m, hp, pool = result["machine"], result["hugepages"], result["pool"]
    nodes = ", ".join(f"node {n}: cpus {c}" for n, c in m["numa_nodes"].items())
    huge = m["hugetlb_2m"]
    lines = [
        "TurboMem - what this machine gives a pool",
        "",
        "Machine",
        f"  kernel           {m['kernel']} (Python {m['python']})",
        f"  CPUs             {m['cpus_online']} online, {m['cpus_allowed']} allowed to this process",
        f"  NUMA             {nodes} {('(' + m['numa_source'] + ')') if m['numa_source'] else ''}".rstrip(),
        f"  THP mode         {m['thp_mode']}",
        f"  hugetlb 2 MB     {huge.get('total', 0)} reserved, {huge.get('free', 0)} free",
        f"  cache hit path   {m['hit_path']}",
        "",
        f"Pool: {pool['capacity']} objects of {pool['obj_size']} B (stride {pool['stride']}), "
        f"cache {pool['cache_size']} per thread",
        f"  policy           {hp['policy']} -> advice: {hp['advice']}",
        f"  backing          {hp['backing']}",
        f"  region           {_fmt_bytes(hp['region_bytes'])}, resident {_fmt_bytes(hp['rss_bytes'])}",
        f"  on huge pages    {_fmt_bytes(hp['huge_bytes'])} = {hp['coverage']:.1%} (AnonHugePages in /proc/self/smaps)",
        f"  NUMA binding     {hp['numa_status']}",
        f"  pages live on    {_placement(hp['page_nodes'])}",
        f"  populate         {hp['populate']} in {hp['create_seconds'] * 1e3:.1f} ms",
        "",
        "Workload (Python API, per-thread caches; threads share the GIL)",
        f"  {'threads':>7}  {'get+put/s':>13}  {'ns/get+put':>12}  {'bulk32 obj/s':>13}  accounting",
        f"  {'':>7}  {'(all threads)':>13}  {'(per thread)':>12}  {'(all threads)':>13}",
    ]
    for w in result["workload"]:
        lines.append(
            f"  {w['threads']:>7}  {w['single_get_put_per_s']:>13,.0f}  {w['ns_per_single_get_put']:>12.1f}  "
            f"{w['bulk32_objects_per_s']:>13,.0f}  {'exact' if w['accounting_exact'] else 'MISMATCH'}"
        )
    st = result["stats"]
    if st.get("per_call_stats"):
        counters = (f"{st['gets']:,} objects got, {st['puts']:,} put; calls served by the cache: "
                    f"{st['cache_hits']:,}, that touched the shared level: {st['cache_misses']:,}; "
                    f"{st['cas_retries']:,} CAS retries")
    else:
        # The default pool keeps no per-call counters (they cost the hit path a store).
        counters = (f"per-call counters off (Pool(stats=True) keeps them); "
                    f"{st['cached']:,} free objects parked in {st['threads']:,} thread caches")
    lines += ["", f"Counters: {counters}"]
    return "\n".join(lines)


def _placement(page_nodes: PageNodes) -> str:
    nodes = page_nodes.get("nodes") or {}
    if not nodes:
        return f"unknown ({page_nodes.get('method', 'unavailable')})"
    total = sum(nodes.values())
    parts = ", ".join(f"node {n}: {c / total:.0%}" for n, c in sorted(nodes.items()))
    return f"{parts} ({total} pages sampled via {page_nodes.get('method')})"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def program_name() -> str:
    """``turbomem`` when run as the installed script, else ``python -m turbomem``."""
    return "turbomem" if os.path.basename(sys.argv[0]) == "turbomem" else "python -m turbomem"


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The main job's command line (``bench`` is dispatched before it is parsed)."""
    from turbomem.bench.cli import EXTRA_SUITES, SUITE_NAMES

    prog = prog or program_name()
    suites = "|".join(SUITE_NAMES + EXTRA_SUITES + ("all",))
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=_HelpFormatter,
        usage=f"%(prog)s [-h] [--version] [--json] [--obj-size BYTES] [--pool-mb MIB] [--seconds S] "
              f"[--hugepages POLICY]\n       %(prog)s bench [{suites}] [--quick] [--json FILE] "
              f"[--plot FILE.png] (see `%(prog)s bench --help`)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {tm.__version__}")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--obj-size", type=int, default=DEFAULT_OBJ_SIZE, metavar="BYTES", help="object size")
    parser.add_argument("--pool-mb", type=int, default=DEFAULT_POOL_BYTES >> 20, metavar="MIB", help="pool size")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, metavar="S",
                        help="workload seconds per phase")
    parser.add_argument("--hugepages", default="auto", choices=HUGEPAGE_POLICIES, metavar="POLICY",
                        help=f"huge-page policy, one of {', '.join(HUGEPAGE_POLICIES)}")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """Run the main job (or ``bench ...``) and return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    prog = program_name()
    if argv and argv[0] == "bench":
        from turbomem.bench import cli

        cli.PROG = f"{prog} bench"
        return cli.main(argv[1:])
    args = build_parser(prog).parse_args(argv)
    try:
        result = main_job(args.obj_size, args.pool_mb << 20, args.seconds, args.hugepages)
    except tm.TurbomemError as exc:
        print(f"turbomem: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_jsonable(result), indent=2, sort_keys=True))
    else:
        print(render(result))
    return 0 if all(w["accounting_exact"] for w in result["workload"]) else 1


def console_main() -> None:
    """The ``turbomem`` script and ``python -m turbomem``: quiet on a broken pipe (``| head``)."""
    run_main(main)


if __name__ == "__main__":
    console_main()
