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

try:
    from turbomem._core import MAX_CACHE_SIZE, MAX_CAPACITY, RING_MAX_CAPACITY, Pool, Ring, hit_path_is_fence_free
except ModuleNotFoundError as _exc:  # pragma: no cover - depends on how the package was installed
    if _exc.name != "turbomem._core":
        raise
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ModuleNotFoundError(
        f"turbomem's compiled core (turbomem._core) is not built in {_here}. If that is a source "
        "checkout, it shadows an installed TurboMem because Python looks in the current directory "
        "first: run from another directory, or build in place with `pip install -e .` "
        "(or `python setup.py build_ext --inplace`).",
        name="turbomem._core",
    ) from None
from turbomem.errors import (
    DoubleFreeError,
    HandleTypeError,
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

from turbomem._version import __version__

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
    "get_cython_include",
    "pin_thread",
    "current_cpu",
    "current_node",
    "topology",
    "TurbomemError",
    "PoolEmptyError",
    "InvalidHandleError",
    "DoubleFreeError",
    "HandleTypeError",
    "PoolClosedError",
    "HugePageError",
    "OutOfMemoryError",
    "NumaError",
    "SmapsParseError",
    "UseAfterFreeError",
    "SharedFormatError",
]


def get_include() -> str:
    """Directory holding turbomem/*.h (the header-only C core)."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    installed = _os.path.join(here, "include")
    if _os.path.exists(_os.path.join(installed, "turbomem", "pool.h")):
        return installed
    return _os.path.join(_os.path.dirname(here), "include")


def get_cython_include() -> str:
    """Directory to put on Cython's include path so that ``cimport turbomem._core`` finds ``_core.pxd``.

    It is the directory that holds the ``turbomem`` package: site-packages for a
    normal install, the source tree for an editable one (whose import hook
    Cython cannot see).  Use it as ``cythonize(..., include_path=[...])`` or
    ``cythonize -I DIR``.
    """
    return _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
