"""Type stubs for the compiled core (turbomem/_core.pyx and turbomem/_ring.pxi).

``mypy.stubtest turbomem._core`` checks them against the built module (CI).
"""

from types import TracebackType
from typing import Iterable, Literal, Optional, Union

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from turbomem.constants import HugePagePolicy
from turbomem.memory import Region
from turbomem.results import HugepageReport, PoolStats

MAX_CACHE_SIZE: int
MAX_CAPACITY: int
MAX_THREADS: int
RING_MAX_CAPACITY: int

HUGEPAGE_POLICIES: tuple[HugePagePolicy, ...]

# What the bulk calls accept as handles: a uint32 array (no copy), any integer array or sequence.
_Handles = Union[npt.ArrayLike, Iterable[int]]

@disjoint_base
class _RegionHold:
    """``with pool.hold():`` keeps the pool's memory mapped until the block ends."""

    def __enter__(self) -> Pool: ...
    def __exit__(self, *exc: object) -> Literal[False]: ...

@disjoint_base
class Pool:
    """A fixed-size object pool over one huge-page-backed region."""

    @property
    def capacity(self) -> int: ...
    @property
    def obj_size(self) -> int: ...
    @property
    def stride(self) -> int: ...
    @property
    def cache_size(self) -> int: ...
    @property
    def debug(self) -> bool: ...
    @property
    def checked(self) -> bool:
        """Whether the pool keeps per-object state (double frees and foreign handles raise)."""
    @property
    def keeps_stats(self) -> bool:
        """Whether per-call counters are kept (``stats=True``)."""
    def __init__(
        self,
        obj_size: int,
        capacity: int,
        *,
        cache_size: Optional[int] = None,
        align: int = 64,
        hugepages: HugePagePolicy = "auto",
        numa_node: Optional[int] = None,
        populate: bool = True,
        debug: Optional[bool] = None,
        checked: bool = True,
        stats: bool = False,
    ) -> None: ...
    def get(self) -> int:
        """One free object's handle; raises PoolEmptyError when there is none."""
    def try_get(self) -> int:
        """One free object's handle, or -1 when there is none."""
    def put(self, h: int) -> None:
        """Give object ``h`` back."""
    def get_bulk(self, n: int) -> npt.NDArray[np.uint32]:
        """Exactly ``n`` handles (all or nothing)."""
    def put_bulk(self, handles: _Handles) -> None:
        """Give every handle back (all checked before any goes back)."""
    def view(self, h: int) -> memoryview:
        """A writable memoryview of object ``h`` (``obj_size`` bytes)."""
    def array(self) -> npt.NDArray[np.uint8]:
        """The whole pool as a ``(capacity, obj_size)`` uint8 array (a view)."""
    def buffer(self) -> memoryview:
        """The whole region as one flat memoryview (``capacity * stride`` bytes)."""
    def is_in_use(self, h: int) -> bool:
        """Whether object ``h`` is handed out."""
    def stats(self) -> PoolStats:
        """Counters summed over every thread's cache."""
    def hugepage_report(self) -> HugepageReport:
        """What the kernel really gave: huge-page coverage and page placement."""
    def close(self) -> None:
        """Free the pool (memory unmapped once no view or array is left)."""
    def __enter__(self) -> Pool: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]: ...
    def hold(self) -> _RegionHold:
        """Keep the memory mapped for a block of work outside the GIL (``with pool.hold():``)."""
    @property
    def address(self) -> int:
        """Address of the region (for ctypes and C users)."""
    @property
    def available(self) -> int:
        """Free objects, those parked in thread caches included."""
    @property
    def in_use(self) -> int:
        """Objects handed out."""
    @property
    def closed(self) -> bool:
        """Whether close() was called."""
    @property
    def memory_released(self) -> bool:
        """Whether the region is unmapped (after close(), once no view is left)."""
    @property
    def region(self) -> Region:
        """The memory region (policy, advice, NUMA status)."""

@disjoint_base
class Ring:
    """A lock-free bounded FIFO of uint32 handles (DPDK rte_ring style)."""

    @property
    def capacity(self) -> int: ...
    @property
    def single_producer(self) -> bool: ...
    @property
    def single_consumer(self) -> bool: ...
    def __new__(cls, capacity: int, *, single_producer: bool = False, single_consumer: bool = False) -> Ring: ...
    def close(self) -> None:
        """Stop producers (they raise PoolClosedError); the contents stay dequeuable."""
    @property
    def closed(self) -> bool:
        """Whether close() was called."""
    def __len__(self) -> int: ...
    def __enter__(self) -> Ring: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> Literal[False]: ...
    def enqueue(self, h: int) -> bool:
        """Add one handle; False when the ring is full."""
    def dequeue(self) -> int:
        """Take one handle; -1 when the ring is empty."""
    def enqueue_bulk(self, handles: _Handles) -> bool:
        """Add all of handles or none; returns whether they went in."""
    def enqueue_burst(self, handles: _Handles) -> int:
        """Add as many of handles as fit; returns how many."""
    def dequeue_bulk(self, n: int) -> Optional[npt.NDArray[np.uint32]]:
        """Exactly n handles, or None when fewer are queued."""
    def dequeue_burst(self, n: int) -> npt.NDArray[np.uint32]:
        """Up to n handles (empty when the ring is)."""
    def enqueue_wait(self, h: int, timeout: Optional[float] = None) -> bool:
        """Add one handle, waiting without the GIL while the ring is full."""
    def dequeue_wait(self, timeout: Optional[float] = None) -> int:
        """Take one handle, waiting without the GIL; -1 after the timeout."""
    def dequeue_burst_wait(self, n: int, timeout: Optional[float] = None) -> npt.NDArray[np.uint32]:
        """Up to n handles, waiting without the GIL until one is queued."""
    def enqueue_burst_wait(self, handles: _Handles, timeout: Optional[float] = None) -> int:
        """Add all handles, waiting for room; returns how many went in."""

def _first_not_in_use(pool: Pool, handles: npt.NDArray[np.uint32]) -> int:
    """Index of the first handle outside the pool or not handed out, or -1."""

def hit_path_is_fence_free() -> bool:
    """Whether the cache hit path runs without a fence (membarrier is available)."""
