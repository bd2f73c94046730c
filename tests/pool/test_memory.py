"""Region creation: alignment, huge-page policies, NUMA binding, populate, no leaks."""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from turbomem import _sys, memory, numa, procfs, smaps
from turbomem.errors import HugePageError, NumaError, OutOfMemoryError, TurbomemError
from turbomem.memory import HUGE_2M, create_region

from support import maps_count

MB = 1024 * 1024
THP_USABLE = memory.thp_mode() in ("always", "madvise")
needs_thp = pytest.mark.skipif(not THP_USABLE, reason=f"THP mode is {memory.thp_mode()!r}")
REPO_ROOT = Path(__file__).resolve().parents[2]


def is_mapped(addr: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if start <= addr < end:
                return True
    return False


def anon_huge_bytes_by_hand(start: int, end: int) -> int:
    """A deliberately separate, minimal read of /proc/self/smaps.

    Walk the file as blocks: a block starts at a line whose first token is
    "hex-hex"; add AnonHugePages of the blocks overlapping [start, end).
    """
    total = 0
    inside = False
    for line in Path("/proc/self/smaps").read_text().split("\n"):
        first = line.split(" ", 1)[0]
        if "-" in first and ":" not in first:
            lo, hi = first.split("-")
            inside = int(lo, 16) < end and int(hi, 16) > start
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.fixture
def region_factory():
    made = []

    def make(nbytes, **kwargs):
        region = create_region(nbytes, **kwargs)
        made.append(region)
        return region

    yield make
    for region in made:
        region.close()


def test_size_is_rounded_and_aligned(region_factory):
    region = region_factory(3 * MB + 5)
    assert region.requested == 3 * MB + 5
    assert region.size == 4 * MB
    assert region.addr % HUGE_2M == 0
    assert not region.closed
    # Exactly one VMA covers the region, starting and ending on its bounds.
    [vma] = procfs.mappings_for(region.addr, region.addr + region.size)
    assert (vma.start, vma.end) == (region.addr, region.addr + region.size)


@needs_thp
def test_auto_gets_transparent_huge_pages(region_factory):
    region = region_factory(64 * MB)
    report = smaps.hugepage_report(region)
    assert region.advice.startswith("MADV_HUGEPAGE")
    assert report["backing"] == "thp"
    assert report["coverage"] > 0.9, report
    assert report["rss_bytes"] == 64 * MB
    assert report["populate"] == "MADV_POPULATE_WRITE"


@needs_thp
def test_report_matches_an_independent_smaps_read(region_factory):
    region = region_factory(32 * MB)
    report = smaps.hugepage_report(region)
    by_hand = anon_huge_bytes_by_hand(region.addr, region.addr + region.size)
    assert report["huge_bytes"] == by_hand
    assert by_hand > 0


@needs_thp
def test_thp_policy_works_here(region_factory):
    region = region_factory(8 * MB, hugepages="thp")
    report = smaps.hugepage_report(region)
    assert report["policy"] == "thp"
    assert report["huge_bytes"] > 0


def test_none_policy_gets_small_pages(region_factory):
    region = region_factory(16 * MB, hugepages="none")
    report = smaps.hugepage_report(region)
    assert region.advice == "MADV_NOHUGEPAGE" or region.advice.startswith("none")
    assert report["backing"] == "4k"
    assert report["huge_bytes"] == 0 and report["coverage"] == 0
    assert report["kernel_page_size"] == _sys.PAGE_SIZE


def test_report_keys(region_factory):
    report = smaps.hugepage_report(region_factory(2 * MB))
    for key in (
        "policy", "backing", "region_bytes", "huge_bytes", "coverage", "rss_bytes", "thp_mode",
        "advice", "numa_node", "numa_status", "page_nodes", "populate", "kernel_page_size",
    ):  # fmt: skip
        assert key in report
    assert isinstance(report["coverage"], float)


def test_hugetlb_without_reserved_pages_fails_at_creation():
    counts = memory.hugetlb_pages()
    if counts["free"] - counts["reserved"] >= 2:
        pytest.skip(f"2 MB hugetlb pages are reserved here: {counts}")
    before = maps_count()
    with pytest.raises(HugePageError) as info:
        create_region(4 * MB, hugepages="hugetlb")
    assert info.value.errno == errno.ENOMEM
    message = str(info.value)
    assert "nr_hugepages" in message
    assert "echo " in message and f"{counts['free']} free" in message
    assert isinstance(info.value, OSError) and isinstance(info.value, TurbomemError)
    assert maps_count() == before


def test_hugetlb_with_reserved_pages_is_huge(region_factory):
    counts = memory.hugetlb_pages()
    if counts["free"] - counts["reserved"] < 1:
        pytest.skip(f"no 2 MB hugetlb page free: {counts}")
    region = region_factory(2 * MB, hugepages="hugetlb")
    report = smaps.hugepage_report(region)
    assert report["backing"] == "hugetlb"
    assert report["coverage"] == 1.0
    assert report["kernel_page_size"] == HUGE_2M


def test_thp_policy_refused_when_thp_disabled(monkeypatch):
    monkeypatch.setattr(memory, "thp_mode", lambda: "never")
    before = maps_count()
    with pytest.raises(HugePageError, match="'never'"):
        create_region(2 * MB, hugepages="thp")
    assert maps_count() == before


def test_auto_accepts_thp_disabled(monkeypatch, region_factory):
    monkeypatch.setattr(memory, "thp_mode", lambda: "never")
    region = region_factory(2 * MB)
    assert region.advice == "none (THP disabled)"


@needs_thp
def test_auto_tries_collapse_when_pages_come_back_small(monkeypatch, region_factory):
    calls = []
    real = memory._anon_huge_bytes

    def first_small(region):
        calls.append(region.addr)
        return 0 if len(calls) == 1 else real(region)

    monkeypatch.setattr(memory, "_anon_huge_bytes", first_small)
    region = region_factory(4 * MB)
    assert region.advice.startswith("MADV_HUGEPAGE")
    assert "MADV_COLLAPSE" in region.advice  # succeeded, or failed softly and said so
    assert len(calls) == 2


def test_unknown_policy_is_rejected_before_mapping():
    before = maps_count()
    with pytest.raises(ValueError, match="auto, thp, none, hugetlb"):
        create_region(2 * MB, hugepages="giant")
    assert maps_count() == before


@pytest.mark.parametrize("nbytes", [0, -1, -(2**40)])
def test_non_positive_size_is_rejected(nbytes):
    with pytest.raises(ValueError):
        create_region(nbytes)


def test_non_int_size_is_rejected():
    with pytest.raises(TypeError):
        create_region(2.5 * MB)  # type: ignore[arg-type]


@pytest.mark.parametrize("nbytes", [2**47 + 1, 2**64, 10**30])
def test_absurd_size_is_out_of_memory(nbytes):
    with pytest.raises(OutOfMemoryError, match=str(nbytes)):
        create_region(nbytes)


def test_larger_than_memory_is_out_of_memory_or_maps_lazily():
    # 64 TiB: refused by overcommit heuristics; never populated, so no OOM kill.
    try:
        region = create_region(2**46, populate=False)
    except OutOfMemoryError as exc:
        assert "70368744177664 bytes" in str(exc)
    else:
        region.close()


def test_unknown_numa_node_lists_the_nodes():
    nodes = numa.node_ids()
    missing = max(nodes) + 7
    with pytest.raises(NumaError) as info:
        create_region(2 * MB, numa_node=missing)
    assert str(nodes) in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(NumaError):
        create_region(2 * MB, numa_node=-1)


def test_default_binds_to_the_calling_threads_node(region_factory):
    region = region_factory(4 * MB)
    if region.numa_node is None:
        assert region.numa_status.startswith("not bound: ")
    else:
        assert region.numa_node in numa.node_ids()
        assert region.numa_status.startswith(f"bound to node {region.numa_node}")


def test_explicit_node_binding_and_every_page_on_node_0(region_factory):
    region = region_factory(8 * MB, numa_node=0)
    assert region.numa_node in (0, None)
    report = smaps.hugepage_report(region)
    placement = report["page_nodes"]
    if placement["method"].startswith("unavailable"):
        pytest.skip(placement["method"])
    assert set(placement["nodes"]) == {0}
    if placement["method"] == "move_pages":
        assert placement["nodes"][0] == placement["sampled"]
        assert placement["not_present"] == 0


def test_refused_mbind_leaves_a_working_unbound_region(monkeypatch, region_factory):
    def refuse(addr, length, mode, nodes, flags=0):
        raise OSError(errno.EPERM, f"mbind(MPOL_BIND, node {nodes[0]}) on {addr:#x}+{length}: Operation not permitted")

    monkeypatch.setattr(_sys, "mbind", refuse)
    region = region_factory(2 * MB, numa_node=0)
    assert region.numa_node is None
    assert region.numa_status.startswith("not bound: mbind refused (EPERM")
    assert region.populate == "MADV_POPULATE_WRITE"


def test_populate_falls_back_to_touching_pages(monkeypatch, region_factory):
    real_madvise = _sys.madvise

    def old_kernel(addr, length, advice, *, advice_name=None):
        if advice == _sys.MADV_POPULATE_WRITE:
            raise OSError(errno.EINVAL, "madvise(MADV_POPULATE_WRITE): Invalid argument")
        real_madvise(addr, length, advice, advice_name=advice_name)

    monkeypatch.setattr(_sys, "madvise", old_kernel)
    region = region_factory(4 * MB, hugepages="none")
    assert region.populate == "touch"
    assert smaps.hugepage_report(region)["rss_bytes"] == 4 * MB


def test_populate_enomem_is_out_of_memory_and_unmaps(monkeypatch):
    real_madvise = _sys.madvise

    def no_memory(addr, length, advice, *, advice_name=None):
        if advice == _sys.MADV_POPULATE_WRITE:
            raise OSError(errno.ENOMEM, "madvise(MADV_POPULATE_WRITE): Cannot allocate memory")
        real_madvise(addr, length, advice, advice_name=advice_name)

    monkeypatch.setattr(_sys, "madvise", no_memory)
    before = maps_count()
    with pytest.raises(OutOfMemoryError, match=str(4 * MB)):
        create_region(4 * MB)
    assert maps_count() == before


def test_populate_false_leaves_memory_untouched(region_factory):
    region = region_factory(4 * MB, populate=False)
    assert region.populate == "no"
    assert smaps.hugepage_report(region)["rss_bytes"] == 0


def test_close_is_idempotent_and_unmaps(region_factory):
    region = create_region(2 * MB)
    addr = region.addr
    assert is_mapped(addr)
    region.close()
    region.close()
    assert region.closed
    assert not is_mapped(addr)
    with pytest.raises(ValueError, match="closed"):
        smaps.hugepage_report(region)


def test_context_manager_closes():
    with create_region(2 * MB) as region:
        assert not region.closed
    assert region.closed


def test_forgotten_region_is_unmapped_at_gc():
    region = create_region(2 * MB)
    addr = region.addr
    del region
    gc.collect()
    assert not is_mapped(addr)


def test_2000_regions_leave_maps_flat():
    create_region(2 * MB).close()  # warm up lazily created mappings
    gc.collect()
    before = maps_count()
    for i in range(2000):
        region = create_region(2 * MB, populate=(i % 10 == 0))
        region.close()
    assert maps_count() == before


def test_thp_mode_and_hugetlb_counts():
    assert memory.thp_mode() in ("always", "madvise", "never", "unavailable")
    counts = memory.hugetlb_pages()
    assert {"total", "free", "reserved", "surplus", "source"} <= set(counts)
    assert all(counts[key] >= 0 for key in ("total", "free", "reserved", "surplus"))


RLIMIT_SCRIPT = textwrap.dedent(
    """
    import json, re, resource
    from turbomem.memory import create_region, thp_mode
    from turbomem.errors import OutOfMemoryError

    def maps_lines():
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)

    create_region(2 * 1024 * 1024).close()  # load everything first
    vm_kb = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    limit = vm_kb * 1024 + 64 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    before = maps_lines()
    outcomes = []
    policies = ["auto", "none"] + (["thp"] if thp_mode() in ("always", "madvise") else [])
    for policy in policies:
        try:
            create_region(512 * 1024 * 1024, hugepages=policy)
        except OutOfMemoryError as exc:
            outcomes.append(["OutOfMemoryError", str(exc)])
        except BaseException as exc:
            outcomes.append([type(exc).__name__, str(exc)])
        else:
            outcomes.append(["mapped", ""])
    # Memory well within the limit still works afterwards.
    small = create_region(4 * 1024 * 1024)
    small.close()
    print(json.dumps({"before": before, "after": maps_lines(), "outcomes": outcomes}))
    """
)


def test_rlimit_as_gives_out_of_memory_and_leaks_nothing():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", RLIMIT_SCRIPT], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for kind, message in result["outcomes"]:
        assert kind == "OutOfMemoryError", result
        assert str(512 * 1024 * 1024) in message
    assert result["after"] == result["before"], result
