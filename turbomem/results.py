"""The shapes of the dicts TurboMem returns, as TypedDicts.

They are plain dicts at run time (``pool.stats()["gets"]`` works as before);
type checkers and editors know every key and its type.

    from turbomem.results import PoolStats, HugepageReport, Topology
"""

from __future__ import annotations

from typing import Dict, List, Optional, TypedDict

__all__ = ["PoolStats", "HugepageReport", "PageNodes", "Topology", "NodeTopology", "HugetlbPages"]


class PoolStats(TypedDict):
    """``Pool.stats()``: counters summed over every thread's cache (exact when quiescent)."""

    capacity: int
    in_use: int
    available: int
    #: objects handed out / given back (bulk calls count every object)
    gets: int
    puts: int
    #: calls served by the calling thread's cache / that touched the shared stack
    cache_hits: int
    cache_misses: int
    #: failed compare-and-swap attempts on the shared stack head
    cas_retries: int
    #: free objects parked in thread caches
    cached: int
    #: threads that hold a cache slot now
    threads: int
    cache_size: int
    #: "fence-free (membarrier steal)" or "seq_cst (membarrier unavailable)"
    hit_path: str


class PageNodes(TypedDict, total=False):
    """Where a region's pages really are (``HugepageReport["page_nodes"]``).

    Always present: ``method`` (``"move_pages"``, ``"numa_maps"`` or
    ``"unavailable: <why>"``) and ``nodes`` (node -> page count).
    ``move_pages`` adds ``sampled``, ``not_present`` and ``errors``;
    ``numa_maps`` adds ``note``.
    """

    method: str
    nodes: Dict[int, int]
    sampled: int
    not_present: int
    errors: int
    note: str


class HugepageReport(TypedDict):
    """``Pool.hugepage_report()``: what the kernel gave the pool's region, from ``/proc/self/smaps``."""

    #: what was asked: "auto", "thp", "hugetlb" or "none"
    policy: str
    #: what the kernel gave: "thp", "hugetlb" or "4k"
    backing: str
    region_bytes: int
    #: bytes on 2 MB pages (AnonHugePages, or the hugetlb mapping)
    huge_bytes: int
    #: huge_bytes / region_bytes
    coverage: float
    rss_bytes: int
    #: the system setting (/sys/kernel/mm/transparent_hugepage/enabled)
    thp_mode: str
    #: what was done: MADV_HUGEPAGE, +MADV_COLLAPSE, MAP_HUGETLB, MADV_NOHUGEPAGE, ...
    advice: str
    numa_node: Optional[int]
    #: "bound to node N", or "not bound" and why
    numa_status: str
    page_nodes: PageNodes
    #: how the pages were faulted in (MAP_POPULATE, touched, "no")
    populate: str
    kernel_page_size: int
    vmas: int
    vma_extends_beyond_region: bool


class NodeTopology(TypedDict):
    """One NUMA node in :class:`Topology`."""

    cpus: List[int]
    #: MemTotal of the node in kB; None when its meminfo is unreadable
    mem_total_kb: Optional[int]


class Topology(TypedDict):
    """``turbomem.topology()``: NUMA nodes, online CPUs and the CPUs this process may run on."""

    nodes: Dict[int, NodeTopology]
    online_cpus: List[int]
    allowed_cpus: List[int]
    #: where the node list came from (sysfs, or a single-node fallback and why)
    source: str


class HugetlbPages(TypedDict):
    """``turbomem.memory.hugetlb_pages()``: the 2 MB hugetlb pool."""

    total: int
    free: int
    reserved: int
    surplus: int
    #: "sysfs" or "meminfo"
    source: str
