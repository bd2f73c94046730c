"""The compiled get()/put() hit path keeps every property of the slow one:
one slot per thread, a fresh slot after fork, exact handle checks, exact
per-process counters, and nothing after close()."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from turbomem import shared as sh
from turbomem.errors import DoubleFreeError, InvalidHandleError, PoolClosedError


def test_each_live_thread_has_its_own_slot():
    with sh.SharedPool(64, 256, cache_size=8) as p:
        barrier = threading.Barrier(3)
        seen = {}

        def work(i):
            hs = [p.get() for _ in range(5)]
            barrier.wait()  # all alive at once
            seen[i] = {p.owner(h)[1] for h in hs}
            for h in hs:
                p.put(h)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        slots = [s.pop() for s in seen.values() if len(s) == 1]
        assert len(slots) == 3 and len(set(slots)) == 3
        assert p.available == 256 and p.audit()["ok"]


def test_fork_child_gets_a_slot_of_its_own():
    with sh.SharedPool(64, 64, cache_size=8) as p:
        h = p.get()
        parent_slot = p.owner(h)[1]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                c = p.get()
                kind, slot = p.owner(c)
                p.put(c)
                st = p.stats()
                code = 0 if (kind == "held" and slot != parent_slot and st["gets"] == 1
                             and st["puts"] == 1) else 2
                os.write(w, f"{slot} {st['gets']} {st['puts']}".encode())
            finally:
                os._exit(code)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        msg = os.read(r, 100).decode()
        os.close(r)
        assert os.waitstatus_to_exitcode(status) == 0, (parent_slot, msg)
        assert p.owner(h) == ("held", parent_slot)  # the parent's slot is still the parent's
        p.put(h)
        p.recover()
        assert p.stats()["gets"] == 1 and p.available == 64 and p.audit()["ok"]


def test_more_pools_than_cached_ways_in_one_thread():
    pools = [sh.SharedPool(64, 16, cache_size=4) for _ in range(20)]
    try:
        for _ in range(3):
            for p in pools:
                h = p.get()
                assert p.owner(h)[0] == "held"
                p.put(h)
        for p in pools:
            assert len(p._v.slots()) == 1 and p.available == 16 and p.stats()["gets"] == 3
    finally:
        for p in pools:
            p.close()


@pytest.mark.parametrize("bad,err", [(True, TypeError), (False, TypeError), (1.0, TypeError), ("1", TypeError),
                                     (None, TypeError), (-1, InvalidHandleError), (64, InvalidHandleError),
                                     (2**32, InvalidHandleError), (2**63, InvalidHandleError),
                                     (2**64 + 1, InvalidHandleError), (-2**70, InvalidHandleError),
                                     (np.bool_(True), TypeError), (np.float64(1), TypeError)])
def test_put_refuses_what_it_always_refused(bad, err):
    with sh.SharedPool(64, 64) as p:
        h = p.get()
        with pytest.raises(err):
            p.put(bad)
        assert p.owner(h) == ("held", p.owner(h)[1]) and p.stats()["puts"] == 0
        p.put(h)


def test_numpy_and_int_subclass_handles_are_accepted():
    class MyInt(int):
        pass

    with sh.SharedPool(64, 64) as p:
        for conv in (np.uint32, np.int64, MyInt, int):
            h = p.get()
            p.put(conv(h))
        with pytest.raises(DoubleFreeError):
            p.put(h)
        assert p.stats()["gets"] == 4 and p.stats()["puts"] == 4 and p.available == 64


def test_counters_exact_across_fast_and_bulk_calls():
    with sh.SharedPool(64, 128, cache_size=8) as p:
        hs = [p.get() for _ in range(50)] + p.get_bulk(20).tolist()
        for h in hs[:30]:
            p.put(h)
        p.put_bulk(hs[30:])
        st = p.stats()
        assert st["gets"] == 70 and st["puts"] == 70 and p.available == 128


def test_closed_pool_refuses_get_and_put():
    p = sh.SharedPool(64, 8)
    h = p.get()
    p.close()
    with pytest.raises(PoolClosedError):
        p.get()
    with pytest.raises(PoolClosedError):
        p.put(h)
