"""Proof of promotion: what the kernel actually gave a region.

``/proc/<pid>/smaps`` says, per VMA, how much is backed by transparent huge
pages (``AnonHugePages``) or hugetlb pages (``Private_Hugetlb`` ...), as
parsed by :mod:`turbomem.procfs` (the parsers are re-exported here);
``move_pages(2)`` in query mode (or ``/proc/<pid>/numa_maps``) says which NUMA
node each page sits on.  :func:`hugepage_report` puts both together for a
:class:`turbomem.memory.Region`.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import _sys
from .errors import SmapsParseError
from .procfs import Mapping, mappings_for, parse_numa_maps, parse_smaps, read_numa_maps, read_smaps, thp_mode

if TYPE_CHECKING:  # pragma: no cover - import only for annotations
    from .memory import Region

__all__ = [
    "Mapping",
    "parse_smaps",
    "read_smaps",
    "mappings_for",
    "parse_numa_maps",
    "read_numa_maps",
    "page_nodes",
    "hugepage_report",
    "MAX_SAMPLED_PAGES",
]

# Bigger regions are sampled at evenly spaced pages rather than all queried.
MAX_SAMPLED_PAGES = 4096


def _sample_addresses(addr: int, size: int, page_size: int) -> list[int]:
    pages = max(1, -(-size // page_size))
    if pages <= MAX_SAMPLED_PAGES:
        return [addr + i * page_size for i in range(pages)]
    step = pages / MAX_SAMPLED_PAGES
    return [addr + int(i * step) * page_size for i in range(MAX_SAMPLED_PAGES)]


def page_nodes(addr: int, size: int, page_size: int = _sys.PAGE_SIZE) -> dict:
    """Which NUMA node each page of ``[addr, addr+size)`` is on.

    Returns ``{"method": "move_pages"|"numa_maps"|"unavailable: <why>",
    "nodes": {node: pages}, ...}``.  With move_pages, every page is queried,
    or ``MAX_SAMPLED_PAGES`` evenly spaced ones for big regions (``"sampled"``
    says how many; ``"not_present"`` counts pages never touched).  The
    numa_maps fallback covers the whole VMAs overlapping the range, with
    counts converted to ``page_size`` units.
    """
    if size <= 0 or page_size <= 0:
        raise ValueError(f"page_nodes() needs a positive size and page_size, got {size}, {page_size}")
    addresses = _sample_addresses(addr, size, page_size)
    try:
        statuses = _sys.move_pages_query(addresses)
    except OSError as exc:
        move_pages_error = f"move_pages refused ({_sys.errno_name(exc.errno or 0)})"
    else:
        nodes: dict[int, int] = {}
        not_present = other = 0
        for status in statuses:
            if status >= 0:
                nodes[status] = nodes.get(status, 0) + 1
            elif status == -errno.ENOENT:
                not_present += 1
            else:
                other += 1
        return {
            "method": "move_pages",
            "nodes": dict(sorted(nodes.items())),
            "sampled": len(addresses),
            "not_present": not_present,
            "errors": other,
        }

    try:
        entries = read_numa_maps()
    except (OSError, SmapsParseError) as exc:
        return {"method": f"unavailable: {move_pages_error}; numa_maps unreadable ({exc})", "nodes": {}}
    try:
        vmas = mappings_for(addr, addr + size)
    except (OSError, SmapsParseError):
        vmas = []
    nodes = {}
    for vma in vmas:
        entry = entries.get(vma.start)
        if entry is None:
            continue
        unit = entry.get("kernelpagesize_kB", 4) * 1024
        for node, count in entry["nodes"].items():
            nodes[node] = nodes.get(node, 0) + count * unit // page_size
    return {"method": "numa_maps", "nodes": dict(sorted(nodes.items())), "note": move_pages_error}


def hugepage_report(region: Region) -> dict:
    """What backs ``region``: THP, hugetlb or 4 KB pages, how much, and on which node.

    Raises ``ValueError`` if the region is closed (its address may already
    belong to another mapping).
    """
    if region.closed:
        raise ValueError(f"hugepage_report() on a closed region (was {region.addr:#x}+{region.size})")
    start, end = region.addr, region.addr + region.size
    vmas = mappings_for(start, end)
    region_bytes = region.size
    huge_bytes = rss_bytes = 0
    hugetlb = False
    for vma in vmas:
        overlap = min(vma.end, end) - max(vma.start, start)
        hugetlb_faulted = vma.fields.get("Private_Hugetlb", 0) + vma.fields.get("Shared_Hugetlb", 0)
        if vma.is_hugetlb:
            hugetlb = True
            # Every page of a hugetlb VMA is huge, faulted or merely reserved.
            huge_bytes += overlap
            rss_bytes += min(overlap, vma.fields.get("Rss", 0) + hugetlb_faulted)
        else:
            # A VMA bigger than the region (merged with a neighbour) cannot be
            # attributed exactly; clipping keeps the numbers an upper bound.
            huge_bytes += min(overlap, vma.fields.get("AnonHugePages", 0))
            rss_bytes += min(overlap, vma.fields.get("Rss", 0))
    kernel_page_size = vmas[0].fields.get("KernelPageSize", _sys.PAGE_SIZE) if vmas else _sys.PAGE_SIZE
    if hugetlb:
        backing = "hugetlb"
    elif huge_bytes > 0:
        backing = "thp"
    else:
        backing = "4k"
    return {
        "policy": region.policy,
        "backing": backing,
        "region_bytes": region_bytes,
        "huge_bytes": huge_bytes,
        "coverage": huge_bytes / region_bytes if region_bytes else 0.0,
        "rss_bytes": rss_bytes,
        "thp_mode": thp_mode(),
        "advice": region.advice,
        "numa_node": region.numa_node,
        "numa_status": region.numa_status,
        "page_nodes": page_nodes(start, region_bytes, kernel_page_size),
        "populate": region.populate,
        "kernel_page_size": kernel_page_size,
        "vmas": len(vmas),
        "vma_extends_beyond_region": any(v.start < start or v.end > end for v in vmas),
    }
