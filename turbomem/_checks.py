"""The one place where arguments from Python are checked: handle arrays,
integer arrays, counts and timeouts.

Pool, Ring, the packet I/O, pcap and parse layers all call these, so one
kind of bad input gets one kind of error everywhere:

* a handle that is not an integer (bool, float, str, array...) or outside
  ``[0, limit)``: InvalidHandleError (HandleTypeError, also a TypeError, when
  the whole array has a non-integer dtype), with ``.index`` naming the element;
* a count that is a bool or not an integer: TypeError; negative: ValueError;
* a timeout that is not None or a finite real number >= 0: TypeError/ValueError,
  raised before anything waits.

Nothing here imports the compiled core.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np

from turbomem.errors import HandleTypeError, InvalidHandleError

#: The most elements one bulk call takes (a uint32 count in the C core).
MAX_BULK = 0xFFFFFFFF


def is_integer_scalar(x) -> bool:
    """True for int and numpy integers; False for bool, numpy bool, floats, arrays."""
    if type(x) is int:
        return True
    if isinstance(x, (bool, np.bool_, np.ndarray)):
        return False
    return isinstance(x, (numbers.Integral, np.integer)) or (
        hasattr(type(x), "__index__") and not isinstance(x, numbers.Real))


def check_count(n, name: str = "n") -> int:
    """A count: an int (numpy ints too), never a bool; >= 0."""
    if not is_integer_scalar(n):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}: {n!r}")
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def check_timeout(timeout, name: str = "timeout") -> float | None:
    """None (wait forever), or a finite real number >= 0 (seconds) as a float."""
    if timeout is None:
        return None
    if isinstance(timeout, (bool, np.bool_)) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, got "
                        f"{type(timeout).__name__}: {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 or None, got {timeout!r}")
    return value


def _length(obj) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def int_array(values, lo: int, hi: int, what: str = "value", *, handles: bool = False) -> np.ndarray:
    """``values`` as a 1-D integer numpy array, every element an integer in [lo, hi).

    Lists, tuples, ranges and other sequences are checked element by element
    (a bool or float among ints is refused, never silently converted);
    arrays and buffers must have an integer dtype.  Errors: with ``handles``,
    InvalidHandleError (HandleTypeError for a wrong type); otherwise
    ValueError (range, shape) or TypeError (type).  ``.index`` names the
    element when there is one.
    """
    range_err = InvalidHandleError if handles else ValueError
    type_err = HandleTypeError if handles else TypeError
    n = _length(values)
    if n is not None and n > MAX_BULK:
        raise range_err(f"{n} {what}s: one call takes at most {MAX_BULK}")
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes, bytearray, memoryview)):
        seq = list(values)
        for i, x in enumerate(seq):
            if type(x) is not int:
                if not is_integer_scalar(x):
                    raise _bad(type_err, f"{what} {x!r} is a {type(x).__name__}, not an int", i)
                seq[i] = x = operator.index(x)
            if not lo <= x < hi:
                raise _bad(range_err, f"{what} {x} is outside [{lo}, {hi})", i)
        return np.array(seq, dtype=np.int64 if hi <= 2**63 else np.uint64)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise range_err(f"{what}s must be a 1-D sequence, got {arr.ndim} dimensions")
    if arr.dtype.kind not in "iu":
        raise type_err(f"{what}s must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return arr
    bad = (arr < lo) | (arr >= hi)
    if bad.any():
        i = int(np.argmax(bad))
        raise _bad(range_err, f"{what} {arr[i]} is outside [{lo}, {hi})", i)
    return arr


def _bad(cls, message: str, index: int | None):
    err = cls(message if index is None else f"{message} (element {index})")
    err.index = index
    return err


def coerce_handles(handles, limit: int, *, unique: bool = False) -> np.ndarray:
    """Any handle collection as a C-contiguous 1-D uint32 array, every element in [0, limit).

    ``unique``: a repeated handle is an InvalidHandleError too (for calls where
    one handle used twice would mean two owners)."""
    arr = int_array(handles, 0, min(limit, 1 << 32), "handle", handles=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint32)
    if unique and len(arr) > 1:
        order = np.argsort(arr, kind="stable")
        same = arr[order[1:]] == arr[order[:-1]]
        if same.any():
            i = int(order[1:][np.argmax(same)])
            raise _bad(InvalidHandleError, f"handle {arr[i]} is given twice", i)
    return arr
