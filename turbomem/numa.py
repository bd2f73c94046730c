"""CPU and NUMA topology, thread pinning, and where the calling thread runs.

Reads ``/sys/devices/system/node``; where that directory is missing (some
containers, kernels without CONFIG_NUMA) it reports a single node 0 holding
every online CPU and says so in the ``"source"`` key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from . import _sys

__all__ = [
    "topology",
    "node_ids",
    "pin_thread",
    "current_cpu",
    "current_node",
    "parse_cpulist",
]

NODE_ROOT = Path("/sys/devices/system/node")
CPU_ONLINE = Path("/sys/devices/system/cpu/online")

_NODE_DIR = re.compile(r"node(\d+)$")
_MEMTOTAL = re.compile(r"MemTotal:\s*(\d+)\s*kB")


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (the kernel's list format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            first, last = part.split("-", 1)
            cpus.extend(range(int(first), int(last) + 1))
        else:
            cpus.append(int(part))
    return sorted(set(cpus))


def _online_cpus() -> list[int]:
    try:
        return parse_cpulist(CPU_ONLINE.read_text())
    except (OSError, ValueError):
        return list(range(os.cpu_count() or 1))


def node_ids(root: Path = NODE_ROOT) -> list[int]:
    """The NUMA node numbers present (``[0]`` when sysfs has no node directory)."""
    try:
        ids = [int(m.group(1)) for entry in root.iterdir() if (m := _NODE_DIR.match(entry.name))]
    except OSError:
        ids = []
    return sorted(ids) or [0]


def topology(root: Path = NODE_ROOT) -> dict:
    """Nodes with their CPUs and memory, plus online and allowed CPUs.

    ``{"nodes": {0: {"cpus": [0, 1], "mem_total_kb": 4417748}}, "online_cpus": [...],
    "allowed_cpus": [...], "source": "..."}``; ``mem_total_kb`` is ``None`` when
    the node's meminfo cannot be read.
    """
    online = _online_cpus()
    nodes: dict[int, dict] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        entries = []
        why = f"{root} unreadable ({exc.strerror or exc})"
    else:
        why = f"no node directories in {root}"
    for entry in entries:
        match = _NODE_DIR.match(entry.name)
        if not match:
            continue
        try:
            cpus = parse_cpulist((entry / "cpulist").read_text())
        except (OSError, ValueError):
            cpus = []
        mem_total_kb = None
        try:
            found = _MEMTOTAL.search((entry / "meminfo").read_text())
            if found:
                mem_total_kb = int(found.group(1))
        except OSError:
            pass
        nodes[int(match.group(1))] = {"cpus": cpus, "mem_total_kb": mem_total_kb}

    if nodes:
        source = str(root)
    else:
        # Without sysfs NUMA information, a single node is the honest guess.
        nodes = {0: {"cpus": online, "mem_total_kb": _meminfo_total_kb()}}
        source = f"fallback: {why}; assuming a single node 0 with all online CPUs"
    return {
        "nodes": dict(sorted(nodes.items())),
        "online_cpus": online,
        "allowed_cpus": sorted(_sys.sched_getaffinity(0)),
        "source": source,
    }


def _meminfo_total_kb() -> int | None:
    try:
        found = _MEMTOTAL.search(Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def pin_thread(cpus: int | Iterable[int]) -> None:
    """Restrict the calling thread (not the whole process) to ``cpus``.

    Raises ``ValueError`` for an empty set or CPUs that are not online;
    errors from the kernel (e.g. EINVAL outside the cpuset) pass through as
    ``OSError``.
    """
    if isinstance(cpus, bool):
        raise TypeError("pin_thread() expects a CPU number or an iterable of CPU numbers, not bool")
    wanted = {cpus} if isinstance(cpus, int) else set(cpus)
    if not wanted:
        raise ValueError("pin_thread() needs at least one CPU")
    if not all(isinstance(cpu, int) and not isinstance(cpu, bool) for cpu in wanted):
        raise TypeError(f"CPU numbers must be int, got {sorted(map(repr, wanted))}")
    online = _online_cpus()
    unknown = sorted(wanted.difference(online))
    if unknown:
        raise ValueError(f"unknown CPU(s) {unknown}; online CPUs are {online}")
    _sys.sched_setaffinity(wanted, 0)  # pid 0 = the calling thread


def current_cpu() -> int:
    """The CPU the calling thread is running on (may change right after)."""
    try:
        return _sys.sched_getcpu()
    except OSError:
        return _sys.getcpu()[0]


def current_node() -> int:
    """The NUMA node of the CPU the calling thread is running on."""
    try:
        return _sys.getcpu()[1]
    except OSError:
        # No getcpu: look the CPU up in the topology instead.
        cpu = current_cpu()
        for node, info in topology()["nodes"].items():
            if cpu in info["cpus"]:
                return node
        return 0
