"""TurboMem: a lock-free, huge-page-backed, NUMA-aware object pool for Python.

    import turbomem as tm
    with tm.Pool(2048, 65536) as pool:
        h = pool.get()
        pool.view(h)[:4] = b"ping"
        pool.put(h)

The compiled core (``turbomem._core``) does the work; this module is the
public facade.
"""

from __future__ import annotations

import os as _os

from turbomem._core import MAX_CACHE_SIZE, MAX_CAPACITY, RING_MAX_CAPACITY, Pool, Ring, hit_path_is_fence_free
from turbomem.errors import (
    DoubleFreeError,
    RingBusyError,
    SharedFormatError,
    HugePageError,
    InvalidHandleError,
    NumaError,
    OutOfMemoryError,
    PoolClosedError,
    PoolEmptyError,
    SmapsParseError,
    TurbomemError,
    UseAfterFreeError,
)
from turbomem.numa import current_cpu, current_node, pin_thread, topology
from turbomem.shared import SharedPool, SharedRing

__version__ = "0.1.0"

__all__ = [
    "Pool",
    "Ring",
    "SharedPool",
    "SharedRing",
    "RING_MAX_CAPACITY",
    "MAX_CACHE_SIZE",
    "MAX_CAPACITY",
    "hit_path_is_fence_free",
    "get_include",
    "pin_thread",
    "current_cpu",
    "current_node",
    "topology",
    "TurbomemError",
    "PoolEmptyError",
    "InvalidHandleError",
    "DoubleFreeError",
    "PoolClosedError",
    "HugePageError",
    "OutOfMemoryError",
    "NumaError",
    "SmapsParseError",
    "UseAfterFreeError",
    "SharedFormatError",
    "RingBusyError",
]


def get_include() -> str:
    """Directory holding turbomem/*.h (the header-only C core)."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    installed = _os.path.join(here, "include")
    if _os.path.exists(_os.path.join(installed, "turbomem", "pool.h")):
        return installed
    return _os.path.join(_os.path.dirname(here), "include")
