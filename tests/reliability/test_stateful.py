"""Hypothesis: random call sequences against a pure-Python reference pool."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import turbomem as tm
from cy.checks import assert_accounting
from turbomem.errors import DoubleFreeError, InvalidHandleError, PoolClosedError, PoolEmptyError

CAP = 24


class PoolMachine(RuleBasedStateMachine):
    """Model: `held` is the set of handed-out handles; everything else is free."""

    def __init__(self):
        super().__init__()
        self.pool = tm.Pool(16, CAP, cache_size=6, populate=False, hugepages="none")
        self.held: set[int] = set()
        self.closed = False
        self.views = []

    def _closed_call(self, fn):
        try:
            fn()
        except PoolClosedError:
            return
        raise AssertionError("call on a closed pool did not raise PoolClosedError")

    @rule()
    def get(self):
        if self.closed:
            return self._closed_call(self.pool.get)
        if len(self.held) == CAP:
            try:
                self.pool.get()
            except PoolEmptyError:
                return
            raise AssertionError("get on an empty pool succeeded")
        h = self.pool.get()
        assert 0 <= h < CAP and h not in self.held
        self.held.add(h)

    @rule()
    def try_get(self):
        if self.closed:
            return self._closed_call(self.pool.try_get)
        h = self.pool.try_get()
        if len(self.held) == CAP:
            assert h == -1
        else:
            assert 0 <= h < CAP and h not in self.held
            self.held.add(h)

    @rule(n=st.integers(-2, CAP + 2))
    def get_bulk(self, n):
        if self.closed:
            return self._closed_call(lambda: self.pool.get_bulk(n))
        free = CAP - len(self.held)
        try:
            out = self.pool.get_bulk(n)
        except ValueError:
            assert n < 0
            return
        except PoolEmptyError:
            assert n > free
            return
        assert 0 <= n <= free and len(out) == n
        got = set(out.tolist())
        assert len(got) == n and self.held.isdisjoint(got)
        self.held |= got

    @rule(data=st.data())
    def put(self, data):
        if self.closed:
            return self._closed_call(lambda: self.pool.put(0))
        h = data.draw(st.one_of(st.sampled_from(sorted(self.held)) if self.held else st.nothing(),
                                st.integers(-3, CAP + 3), st.just(2**64)))
        try:
            self.pool.put(h)
        except DoubleFreeError:
            assert 0 <= h < CAP and h not in self.held
        except InvalidHandleError:
            assert not 0 <= h < CAP
        else:
            assert h in self.held
            self.held.discard(h)

    @rule(data=st.data(), dtype=st.sampled_from([np.uint32, np.int64, np.uint16, np.int32]))
    def put_bulk(self, data, dtype):
        if self.closed:
            return self._closed_call(lambda: self.pool.put_bulk([]))
        base = sorted(self.held)
        items = data.draw(st.lists(st.sampled_from(base), unique=True)) if base else []
        # sometimes one bad element: free, repeated or out of range
        bad = data.draw(st.sampled_from([None, "free", "dup", "range"]))
        if bad == "free" and len(self.held) < CAP:
            items = items + [min(set(range(CAP)) - self.held)]
        elif bad == "dup" and items:
            items = items + [items[0]]
        elif bad == "range":
            items = items + [CAP + 1]
        else:
            bad = None
        try:
            self.pool.put_bulk(np.array(items, dtype=dtype))
        except (DoubleFreeError, InvalidHandleError):
            assert bad is not None
        else:
            assert bad is None
            self.held -= set(items)

    @rule(data=st.data())
    def view(self, data):
        if self.closed:
            return self._closed_call(lambda: self.pool.view(0))
        h = data.draw(st.integers(-2, CAP + 2))
        try:
            v = self.pool.view(h)
        except InvalidHandleError:
            assert not 0 <= h < CAP
        else:
            assert len(v) == 16
            v[0] = 1
            if len(self.views) < 3:
                self.views.append(v)

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self):
        self.pool.close()
        self.closed = True
        assert self.pool.memory_released == (not self.views)

    @rule()
    def drop_views(self):
        self.views.clear()
        if self.closed:
            assert self.pool.memory_released

    @invariant()
    def accounting(self):
        if self.closed:
            return
        assert self.pool.in_use == len(self.held)
        assert self.pool.available == CAP - len(self.held)
        for h in range(CAP):
            assert self.pool.is_in_use(h) == (h in self.held)

    def teardown(self):
        if not self.closed:
            assert_accounting(self.pool, self.held)
            self.pool.close()


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestPoolMachine = PoolMachine.TestCase
