"""Every read of ``/proc`` and ``/sys`` TurboMem makes, with typed results.

One module so that each kernel file has one parser: smaps and numa_maps,
transparent huge page settings, the hugetlb pool counts, ``/proc/meminfo``,
CPU lists and the NUMA node directories.  Readers never raise for a missing
file where "the kernel does not have this" is an answer; they say so in the
result (``None``, ``"unavailable"``, a ``source`` string).  Parsers of text
that is present but malformed raise :class:`~turbomem.errors.SmapsParseError`
(smaps, numa_maps) naming the bad line.

Nothing here imports the rest of TurboMem except :mod:`turbomem.errors`, so
every other module can import this one without a cycle.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import SmapsParseError

__all__ = [
    "Mapping",
    "parse_smaps",
    "read_smaps",
    "mappings_for",
    "parse_numa_maps",
    "read_numa_maps",
    "ThpSettings",
    "thp_settings",
    "thp_mode",
    "HugetlbPool",
    "hugetlb_pool",
    "hugetlb_node_free",
    "meminfo",
    "parse_cpulist",
    "online_cpus",
    "NodeInfo",
    "node_ids",
    "read_nodes",
    "cpuinfo_model",
    "cpuinfo_has_flag",
    "shmem_thp_mode",
    "ProcessState",
    "process_state",
]

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
HUGETLB_2M_DIR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
MEMINFO = Path("/proc/meminfo")
CPUINFO = Path("/proc/cpuinfo")
NODE_ROOT = Path("/sys/devices/system/node")
CPU_ONLINE = Path("/sys/devices/system/cpu/online")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


# ------------------------------------------------------ smaps, numa_maps ----

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
    """``/proc/<pid>/smaps`` parsed by parse_smaps."""
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


def parse_numa_maps(text: str) -> dict[int, dict[str, Any]]:
    """Parse numa_maps text into ``{start: {"policy", "nodes", "kernelpagesize_kB", ...}}``.

    ``nodes`` maps node -> pages (in ``kernelpagesize_kB`` units); bare words
    such as ``heap``, ``stack`` or ``huge`` go to ``"flags"``; ``file=`` to ``"file"``.
    """
    result: dict[int, dict[str, Any]] = {}
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
        entry: dict[str, Any] = {"policy": tokens[1], "nodes": {}, "flags": []}
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


def read_numa_maps(pid: int | str = "self") -> dict[int, dict[str, Any]]:
    """``/proc/<pid>/numa_maps`` parsed by :func:`parse_numa_maps`."""
    return parse_numa_maps(Path(f"/proc/{pid}/numa_maps").read_text())




# ------------------------------------------------------ transparent huge pages

_CHOSEN = re.compile(r"\[(\w+)\]")


class ThpSettings(NamedTuple):
    """The bracketed choices of ``transparent_hugepage/{enabled,defrag}``; ``None`` if unreadable."""

    enabled: str | None
    defrag: str | None


def _bracketed(text: str | None) -> str | None:
    """``"always [madvise] never"`` -> ``"madvise"``."""
    if text is None:
        return None
    chosen = _CHOSEN.search(text)
    return chosen.group(1) if chosen else None


def thp_settings(root: Path = THP_DIR) -> ThpSettings:
    """The THP ``enabled`` and ``defrag`` settings (None where unreadable)."""
    return ThpSettings(_bracketed(_read(root / "enabled")), _bracketed(_read(root / "defrag")))


def thp_mode() -> str:
    """``"always"``, ``"madvise"`` or ``"never"``; ``"unavailable"`` without THP support."""
    return thp_settings().enabled or "unavailable"


def shmem_thp_mode() -> str:
    """The THP policy for shared memory (memfd, /dev/shm, MAP_SHARED|MAP_ANONYMOUS):
    ``"always"``, ``"within_size"``, ``"advise"``, ``"never"``, ``"deny"``,
    ``"force"``; ``"unavailable"`` without the file."""
    return _bracketed(_read(THP_DIR / "shmem_enabled")) or "unavailable"


class ProcessState(NamedTuple):
    """Field 3 (state letter) and field 22 (start time, clock ticks after boot)
    of ``/proc/PID/stat``."""

    state: str
    start_time: int


def process_state(pid: int | str = "self") -> ProcessState | None:
    """``None`` when the process does not exist (or its stat does not parse)."""
    text = _read(Path(f"/proc/{pid}/stat"))
    if not text:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = text[text.rfind(")") + 2:].split()
    try:
        return ProcessState(rest[0], int(rest[19]))
    except (IndexError, ValueError):
        return None


# ------------------------------------------------------------- hugetlb, meminfo

def meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """``/proc/meminfo`` as ``{key: number}`` (numbers as printed: kB or counts); ``{}`` if unreadable."""
    out: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words:
            try:
                out[key.strip()] = int(words[0])
            except ValueError:
                pass
    return out


class HugetlbPool(NamedTuple):
    """2 MB hugetlb pool counts and where they came from.

    ``reserved`` pages are promised to existing mappings but not yet faulted,
    so ``free - reserved`` is what a new mapping can still get.
    """

    total: int
    free: int
    reserved: int
    surplus: int
    source: str


_HUGETLB_FILES = (("total", "nr_hugepages"), ("free", "free_hugepages"),
                  ("reserved", "resv_hugepages"), ("surplus", "surplus_hugepages"))


def hugetlb_pool() -> HugetlbPool:
    """From sysfs when it has the 2 MB directory, else from ``/proc/meminfo``."""
    try:
        counts = {key: int((HUGETLB_2M_DIR / name).read_text()) for key, name in _HUGETLB_FILES}
        return HugetlbPool(**counts, source=str(HUGETLB_2M_DIR))
    except (OSError, ValueError):
        pass
    if _read(MEMINFO) is None:
        return HugetlbPool(0, 0, 0, 0, "unavailable")
    info = meminfo()
    if info.get("Hugepagesize", 0) != 2048:
        # /proc/meminfo only describes the default size, which is not 2 MB here.
        return HugetlbPool(0, 0, 0, 0, "unavailable (default huge page size is not 2 MB)")
    return HugetlbPool(
        total=info.get("HugePages_Total", 0),
        free=info.get("HugePages_Free", 0),
        reserved=info.get("HugePages_Rsvd", 0),
        surplus=info.get("HugePages_Surp", 0),
        source=str(MEMINFO),
    )


def hugetlb_node_free(node: int, root: Path = NODE_ROOT) -> int | None:
    """Free 2 MB hugetlb pages on one NUMA node; ``None`` if sysfs does not say."""
    try:
        return int((root / f"node{node}" / "hugepages" / "hugepages-2048kB" / "free_hugepages").read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------- CPUs and nodes

_NODE_DIR = re.compile(r"node(\d+)$")


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]`` (the kernel's list format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            first, last = (int(x) for x in part.split("-", 1))
            if first > last or first < 0:
                raise ValueError(f"bad CPU range {part!r} in {text!r}")
            cpus.extend(range(first, last + 1))
        else:
            cpus.append(int(part))
    return sorted(set(cpus))


def online_cpus(path: Path = CPU_ONLINE) -> list[int]:
    """Online CPUs from sysfs; every CPU ``os.cpu_count()`` knows when sysfs does not say."""
    try:
        return parse_cpulist(path.read_text())
    except (OSError, ValueError):
        return list(range(os.cpu_count() or 1))


class NodeInfo(NamedTuple):
    """One NUMA node directory: its CPUs and ``MemTotal`` (``None`` if its meminfo is unreadable)."""

    cpus: list[int]
    mem_total_kb: int | None


def node_ids(root: Path = NODE_ROOT) -> list[int]:
    """The NUMA node numbers present (``[0]`` when sysfs has no node directory)."""
    try:
        ids = [int(m.group(1)) for entry in root.iterdir() if (m := _NODE_DIR.match(entry.name))]
    except OSError:
        ids = []
    return sorted(ids) or [0]


_MEMTOTAL = re.compile(r"MemTotal:\s*(\d+)\s*kB")


def read_nodes(root: Path = NODE_ROOT) -> tuple[dict[int, NodeInfo], str | None]:
    """``({node: NodeInfo}, None)``, or ``({}, why)`` when there are no node directories."""
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        return {}, f"{root} unreadable ({exc.strerror or exc})"
    nodes: dict[int, NodeInfo] = {}
    for entry in entries:
        match = _NODE_DIR.match(entry.name)
        if not match:
            continue
        try:
            cpus = parse_cpulist((entry / "cpulist").read_text())
        except (OSError, ValueError):
            cpus = []
        found = _MEMTOTAL.search(_read(entry / "meminfo") or "")
        nodes[int(match.group(1))] = NodeInfo(cpus, int(found.group(1)) if found else None)
    if not nodes:
        return {}, f"no node directories in {root}"
    return dict(sorted(nodes.items())), None


def cpuinfo_model() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo``; ``None`` if there is none."""
    for line in (_read(CPUINFO) or "").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def cpuinfo_has_flag(flag: str) -> bool:
    """Whether the first ``flags`` line of ``/proc/cpuinfo`` lists ``flag``."""
    for line in (_read(CPUINFO) or "").splitlines():
        if line.startswith("flags"):
            return flag in line.split(":", 1)[-1].split()
    return False
