"""Proof of promotion: what the kernel actually gave a region.

``/proc/<pid>/smaps`` says, per VMA, how much is backed by transparent huge
pages (``AnonHugePages``) or hugetlb pages (``Private_Hugetlb`` ...);
``move_pages(2)`` in query mode (or ``/proc/<pid>/numa_maps``) says which NUMA
node each page sits on.  :func:`hugepage_report` puts both together for a
:class:`turbomem.memory.Region`.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import _sys
from .errors import SmapsParseError

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

_HEADER = re.compile(
    r"^([0-9a-fA-F]+)-([0-9a-fA-F]+)\s+(\S{4})\s+([0-9a-fA-F]+)\s+([0-9a-fA-F]+:[0-9a-fA-F]+)\s+(\d+)(?:\s+(.*))?$"
)
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$")
_KB_VALUE = re.compile(r"^(\d+)\s+kB$")
_INT_VALUE = re.compile(r"^-?\d+$")
# Keys whose value must be numeric; any other key with a non-numeric value is
# skipped, so future kernels adding text fields do not break the parser.
_NUMERIC_KEYS = frozenset(
    {
        "Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Pss_Anon",
        "Pss_File", "Pss_Shmem", "Shared_Clean", "Shared_Dirty", "Private_Clean",
        "Private_Dirty", "Referenced", "Anonymous", "KSM", "LazyFree", "AnonHugePages",
        "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap",
        "SwapPss", "Locked", "THPeligible", "ProtectionKey",
    }
)  # fmt: skip


@dataclass
class Mapping:
    """One VMA of ``/proc/<pid>/smaps``; ``fields`` holds kB values converted to bytes."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    fields: dict[str, int] = field(default_factory=dict)
    vmflags: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def is_hugetlb(self) -> bool:
        return "ht" in self.vmflags or self.fields.get("Private_Hugetlb", 0) + self.fields.get("Shared_Hugetlb", 0) > 0


def _parse_error(kind: str, lineno: int, line: str, why: str) -> SmapsParseError:
    return SmapsParseError(f"{kind} line {lineno}: {why}: {line!r}")


def parse_smaps(text: str) -> list[Mapping]:
    """Parse smaps text; raise :class:`SmapsParseError` naming the bad line."""
    maps: list[Mapping] = []
    current: Mapping | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        header = _HEADER.match(line)
        if header:
            start, end = int(header.group(1), 16), int(header.group(2), 16)
            if end < start:
                raise _parse_error("smaps", lineno, line, "mapping ends before it starts")
            current = Mapping(
                start=start,
                end=end,
                perms=header.group(3),
                offset=int(header.group(4), 16),
                dev=header.group(5),
                inode=int(header.group(6)),
                path=(header.group(7) or "").strip(),
            )
            maps.append(current)
            continue
        kv = _FIELD.match(line)
        if not kv:
            raise _parse_error("smaps", lineno, line, "neither a mapping header nor a 'Key: value' field")
        if current is None:
            raise _parse_error("smaps", lineno, line, "field before any mapping header")
        key, value = kv.group(1), kv.group(2).strip()
        if key == "VmFlags":
            current.vmflags = value.split()
            continue
        kb = _KB_VALUE.match(value)
        if kb:
            current.fields[key] = int(kb.group(1)) * 1024
        elif _INT_VALUE.match(value):
            current.fields[key] = int(value)
        elif key in _NUMERIC_KEYS:
            raise _parse_error("smaps", lineno, line, f"{key} is not a number")
        # else: an unknown key with a text value, tolerated and ignored.
    return maps


def read_smaps(pid: int | str = "self") -> list[Mapping]:
    return parse_smaps(Path(f"/proc/{pid}/smaps").read_text())


def mappings_for(start: int, end: int, maps: list[Mapping] | None = None) -> list[Mapping]:
    """The mappings overlapping ``[start, end)``, in address order."""
    if maps is None:
        maps = read_smaps()
    return sorted((m for m in maps if m.start < end and m.end > start), key=lambda m: m.start)


_NUMA_NODE = re.compile(r"^N(\d+)$")
_NUMA_INT_KEYS = frozenset(
    {"anon", "dirty", "mapped", "mapmax", "swapcache", "active", "writeback", "kernelpagesize_kB"}
)


def parse_numa_maps(text: str) -> dict[int, dict]:
    """Parse numa_maps text into ``{start: {"policy", "nodes", "kernelpagesize_kB", ...}}``.

    ``nodes`` maps node -> pages (in ``kernelpagesize_kB`` units); bare words
    such as ``heap``, ``stack`` or ``huge`` go to ``"flags"``; ``file=`` to ``"file"``.
    """
    result: dict[int, dict] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) < 2:
            raise _parse_error("numa_maps", lineno, line, "expected '<address> <policy> ...'")
        try:
            start = int(tokens[0], 16)
        except ValueError:
            raise _parse_error("numa_maps", lineno, line, f"bad address {tokens[0]!r}") from None
        entry: dict = {"policy": tokens[1], "nodes": {}, "flags": []}
        for token in tokens[2:]:
            key, sep, value = token.partition("=")
            if not sep:
                entry["flags"].append(token)
                continue
            node = _NUMA_NODE.match(key)
            if node or key in _NUMA_INT_KEYS:
                try:
                    number = int(value)
                except ValueError:
                    raise _parse_error("numa_maps", lineno, line, f"{key} is not a number") from None
                if node:
                    entry["nodes"][int(node.group(1))] = number
                else:
                    entry[key] = number
            else:
                entry[key] = value  # file=..., and keys we do not know
        result[start] = entry
    return result


def read_numa_maps(pid: int | str = "self") -> dict[int, dict]:
    return parse_numa_maps(Path(f"/proc/{pid}/numa_maps").read_text())


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
    from .memory import thp_mode  # local: memory imports this module

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
