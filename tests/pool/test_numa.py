"""Topology, pinning and the current CPU/node."""

from __future__ import annotations

import os
import threading

import pytest

from turbomem import numa


def test_topology_has_nodes_cpus_and_source():
    topo = numa.topology()
    assert topo["nodes"], topo
    assert set(topo["allowed_cpus"]) == os.sched_getaffinity(0)
    assert set(topo["allowed_cpus"]) <= set(topo["online_cpus"])
    all_node_cpus = {cpu for info in topo["nodes"].values() for cpu in info["cpus"]}
    assert set(topo["online_cpus"]) <= all_node_cpus
    assert topo["source"]
    for info in topo["nodes"].values():
        assert info["mem_total_kb"] is None or info["mem_total_kb"] > 0


def test_single_node_fallback_when_sysfs_missing(tmp_path):
    topo = numa.topology(root=tmp_path / "absent")
    assert list(topo["nodes"]) == [0]
    assert topo["nodes"][0]["cpus"] == topo["online_cpus"]
    assert topo["source"].startswith("fallback")
    assert numa.node_ids(tmp_path / "absent") == [0]


def test_parse_cpulist():
    assert numa.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert numa.parse_cpulist("") == []


def test_current_node_is_a_known_node():
    assert numa.current_node() in numa.node_ids()
    assert numa.current_cpu() in os.sched_getaffinity(0)


def _in_thread(fn):
    """Run fn in a fresh thread, so pinning never leaks into the test runner."""
    result: dict = {}

    def body():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_pin_thread_pins_only_the_calling_thread():
    process_affinity = os.sched_getaffinity(0)
    target = min(process_affinity)

    def pinned():
        numa.pin_thread(target)
        return os.sched_getaffinity(0), numa.current_cpu()

    affinity, cpu = _in_thread(pinned)
    assert affinity == {target}
    assert cpu == target
    assert os.sched_getaffinity(0) == process_affinity


def test_pin_thread_accepts_iterables():
    cpus = sorted(os.sched_getaffinity(0))

    def pinned():
        numa.pin_thread(iter(cpus))
        return os.sched_getaffinity(0)

    assert _in_thread(pinned) == set(cpus)


def test_pin_thread_rejects_empty_and_unknown():
    with pytest.raises(ValueError, match="at least one CPU"):
        numa.pin_thread([])
    with pytest.raises(ValueError, match="unknown CPU"):
        numa.pin_thread(100_000)
    with pytest.raises(TypeError):
        numa.pin_thread(True)
