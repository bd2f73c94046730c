"""Pool-side constants defined once.

The C error codes (TM_EEMPTY ...) live in include/turbomem/pool.h and reach
Python only through ``turbomem._core``; what Python code itself spells out
is kept here.
"""

from __future__ import annotations

__all__ = ["HUGEPAGE_POLICIES"]

# The ``hugepages=`` choices of Pool and create_region, in the order error
# messages list them.
HUGEPAGE_POLICIES = ("auto", "thp", "none", "hugetlb")
