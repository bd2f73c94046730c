"""CPU and NUMA topology, thread pinning, and where the calling thread runs.

Reads ``/sys/devices/system/node`` (through :mod:`turbomem.procfs`); where that directory is missing (some
containers, kernels without CONFIG_NUMA) it reports a single node 0 holding
every online CPU and says so in the ``"source"`` key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from . import _sys, procfs
from .procfs import parse_cpulist

__all__ = [
    "topology",
    "node_ids",
    "pin_thread",
    "current_cpu",
    "current_node",
    "parse_cpulist",
]

NODE_ROOT = procfs.NODE_ROOT


def _online_cpus() -> list[int]:
    return procfs.online_cpus()


def node_ids(root: Path = NODE_ROOT) -> list[int]:
    """The NUMA node numbers present (``[0]`` when sysfs has no node directory)."""
    return procfs.node_ids(root)


def topology(root: Path = NODE_ROOT) -> dict:
    """Nodes with their CPUs and memory, plus online and allowed CPUs.

    ``{"nodes": {0: {"cpus": [0, 1], "mem_total_kb": 4417748}}, "online_cpus": [...],
    "allowed_cpus": [...], "source": "..."}``; ``mem_total_kb`` is ``None`` when
    the node's meminfo cannot be read.
    """
    online = _online_cpus()
    found, why = procfs.read_nodes(root)
    if found:
        nodes = {node: info._asdict() for node, info in found.items()}
        source = str(root)
    else:
        # Without sysfs NUMA information, a single node is the honest guess.
        nodes = {0: {"cpus": online, "mem_total_kb": procfs.meminfo().get("MemTotal")}}
        source = f"fallback: {why}; assuming a single node 0 with all online CPUs"
    return {
        "nodes": nodes,
        "online_cpus": online,
        "allowed_cpus": sorted(_sys.sched_getaffinity(0)),
        "source": source,
    }


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
