"""Pool-side constants defined once.

The C error codes (TM_EEMPTY ...) live in include/turbomem/pool.h and reach
Python only through ``turbomem._core``; what Python code itself spells out
is kept here.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["HUGEPAGE_POLICIES", "HugePagePolicy"]

#: The ``hugepages=`` choices of Pool and create_region, as a type.
HugePagePolicy = Literal["auto", "thp", "none", "hugetlb"]

# The same choices at run time, in the order error messages list them.
HUGEPAGE_POLICIES: tuple[HugePagePolicy, ...] = ("auto", "thp", "none", "hugetlb")
