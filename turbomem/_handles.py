"""Small helpers shared by the packet modules (net, pcap, pipeline).

The packet layers take buffers from a Pool in bursts and must give back
whatever they did not use, on every path.  ``acquire`` is the one place that
knows how to get "up to n" handles out of an all-or-nothing ``get_bulk``;
``release`` / ``release_valid`` the places that give them back;
``owned_handles`` checks handles a caller passes in (turbomem._checks does
the type and range part, the pool says which are handed out).
"""

from __future__ import annotations

import numpy as np

from turbomem._checks import check_count, coerce_handles
from turbomem._core import _first_not_in_use
from turbomem.errors import InvalidHandleError, PoolEmptyError, TurbomemError, UseAfterFreeError

EMPTY_HANDLES = np.zeros(0, dtype=np.uint32)
EMPTY_HANDLES.setflags(write=False)


def acquire(pool, n: int, *, at_least: int = 1) -> np.ndarray:
    """Up to ``n`` handles from ``pool`` (uint32 array).

    Tries one all-or-nothing ``get_bulk(n)``; when the pool has fewer free
    objects, falls back to what is there.  Raises PoolEmptyError when fewer
    than ``at_least`` can be had (and then holds nothing).  In debug mode a
    damaged object raises UseAfterFreeError after every object of the call
    went back to the pool (``.handles`` is then empty): nothing is left
    handed out without a holder.
    """
    n = check_count(n)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    try:
        return pool.get_bulk(n)
    except PoolEmptyError:
        pass
    except UseAfterFreeError as err:
        _give_back_damaged(pool, err, ())
        raise
    got = []
    try:
        for _ in range(n):
            h = pool.try_get()
            if h < 0:
                break
            got.append(h)
    except UseAfterFreeError as err:
        _give_back_damaged(pool, err, got)
        raise
    if len(got) < at_least:
        if got:
            pool.put_bulk(np.asarray(got, dtype=np.uint32))
        raise PoolEmptyError(f"{pool!r}: wanted {n} objects (at least {at_least}), "
                             f"{len(got)} free")
    return np.asarray(got, dtype=np.uint32)


def _give_back_damaged(pool, err, more) -> None:
    """Put back what a failed debug-mode get handed out (put re-poisons the damaged object)."""
    handed = np.concatenate([np.asarray(getattr(err, "handles", ()), dtype=np.uint32),
                             np.asarray(more, dtype=np.uint32)])
    if len(handed):
        pool.put_bulk(handed)
    err.handles = EMPTY_HANDLES
    err.args = (f"{err.args[0]} (every object of the call went back to the pool)",)


def release(pool, handles) -> None:
    """Return handles (any length, possibly empty) to the pool.

    Nothing to do on a closed pool: its handles mean nothing any more."""
    if len(handles) and not pool.closed:
        pool.put_bulk(np.ascontiguousarray(handles, dtype=np.uint32))


def release_valid(pool, handles) -> None:
    """Return every valid handle of ``handles``, whatever the others are.

    For callers that promised to give everything back even when some of it
    is bad: the valid in-use handles go back (a repeated one once), the
    invalid ones (wrong type, out of range, already free) are skipped."""
    if pool.closed:
        return
    try:
        hs = coerce_handles(handles, pool.capacity)
    except (TypeError, ValueError):
        hs = None
    if hs is not None:
        try:
            pool.put_bulk(hs)
            return
        except InvalidHandleError:
            pass  # one bad element: all or nothing refused them all
    try:
        items = list(np.asarray(handles, dtype=object).ravel())
    except Exception:
        return
    for h in items:
        try:
            pool.put(h)
        except (TurbomemError, ValueError, TypeError):
            pass


def owned_handles(pool, handles, *, unique: bool = True) -> np.ndarray:
    """Handles a caller passes in for us to read or write their objects:
    integers in [0, capacity), handed out (not free), and (``unique``) no
    repeats.  InvalidHandleError otherwise, naming the element."""
    hs = coerce_handles(handles, pool.capacity, unique=unique)
    i = _first_not_in_use(pool, hs)
    if i >= 0:
        err = InvalidHandleError(f"handle {hs[i]} is free: not a handle the caller holds "
                                 f"(element {i})")
        err.index = i
        raise err
    return hs
