"""Create the memory region a pool lives in: 2 MB aligned, huge-page backed
when possible, bound to a NUMA node when the kernel lets us, and populated
up front so the fast path never page-faults.

Every decision is recorded on the :class:`Region` (``advice``,
``numa_status``, ``populate``) in words, so a report can say what was asked,
what was done and what the kernel refused.  Nothing leaks: every error path
unmaps whatever it mapped.
"""

from __future__ import annotations

import errno
import operator
import weakref

from . import _sys, numa, procfs
from ._checks import is_integer_scalar
from .constants import HUGEPAGE_POLICIES
from .errors import HugePageError, NumaError, OutOfMemoryError
from .results import HugetlbPages

__all__ = [
    "HUGE_2M",
    "MAX_REGION_BYTES",
    "POLICIES",
    "Region",
    "create_region",
    "thp_mode",
    "hugetlb_pages",
]

HUGE_2M = 2 * 1024 * 1024
# The x86_64 user address space is 128 TiB; nothing bigger can ever be mapped.
MAX_REGION_BYTES = 2**47
POLICIES = HUGEPAGE_POLICIES
THP_ENABLED = procfs.THP_DIR / "enabled"  # named in error messages

_PROT_RW = _sys.PROT_READ | _sys.PROT_WRITE
_MAP_ANON_PRIVATE = _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS
# MADV_COLLAPSE failures that only mean "not now / not here": keep small pages.
_COLLAPSE_SOFT_ERRORS = {errno.EINVAL, errno.EAGAIN, errno.ENOMEM, errno.EBUSY, errno.EPERM}
# mbind failures that mean "this kernel/container does not do NUMA policy".
_MBIND_REFUSALS = {errno.EPERM, errno.ENOSYS, errno.EINVAL, errno.EACCES, errno.EOPNOTSUPP}


def thp_mode() -> str:
    """``"always"``, ``"madvise"`` or ``"never"``; ``"unavailable"`` without THP support."""
    return procfs.thp_mode()


def hugetlb_pages() -> HugetlbPages:
    """2 MB hugetlb pool counts: ``{"total", "free", "reserved", "surplus", "source"}``.

    ``reserved`` pages are promised to existing mappings but not yet faulted,
    so ``free - reserved`` is what a new mapping can still get.
    """
    pool = procfs.hugetlb_pool()
    return {"total": pool.total, "free": pool.free, "reserved": pool.reserved, "surplus": pool.surplus,
            "source": pool.source}


def _unmap_quietly(addr: int, length: int) -> None:
    """Finalizer and error-path cleanup: must never raise."""
    try:
        _sys.munmap(addr, length)
    except OSError:
        pass


class Region:
    """One anonymous mapping, ``size`` bytes at ``addr``, owned by this object.

    ``close()`` unmaps it (idempotent); a region dropped without ``close()``
    is unmapped when garbage-collected.  Do not use ``addr`` after closing.
    """

    __slots__ = (
        "addr", "size", "requested", "policy", "advice", "numa_node", "numa_status",
        "populate", "_finalizer", "__weakref__",
    )  # fmt: skip

    addr: int
    size: int
    requested: int
    policy: str
    advice: str
    numa_node: int | None
    numa_status: str
    populate: str

    def __init__(
        self,
        addr: int,
        size: int,
        requested: int,
        policy: str,
        *,
        mapped_length: int,
    ) -> None:
        self.addr = addr
        self.size = size
        self.requested = requested
        self.policy = policy
        self.advice = "none"
        self.numa_node = None
        self.numa_status = "not bound"
        self.populate = "no"
        # mapped_length may exceed size by a guard page (see _map_aligned).
        self._finalizer = weakref.finalize(self, _unmap_quietly, addr, mapped_length)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Unmap the region (idempotent)."""
        self._finalizer()

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<Region {state} {self.addr:#x}+{self.size} policy={self.policy!r} advice={self.advice!r} "
            f"numa_node={self.numa_node} populate={self.populate!r}>"
        )


def _validate(nbytes: int, hugepages: str, numa_node: int | None) -> int | None:
    """Check the arguments before anything is mapped; return the explicit node."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    if hugepages not in POLICIES:
        raise ValueError(f"unknown hugepages policy {hugepages!r}; valid policies are {', '.join(POLICIES)}")
    if nbytes > MAX_REGION_BYTES:
        raise OutOfMemoryError(
            f"cannot map {nbytes} bytes: more than the {MAX_REGION_BYTES} byte (128 TiB) user address space"
        )
    return check_numa_node(numa_node)


def check_numa_node(numa_node: object) -> int | None:
    """``None``, or an existing node number as an int (numpy ints too; bools
    refused: TypeError); a node that does not exist: NumaError."""
    if numa_node is None:
        return None
    if not is_integer_scalar(numa_node):
        raise TypeError(f"numa_node must be an int or None, got {type(numa_node).__name__}")
    node = operator.index(numa_node)  # type: ignore[arg-type]  # numpy ints work like ints
    nodes = numa.node_ids()
    if node not in nodes:
        raise NumaError(f"NUMA node {node} does not exist; nodes on this machine: {nodes}")
    return node


def _out_of_memory(size: int, exc: OSError, what: str) -> OutOfMemoryError:
    reason = exc.strerror or str(exc)
    return OutOfMemoryError(f"{what} of {size} bytes ({size / HUGE_2M:g} x 2 MB) refused: {reason} (ENOMEM)")


def _map_aligned(size: int) -> tuple[int, int]:
    """Map ``size`` bytes at a 2 MB boundary; return ``(addr, mapped_length)``.

    Over-map by 2 MB and trim.  One 4 KB PROT_NONE guard page is kept right
    after the region (the tail is never empty) so the kernel cannot merge
    the region's VMA with a neighbouring region: smaps then describes
    exactly this region.
    """
    length = size + HUGE_2M
    try:
        raw = _sys.mmap(length, _PROT_RW, _MAP_ANON_PRIVATE)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise _out_of_memory(size, exc, "mmap") from exc
        raise
    aligned = (raw + HUGE_2M - 1) & ~(HUGE_2M - 1)
    guard = _sys.PAGE_SIZE
    try:
        head = aligned - raw
        tail_start = aligned + size + guard
        tail = raw + length - tail_start
        if head:
            _sys.munmap(raw, head)
        if tail:
            _sys.munmap(tail_start, tail)
        _sys.mprotect(aligned + size, guard, _sys.PROT_NONE)
    except OSError:
        # Whatever part is still mapped goes; munmap of unmapped ranges is fine.
        _unmap_quietly(raw, length)
        raise
    return aligned, size + guard


def _map_hugetlb(size: int, numa_node: int | None) -> int:
    try:
        return _sys.mmap(size, _PROT_RW, _MAP_ANON_PRIVATE | _sys.MAP_HUGETLB | _sys.MAP_HUGE_2MB)
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise HugePageError(exc.errno, f"MAP_HUGETLB mapping of {size} bytes failed: {exc.strerror}") from exc
        counts = hugetlb_pages()
        needed = size // HUGE_2M
        available = max(0, counts["free"] - counts["reserved"])
        target = counts["total"] + max(needed - available, 0)
        where = f" (node {numa_node} needs them locally)" if numa_node is not None else ""
        raise HugePageError(
            errno.ENOMEM,
            f"MAP_HUGETLB could not reserve {needed} x 2 MB huge pages ({size} bytes){where}: "
            f"{counts['total']} configured, {counts['free']} free, {counts['reserved']} already reserved by other "
            f"mappings. Reserve more as root with: echo {target} > /proc/sys/vm/nr_hugepages",
        ) from exc


def _apply_thp_advice(region: Region, policy: str, mode: str) -> None:
    addr, size = region.addr, region.size
    if policy == "none":
        try:
            _sys.madvise(addr, size, _sys.MADV_NOHUGEPAGE, advice_name="MADV_NOHUGEPAGE")
            region.advice = "MADV_NOHUGEPAGE"
        except OSError as exc:  # THP not built in: the pages are small anyway
            region.advice = f"none (MADV_NOHUGEPAGE failed: {_sys.errno_name(exc.errno or 0)})"
        return
    if mode not in ("always", "madvise"):
        if policy == "thp":
            raise HugePageError(
                errno.EOPNOTSUPP,
                f"hugepages='thp' needs transparent huge pages, but THP mode is {mode!r} "
                f"({THP_ENABLED}); use hugepages='auto' to accept 4 KB pages",
            )
        region.advice = f"none (THP {'disabled' if mode == 'never' else mode})"
        return
    try:
        _sys.madvise(addr, size, _sys.MADV_HUGEPAGE, advice_name="MADV_HUGEPAGE")
        region.advice = "MADV_HUGEPAGE"
    except OSError as exc:
        if policy == "thp":
            raise HugePageError(exc.errno, f"hugepages='thp': {exc.strerror} ({exc})") from exc
        region.advice = f"none (MADV_HUGEPAGE failed: {_sys.errno_name(exc.errno or 0)})"


def _bind_numa(region: Region, explicit_node: int | None) -> None:
    """mbind(MPOL_BIND) before the first touch; a refusal is recorded, not raised."""
    if explicit_node is None:
        try:
            node = numa.current_node()
        except OSError as exc:
            region.numa_status = f"not bound: could not find the calling thread's node ({exc})"
            return
        origin = "the calling thread's node"
    else:
        node, origin = explicit_node, "requested"
    try:
        # No pages exist yet, so no MPOL_MF_MOVE is needed: the policy applies
        # to every page the first touch allocates.
        _sys.mbind(region.addr, region.size, _sys.MPOL_BIND, [node])
    except OSError as exc:
        if exc.errno not in _MBIND_REFUSALS:
            raise
        region.numa_status = f"not bound: mbind refused ({_sys.errno_name(exc.errno or 0)}: {exc.strerror})"
        return
    region.numa_node = node
    nodes = numa.node_ids()
    single = " (single-node machine)" if len(nodes) == 1 else ""
    region.numa_status = f"bound to node {node} ({origin}){single}"


def _touch_pages(addr: int, size: int, page_size: int) -> None:
    """Fault every page in by writing one zero byte per page (fresh memory is zero)."""
    view = _sys.memory_at(addr, size)
    view[::page_size] = bytes(len(range(0, size, page_size)))


def _populate(region: Region, page_size: int) -> None:
    addr, size = region.addr, region.size
    try:
        _sys.madvise(addr, size, _sys.MADV_POPULATE_WRITE, advice_name="MADV_POPULATE_WRITE")
        region.populate = "MADV_POPULATE_WRITE"
        return
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise _out_of_memory(size, exc, "MADV_POPULATE_WRITE") from exc
        if exc.errno == errno.EFAULT and region.policy == "hugetlb":
            # A hugetlb fault without a page (e.g. none left on the bound node).
            raise HugePageError(exc.errno, f"populating the hugetlb region failed: {exc}") from exc
        if exc.errno != errno.EINVAL:
            raise
    # EINVAL: kernel older than 5.14.  Hugetlb pages are reserved at mmap time,
    # so touching cannot SIGBUS (the node was checked before binding).
    _touch_pages(addr, size, page_size)
    region.populate = "touch"


def _anon_huge_bytes(region: Region) -> int:
    start, end = region.addr, region.addr + region.size
    return sum(
        min(vma.fields.get("AnonHugePages", 0), min(vma.end, end) - max(vma.start, start))
        for vma in procfs.mappings_for(start, end)
    )


def _ensure_huge(region: Region) -> None:
    """After populate: collapse small pages if needed; 'thp' fails without any huge page."""
    if not region.advice.startswith("MADV_HUGEPAGE"):
        return
    huge = _anon_huge_bytes(region)
    if huge < region.size:
        try:
            _sys.madvise(region.addr, region.size, _sys.MADV_COLLAPSE, advice_name="MADV_COLLAPSE")
            region.advice = "MADV_HUGEPAGE+MADV_COLLAPSE"
        except OSError as exc:
            if exc.errno not in _COLLAPSE_SOFT_ERRORS:
                raise
            region.advice = f"MADV_HUGEPAGE (MADV_COLLAPSE failed: {_sys.errno_name(exc.errno or 0)})"
        huge = _anon_huge_bytes(region)
    if region.policy == "thp" and huge == 0:
        raise HugePageError(
            errno.ENOMEM,
            f"hugepages='thp': after populating {region.size} bytes with {region.advice}, smaps shows "
            f"AnonHugePages 0 kB for the region (THP mode {thp_mode()!r}); memory may be too fragmented",
        )


def create_region(
    nbytes: int,
    *,
    hugepages: str = "auto",
    numa_node: int | None = None,
    populate: bool = True,
) -> Region:
    """Map at least ``nbytes`` bytes (rounded up to 2 MB, 2 MB aligned).

    ``hugepages``: ``"auto"`` (THP when available, never fails for it),
    ``"thp"`` (THP required: :class:`HugePageError` otherwise), ``"hugetlb"``
    (reserved 2 MB pages, fails at creation if there are not enough) or
    ``"none"`` (4 KB pages).  ``numa_node``: node to bind to, ``None`` for
    the calling thread's node; a kernel refusal leaves the region unbound
    and says why in ``numa_status``.  ``populate``: fault every page in now.
    Raises :class:`OutOfMemoryError` when the kernel refuses the memory.
    """
    explicit_node = _validate(nbytes, hugepages, numa_node)
    size = -(-nbytes // HUGE_2M) * HUGE_2M
    mode = thp_mode()
    if hugepages == "thp" and mode not in ("always", "madvise"):
        # Fail before mapping anything when the answer is already known.
        raise HugePageError(
            errno.EOPNOTSUPP,
            f"hugepages='thp' needs transparent huge pages, but THP mode is {mode!r} ({THP_ENABLED}); "
            "use hugepages='auto' to accept 4 KB pages",
        )

    if hugepages == "hugetlb":
        if explicit_node is not None:
            node_free = procfs.hugetlb_node_free(explicit_node)
            if node_free is not None and node_free < size // HUGE_2M and len(numa.node_ids()) > 1:
                # Binding would make the first touch on that node SIGBUS.
                raise HugePageError(
                    errno.ENOMEM,
                    f"node {explicit_node} has {node_free} free 2 MB hugetlb pages, {size // HUGE_2M} needed; "
                    f"reserve more with: echo N > /sys/devices/system/node/node{explicit_node}/hugepages/"
                    "hugepages-2048kB/nr_hugepages",
                )
        addr = _map_hugetlb(size, explicit_node)
        region = Region(addr, size, nbytes, hugepages, mapped_length=size)
        region.advice = "MAP_HUGETLB"
        page_size = HUGE_2M
    else:
        addr, mapped_length = _map_aligned(size)
        region = Region(addr, size, nbytes, hugepages, mapped_length=mapped_length)
        page_size = _sys.PAGE_SIZE

    try:
        if hugepages != "hugetlb":
            _apply_thp_advice(region, hugepages, mode)
        _bind_numa(region, explicit_node)
        if populate:
            _populate(region, page_size)
            _ensure_huge(region)
        elif hugepages == "thp":
            region.advice += " (not verified: populate=False)"
    except BaseException:
        region.close()
        raise
    return region
