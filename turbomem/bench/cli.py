"""`python -m turbomem bench [core|python|hugepages|pipeline|multiprocess|dpdk|xdp|all] [--quick] [--json FILE] [--plot FILE.png]`

`all` runs the first five; `dpdk` (the mempool driver in testpmd) and `xdp` (AF_XDP / TPACKET_V3 receive
on a veth pair) run only when named: both need root; dpdk reserves hugepages and starts testpmd dozens of
times, xdp makes network namespaces.

main(argv) takes the arguments after `bench` (a leading "bench" is accepted
and dropped) and returns the process exit status:
  0  every selected suite ran (goals that were missed do not change this)
  1  a selected suite could not run at all (the report says why)
  2  bad command line
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, TextIO

from . import machine, report

# The entry points; the rest is the suite's machinery, not API.
__all__ = ["main", "build_parser", "parse_args", "selected", "SUITE_NAMES", "EXTRA_SUITES", "RUNNERS", "PROG"]


SUITE_NAMES = ("core", "python", "hugepages", "pipeline", "multiprocess")  # what `all` runs
# Run only when named: both need root (dpdk reserves hugepages, xdp makes network namespaces).
EXTRA_SUITES = ("dpdk", "xdp")
# How the user called us (the `turbomem` script sets "turbomem bench"), for usage lines.
PROG = "python -m turbomem bench"


def _run_core(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import core

    return core.run(quick=quick, progress=progress, want_dpdk=not opts.no_dpdk)


def _run_python(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import python_suite

    return python_suite.run(quick=quick, progress=progress)


def _run_hugepages(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import hugepages

    return hugepages.run(quick=quick, progress=progress)


def _run_pipeline(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import pipeline_suite

    return pipeline_suite.suite(quick=quick, progress=progress)


def _run_xdp(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import xdp_suite

    return xdp_suite.suite(quick=quick, progress=progress)


def _run_dpdk(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import dpdk_suite

    return dpdk_suite.run(quick=quick, progress=progress)


def _run_multiprocess(quick: bool, progress, opts) -> Dict[str, Any]:
    from . import multiprocess_suite

    return multiprocess_suite.suite(quick=quick, progress=progress)


# name -> runner(quick, progress, opts) -> suite result; tests replace these.
RUNNERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "core": _run_core,
    "python": _run_python,
    "hugepages": _run_hugepages,
    "pipeline": _run_pipeline,
    "multiprocess": _run_multiprocess,
    "dpdk": _run_dpdk,
    "xdp": _run_xdp,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``bench`` command line."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="TurboMem benchmarks: the C core against DPDK (core), Python-level get/put against "
                    "pure-Python free lists (python), huge pages against small pages (hugepages), packet "
                    "pipelines against what Python users write today (pipeline), 2 KB packets through worker "
                    "processes: shared pool + rings against multiprocessing.Queue, faster-fifo and shared_memory "
                    "(multiprocess), the turbomem DPDK mempool driver in testpmd (dpdk, root), and packet receive "
                    "with AF_XDP / TPACKET_V3 against recvmmsg, recvfrom and DPDK's net_af_xdp on a veth pair "
                    "(xdp, root).",
    )
    p.add_argument("suite", nargs="?", default="all", choices=SUITE_NAMES + EXTRA_SUITES + ("all",),
                   help="which suite to run (default: all, which leaves out dpdk and xdp)")
    p.add_argument("--quick", action="store_true", help="a short run (about a minute per suite)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON ('-' for stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="draw a chart (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-dpdk", action="store_true", help="core: do not build against DPDK")
    p.add_argument("--build-only", action="store_true",
                   help="core: only compile the C harness (CI); fails if libdpdk is present but "
                        "the DPDK build fails")
    return p


def parse_args(argv: List[str]) -> argparse.Namespace:
    """Parse the arguments after ``bench`` (a leading "bench" is dropped)."""
    argv = list(argv)
    if argv and argv[0] == "bench":
        argv = argv[1:]
    return build_parser().parse_args(argv)


def selected(suite: str) -> List[str]:
    """The suites a ``suite`` argument stands for."""
    return list(SUITE_NAMES) if suite == "all" else [suite]


def main(argv: Optional[List[str]] = None, stdout: Optional[TextIO] = None,
         stderr: Optional[TextIO] = None) -> int:
    """Run the selected suites and print the report; returns the exit status (see the module doc)."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    if argv is None:
        argv = sys.argv[1:]
    try:
        opts = parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    cmd_args = [a for a in argv if a != "bench"] if argv and argv[0] == "bench" else list(argv)
    command = "python -m turbomem bench " + " ".join(shlex.quote(a) for a in cmd_args)
    if opts.build_only:
        return build_only(opts, stdout, stderr)
    progress = report.Progress(stream=stderr, enabled=not opts.no_progress)
    rep: Dict[str, Any] = {"version": 1, "command": command.strip(), "machine": machine.describe(), "suites": []}
    rc = 0
    for name in selected(opts.suite):
        try:
            res = RUNNERS[name](opts.quick, progress, opts)
        except KeyboardInterrupt:
            progress.done()
            stderr.write("interrupted\n")
            return 130
        except Exception as e:  # a suite failing must not hide the others
            progress.done()
            res = {"suite": name, "skipped": "crashed: %s: %s" % (e.__class__.__name__, e), "rows": [],
                   "notes": [], "goals": [], "columns": []}
        if res.get("skipped") and not res.get("rows"):
            rc = 1
        rep["suites"].append(res)
    rep["machine"]["load_after"] = machine.load_average()

    text = report.render_report(rep)
    if opts.json == "-":
        stderr.write(text)
        stdout.write(_dumps(rep) + "\n")
    else:
        stdout.write(text)
        if opts.json:
            report.write_json(rep, opts.json)
            stderr.write("JSON report written to %s\n" % opts.json)
    if opts.plot:
        why = report.plot(rep, opts.plot)
        stderr.write((why + "\n") if why else "chart written to %s\n" % opts.plot)
    return rc


def build_only(opts: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Compile core_bench.c (with DPDK when pkg-config finds it) and stop."""
    from . import core

    if opts.suite not in ("core", "all"):
        stderr.write("--build-only applies to the core suite\n")
        return 2
    b = core.compile_harness(want_dpdk=not opts.no_dpdk, force=True)
    if b.error:
        stderr.write("core harness: %s\n" % b.error)
        return 1
    stdout.write("core harness built: %s\n  %s\n" % (b.path, " ".join(b.command)))
    if b.with_dpdk:
        stdout.write("  with DPDK %s\n" % (machine.dpdk_version() or "?"))
        return 0
    stdout.write("  without DPDK: %s\n" % b.dpdk_skipped)
    if not opts.no_dpdk and core.dpdk_flags()[2] is None:
        return 1  # libdpdk is there but the DPDK build failed: that is the rot CI must catch
    return 0


def _dumps(rep: Dict[str, Any]) -> str:
    import json

    return json.dumps(rep, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
