"""Every exception TurboMem raises, in one place.

The compiled core returns small negative integers; ``turbomem._core`` turns
them into these classes through a single function (``_raise_for``), so the
mapping from C error code to Python exception lives in exactly one spot.
"""

from __future__ import annotations

__all__ = [
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
    "HandleTypeError",
    "SharedFormatError",
]


class TurbomemError(Exception):
    """Base class of every error raised by TurboMem."""


class PoolEmptyError(TurbomemError, MemoryError):
    """No free object (or not enough for an all-or-nothing bulk request)."""


class InvalidHandleError(TurbomemError, ValueError):
    """A handle that is not an integer in ``[0, capacity)`` of this pool."""

    #: Where the layers name it: the position of the offending element in the caller's handles.
    index: int


class HandleTypeError(InvalidHandleError, TypeError):
    """Handles of a type that is not an integer (a float, bool, str or object array).

    Both an InvalidHandleError and a TypeError, so either ``except`` catches it."""


class DoubleFreeError(InvalidHandleError):
    """A handle returned to the pool while it was already free."""


class PoolClosedError(TurbomemError, RuntimeError):
    """An operation on a pool (or ring) after ``close()``."""


class HugePageError(TurbomemError, OSError):
    """Huge pages were required by the policy but could not be obtained."""


class OutOfMemoryError(TurbomemError, MemoryError):
    """The kernel refused to map the pool's region (ENOMEM, RLIMIT_AS...)."""


class NumaError(TurbomemError, ValueError):
    """A NUMA request that cannot be honoured (for example a node that does not exist)."""


class SmapsParseError(TurbomemError, ValueError):
    """``/proc/self/smaps`` (or ``numa_maps``) text that does not parse."""


class UseAfterFreeError(TurbomemError, RuntimeError):
    """Debug mode found a write into an object while it was free."""


class SharedFormatError(TurbomemError, ValueError):
    """A file or descriptor that is not a valid TurboMem shared pool or ring:
    foreign, corrupt, truncated, of another layout version, or unsafe to map."""
