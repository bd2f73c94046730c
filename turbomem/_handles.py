"""Small helpers shared by the packet modules (net, pcap, pipeline).

The packet layers take buffers from a Pool in bursts and must give back
whatever they did not use, on every path.  ``acquire`` is the one place that
knows how to get "up to n" handles out of an all-or-nothing ``get_bulk``.
"""

from __future__ import annotations

import numpy as np

from turbomem.errors import PoolEmptyError

EMPTY_HANDLES = np.zeros(0, dtype=np.uint32)
EMPTY_HANDLES.setflags(write=False)


def acquire(pool, n: int, *, at_least: int = 1) -> np.ndarray:
    """Up to ``n`` handles from ``pool`` (uint32 array).

    Tries one all-or-nothing ``get_bulk(n)``; when the pool has fewer free
    objects, falls back to what is there.  Raises PoolEmptyError when fewer
    than ``at_least`` can be had (and then holds nothing).
    """
    if n <= 0:
        return np.zeros(0, dtype=np.uint32)
    try:
        return pool.get_bulk(n)
    except PoolEmptyError:
        pass
    got = []
    for _ in range(n):
        h = pool.try_get()
        if h < 0:
            break
        got.append(h)
    if len(got) < at_least:
        if got:
            pool.put_bulk(np.asarray(got, dtype=np.uint32))
        raise PoolEmptyError(f"{pool!r}: wanted {n} objects (at least {at_least}), "
                             f"{len(got)} free")
    return np.asarray(got, dtype=np.uint32)


def release(pool, handles) -> None:
    """Return handles (any length, possibly empty) to the pool."""
    if len(handles):
        pool.put_bulk(np.ascontiguousarray(handles, dtype=np.uint32))
