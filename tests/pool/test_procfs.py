"""turbomem.procfs readers on fake /sys and /proc trees, and on the live system."""

from __future__ import annotations

import pytest

from turbomem import memory, numa, procfs


def test_thp_settings_reads_the_bracketed_choice(tmp_path):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "defrag").write_text("always defer defer+madvise [madvise] never\n")
    assert procfs.thp_settings(tmp_path) == procfs.ThpSettings("madvise", "madvise")


def test_thp_settings_without_thp_is_none(tmp_path):
    assert procfs.thp_settings(tmp_path / "missing") == procfs.ThpSettings(None, None)


def test_one_thp_mode_for_pool_and_report():
    # memory.thp_mode (str) and the bench's dict both come from thp_settings.
    settings = procfs.thp_settings()
    assert memory.thp_mode() == (settings.enabled or "unavailable")
    assert procfs.thp_mode() == memory.thp_mode()


def test_meminfo_parses_numbers(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       24576000 kB\nHugePages_Total:       3\nHugepagesize:       2048 kB\nJunk: x\n")
    assert procfs.meminfo(path) == {"MemTotal": 24576000, "HugePages_Total": 3, "Hugepagesize": 2048}
    assert procfs.meminfo(tmp_path / "missing") == {}


def test_hugetlb_pool_is_typed_and_consistent():
    pool = procfs.hugetlb_pool()
    assert isinstance(pool, procfs.HugetlbPool)
    assert all(isinstance(v, int) and v >= 0 for v in pool[:4])
    assert memory.hugetlb_pages() == pool._asdict()


def _fake_node(root, n, cpulist, memtotal_kb=None):
    d = root / f"node{n}"
    d.mkdir()
    (d / "cpulist").write_text(cpulist + "\n")
    if memtotal_kb is not None:
        (d / "meminfo").write_text(f"Node {n} MemTotal:       {memtotal_kb} kB\nNode {n} MemFree: 1 kB\n")


def test_read_nodes_on_a_fake_sysfs(tmp_path):
    _fake_node(tmp_path, 1, "2-3", 1000)
    _fake_node(tmp_path, 0, "0-1,4", None)
    (tmp_path / "possible").write_text("0-1\n")
    nodes, why = procfs.read_nodes(tmp_path)
    assert why is None
    assert list(nodes) == [0, 1]
    assert nodes[0] == procfs.NodeInfo([0, 1, 4], None)
    assert nodes[1] == procfs.NodeInfo([2, 3], 1000)
    assert procfs.node_ids(tmp_path) == [0, 1]
    topo = numa.topology(tmp_path)
    assert topo["nodes"] == {0: {"cpus": [0, 1, 4], "mem_total_kb": None}, 1: {"cpus": [2, 3], "mem_total_kb": 1000}}


def test_read_nodes_without_node_directories_says_why(tmp_path):
    nodes, why = procfs.read_nodes(tmp_path)
    assert nodes == {} and "no node directories" in why
    nodes, why = procfs.read_nodes(tmp_path / "missing")
    assert nodes == {} and "unreadable" in why
    assert procfs.node_ids(tmp_path / "missing") == [0]
    assert numa.topology(tmp_path)["source"].startswith("fallback:")


@pytest.mark.parametrize("text,cpus", [("0-3,8,10-11\n", [0, 1, 2, 3, 8, 10, 11]), ("5", [5]), ("", [])])
def test_parse_cpulist(text, cpus):
    assert procfs.parse_cpulist(text) == cpus


def test_hugetlb_node_free_missing_node_is_none(tmp_path):
    assert procfs.hugetlb_node_free(7, tmp_path) is None
