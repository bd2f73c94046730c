"""Pool(checked=True/False, stats=...): every guarantee in both modes.

- no get fails while objects sit idle in other threads' caches (steal);
- a thread that exits returns its cached objects;
- a fork child holds every free object exactly once (also while threads churn);
- close() never unmaps memory under a live view;
- bulk calls larger than the cache move whole magazines, all or nothing;
- Hypothesis: random call sequences against a model, in both modes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import turbomem as tm
from support import fork_during, in_child, park
from turbomem.errors import DoubleFreeError, InvalidHandleError, PoolEmptyError, TurbomemError

MODES = [pytest.param(True, id="checked"), pytest.param(False, id="unchecked")]


def drain_exact(pool, held=()):
    """Every free object exactly once: available/in_use agree with `held`,
    a drain finds each remaining handle once, then everything goes back."""
    held = set(int(h) for h in held)
    cap = pool.capacity
    assert pool.in_use == len(held), (pool.in_use, len(held))
    assert pool.available == cap - len(held)
    got = []
    while True:
        h = pool.try_get()
        if h < 0:
            break
        got.append(h)
        assert len(got) <= cap
    assert len(got) == len(set(got)), "a handle was handed out twice"
    assert held.isdisjoint(got), "a handed-out handle was still free"
    assert held.union(got) == set(range(cap)), "a handle was lost"
    if got:
        pool.put_bulk(got)
    assert pool.available == cap - len(held)


# ------------------------------------------------------------ the choice ---

@pytest.mark.parametrize("checked", MODES)
def test_mode_is_reported(checked):
    p = tm.Pool(64, 1000, checked=checked, populate=False)
    assert p.checked is checked and p.keeps_stats is False
    st_ = p.stats()
    assert st_["checked"] is checked and st_["per_call_stats"] is False
    p.close()


def test_flags_refuse_non_bools():
    for bad in ("yes", 2, None, 1.0):
        with pytest.raises(TypeError):
            tm.Pool(64, 10, checked=bad)
        with pytest.raises(TypeError):
            tm.Pool(64, 10, stats=bad)


def test_debug_needs_checked(monkeypatch):
    with pytest.raises(ValueError):
        tm.Pool(64, 10, checked=False, debug=True)
    monkeypatch.setenv("TURBOMEM_DEBUG", "1")
    assert tm.Pool(64, 10, checked=False).debug is False  # the switch is for checked pools
    assert tm.Pool(64, 10).debug is True


@pytest.mark.parametrize("checked", MODES)
def test_per_call_stats_are_opt_in(checked):
    quiet = tm.Pool(64, 1000, checked=checked, populate=False)
    loud = tm.Pool(64, 1000, checked=checked, populate=False, stats=True)
    for p in (quiet, loud):
        hs = p.get_bulk(10)
        h = p.get()
        p.put(h)
        p.put_bulk(hs)
        big = p.get_bulk(600)  # beyond the cache: magazines
        assert p.in_use == 600 and p.available == 400
        p.put_bulk(big)
        assert p.in_use == 0 and p.available == 1000
    sq, sl = quiet.stats(), loud.stats()
    assert sq["gets"] == sq["puts"] == sq["cache_hits"] == sq["cache_misses"] == 0
    assert sl["gets"] == sl["puts"] == 611
    assert sl["cache_hits"] >= 2 and sl["cache_misses"] >= 1
    quiet.close()
    loud.close()


def test_unchecked_keeps_no_state_but_python_still_range_checks():
    p = tm.Pool(64, 100, checked=False, populate=False)
    with pytest.raises(TurbomemError):
        p.is_in_use(0)
    for bad in (-1, 100, 2**40):
        with pytest.raises(InvalidHandleError):
            p.put(bad)
    hs = p.get_bulk(5)
    for arr in (np.array([1, 2, 100], np.uint32), np.array([0, 2**32 - 1], np.uint32),
                [3, 4, 1000], np.array([7, -1], np.int64)):
        with pytest.raises(InvalidHandleError) as e:
            p.put_bulk(arr)
        assert e.value.index in (1, 2)
    assert p.in_use == 5  # nothing was returned
    p.put_bulk(hs)
    drain_exact(p)
    p.close()


def test_checked_refuses_double_free_in_every_path():
    p = tm.Pool(64, 1000, checked=True, populate=False)
    hs = p.get_bulk(300)  # magazines
    p.put_bulk(hs[:200])
    with pytest.raises(DoubleFreeError):
        p.put_bulk(hs[150:250])  # 150..199 are free again
    with pytest.raises(DoubleFreeError):
        p.put(int(hs[0]))
    with pytest.raises(DoubleFreeError):
        p.put_bulk(np.concatenate([hs[250:], hs[250:251]]))  # repeated within the bulk
    drain_exact(p, hs[200:])
    p.put_bulk(hs[200:])
    drain_exact(p)
    p.close()


@pytest.mark.parametrize("checked", MODES)
@pytest.mark.parametrize("cache", [0, 1, 7, 256, 512])
@pytest.mark.parametrize("n", [1, 3, 128, 256, 300, 777, 1000])
def test_bulk_sizes_all_or_nothing(checked, cache, n):
    p = tm.Pool(16, 1000, cache_size=cache, checked=checked, populate=False)
    held = []
    while len(held) + n <= 1000:
        got = p.get_bulk(n)
        assert len(got) == n
        held += got.tolist()
    with pytest.raises(PoolEmptyError):
        p.get_bulk(n if len(held) + n > 1000 else 1001)
    drain_exact(p, held)
    p.put_bulk(held[: len(held) // 2])
    p.put_bulk(held[len(held) // 2:])
    drain_exact(p)
    p.close()


# ------------------------------------------------------------ guarantees ---

@pytest.mark.parametrize("checked", MODES)
@pytest.mark.parametrize("cache,bulk", [(1, False), (8, True), (256, False), (256, True), (512, True)])
def test_no_get_fails_while_objects_idle_in_other_caches(checked, cache, bulk):
    cap = 2048
    p = tm.Pool(16, cap, cache_size=cache, checked=checked, populate=False)
    release = threading.Event()
    evs = [threading.Event() for _ in range(3)]
    ts = [threading.Thread(target=park, args=(p, cache, e, release)) for e in evs]
    for t in ts:
        t.start()
    try:
        assert all(e.wait(30) for e in evs)
        assert p.stats()["cached"] >= min(cache, 1) * 3
        if bulk:
            got = p.get_bulk(cap).tolist()
        else:
            got = [p.get() for _ in range(cap)]
        assert len(set(got)) == cap
        assert p.try_get() == -1
        p.put_bulk(got)
    finally:
        release.set()
        for t in ts:
            t.join()
    drain_exact(p)
    p.close()


@pytest.mark.parametrize("checked", MODES)
def test_exiting_threads_return_their_caches(checked):
    p = tm.Pool(16, 3000, cache_size=256, checked=checked, populate=False)

    def work():
        hs = p.get_bulk(200)
        p.put_bulk(hs)
        for _ in range(50):
            p.put(p.get())

    for _ in range(5):
        ts = [threading.Thread(target=work) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    # Every thread is gone: nothing may stay cached.  Thread.join() returns
    # before the pthread's key destructors have run, so allow them a moment.
    deadline = time.monotonic() + 10
    while p.stats()["cached"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.stats()["cached"] == 0
    drain_exact(p)
    p.close()


@pytest.mark.parametrize("checked", MODES)
def test_fork_child_holds_every_free_object_once(checked):
    p = tm.Pool(16, 1000, cache_size=256, checked=checked, populate=False)
    release = threading.Event()
    evs = [threading.Event() for _ in range(3)]
    ts = [threading.Thread(target=park, args=(p, 200, e, release)) for e in evs]
    for t in ts:
        t.start()
    assert all(e.wait(30) for e in evs)
    held = p.get_bulk(100).tolist()

    def child():
        assert p.stats()["cached"] == 0  # the other threads' caches came back
        drain_exact(p, held)
        p.put_bulk(held)
        drain_exact(p)

    try:
        assert in_child(child) == 0
        assert p.in_use == 100
    finally:
        release.set()
        for t in ts:
            t.join()
    p.put_bulk(held)
    drain_exact(p)
    p.close()


def _load(name):
    from turbomem.cybuild import build_and_import
    return build_and_import(name, Path(__file__).resolve().parent.parent / "cy" / f"{name}.pyx")


@pytest.mark.parametrize("checked", MODES)
@pytest.mark.parametrize("cache", [0, 8, 256])
def test_fork_while_threads_churn_nogil(checked, cache):
    """Children forked while two threads are inside nogil bulk calls: each
    child finds every free object exactly once (the prepare handler waits
    until no thread is inside a call)."""
    from cy.tmstress_build import load_stress
    stress = load_stress()
    modes = _load("modes")
    p = tm.Pool(64, 2048, cache_size=cache, checked=checked, populate=False)
    stop = np.zeros(1, np.uint8)
    ts = [threading.Thread(target=stress.bulk_churn_until, args=(p, stop, 300, i + 1)) for i in range(2)]

    def child():
        avail = p.available
        n, dups = modes.drain_all(p, 64)
        assert dups == 0, "duplicate handle in the child"
        assert n == avail, (n, avail)
        assert p.stats()["cached"] <= avail

    bad = fork_during(ts, stop, child, 40)
    assert not bad, bad
    drain_exact(p)
    p.close()


def test_cimport_codes_match_the_core():
    codes = _load("modes").codes()
    assert codes == dict(TM_OK=0, TM_EEMPTY=-1, TM_ERANGE=-2, TM_EDOUBLEFREE=-3, TM_ENOMEM=-4,
                         TM_EINVAL=-5, TM_EPOISON=-6, TM_POOL_POISON=1, TM_POOL_UNCHECKED=2,
                         TM_POOL_STATS=4)


@pytest.mark.parametrize("checked", MODES)
def test_close_never_unmaps_under_a_live_view(checked):
    p = tm.Pool(64, 100, checked=checked, populate=False)
    h = p.get()
    v = p.view(h)
    arr = p.array()
    p.close()
    assert not p.memory_released
    v[0] = 7
    arr[h, 1] = 9
    assert v[0] == 7 and v[1] == 9
    del arr
    assert not p.memory_released
    v.release()
    assert p.memory_released


# ----------------------------------------------------- state machine --------

CAP = 40


class ModeMachine(RuleBasedStateMachine):
    """Model: `held` is the set of handed-out handles.  Unchecked pools only
    get valid returns (their contract); checked pools also get bad ones.

    Which handles a get returns depends on thread timing (an exited thread's
    cache comes back when its pthread ends), so rules draw positions in the
    sorted held set, never handle values: the draws stay reproducible."""

    def _pick(self, data, min_size=0):
        base = sorted(self.held)
        if not base:
            return []
        idx = data.draw(st.lists(st.integers(0, CAP - 1), unique=True, min_size=min_size))
        return sorted({base[i % len(base)] for i in idx})

    checked = True

    def __init__(self):
        super().__init__()
        self.pool = tm.Pool(16, CAP, cache_size=8, populate=False, hugepages="none",
                            checked=self.checked, stats=True)
        self.held: set[int] = set()
        self.gets = self.puts = 0

    @rule()
    def get(self):
        h = self.pool.try_get()
        if len(self.held) == CAP:
            assert h == -1
        else:
            assert 0 <= h < CAP and h not in self.held
            self.held.add(h)
            self.gets += 1

    @rule(n=st.integers(0, CAP + 1))
    def get_bulk(self, n):
        free = CAP - len(self.held)
        try:
            out = self.pool.get_bulk(n)
        except PoolEmptyError:
            assert n > free
            return
        assert n <= free
        got = set(out.tolist())
        assert len(got) == n and self.held.isdisjoint(got)
        self.held |= got
        self.gets += n

    @rule(data=st.data())
    def put(self, data):
        kind = data.draw(st.sampled_from(["held", "range", "any"]))
        pos = data.draw(st.integers(0, CAP + 3))
        if kind == "held" and self.held:
            h = sorted(self.held)[pos % len(self.held)]
        elif kind == "any" and self.checked:
            h = pos % CAP
        else:
            h = CAP + pos % 4
        try:
            self.pool.put(h)
        except DoubleFreeError:
            assert self.checked and h not in self.held
        except InvalidHandleError:
            assert not 0 <= h < CAP
        else:
            assert h in self.held
            self.held.discard(h)
            self.puts += 1

    @rule(data=st.data(), bad=st.sampled_from([None, "range", "free", "dup"]))
    def put_bulk(self, data, bad):
        items = self._pick(data)
        if bad == "range":
            items = items + [CAP + 2]
        elif bad == "free" and self.checked and len(self.held) < CAP:
            items = items + [min(set(range(CAP)) - self.held)]
        elif bad == "dup" and self.checked and items:
            items = items + [items[0]]
        else:
            bad = None
        try:
            self.pool.put_bulk(np.array(items, dtype=np.uint32))
        except (DoubleFreeError, InvalidHandleError):
            assert bad is not None
        else:
            assert bad is None
            self.held -= set(items)
            self.puts += len(items)

    @rule(data=st.data())
    def put_from_other_thread(self, data):
        """Objects returned by another (short-lived) thread land in its cache
        and come back when it exits."""
        items = self._pick(data, min_size=1)
        if not items:
            return
        t = threading.Thread(target=self.pool.put_bulk, args=(np.array(items, dtype=np.uint32),))
        t.start()
        t.join()
        self.held -= set(items)
        self.puts += len(items)

    @invariant()
    def accounting(self):
        assert self.pool.in_use == len(self.held)
        assert self.pool.available == CAP - len(self.held)
        s = self.pool.stats()
        assert s["gets"] == self.gets and s["puts"] == self.puts

    def teardown(self):
        drain_exact(self.pool, self.held)
        self.pool.close()


class CheckedMachine(ModeMachine):
    checked = True


class UncheckedMachine(ModeMachine):
    checked = False


_settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestCheckedMachine = _settings(CheckedMachine).TestCase
TestUncheckedMachine = _settings(UncheckedMachine).TestCase
