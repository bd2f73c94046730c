"""Shared checks for the reliability tests: the pool against a plain model."""

from __future__ import annotations

import numpy as np


def assert_accounting(pool, held) -> None:
    """The pool agrees with a model in which exactly `held` is handed out.

    Checks available/in_use/stats, then drains the pool and counts every
    handle exactly once (drained + held == all handles, disjoint), then puts
    the drained handles back so the pool is left as it was.
    """
    held = set(int(h) for h in held)
    cap = pool.capacity
    assert pool.in_use == len(held), (pool.in_use, len(held))
    assert pool.available == cap - len(held), (pool.available, cap - len(held))
    st = pool.stats()
    assert st["in_use"] == len(held) and st["available"] == cap - len(held)
    assert st["cached"] <= cap - len(held)
    for h in list(held)[:64]:
        assert pool.is_in_use(h)
    n = cap - len(held)
    drained = pool.get_bulk(n) if n else np.empty(0, np.uint32)
    assert pool.try_get() == -1
    got = drained.tolist()
    assert len(set(got)) == len(got), "a handle was handed out twice"
    assert held.isdisjoint(got), "a handed-out handle was still free"
    assert held.union(got) == set(range(cap)), "a handle was lost"
    if n:
        pool.put_bulk(drained)
    assert pool.available == cap - len(held)
