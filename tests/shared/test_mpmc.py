"""Pool rings with several producers and consumers in several processes, and
a producer that dies between claiming a cell and publishing it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import struct
import time

import numpy as np

from turbomem import shared as sh



def _fork(fn, *args) -> int:
    """fn(*args) in a forked child (exit 0 if it returns, 1 if it raises); its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _producer(pool, ring, count, tag, finished):
    """Enqueue `count` objects whose payload is (tag, i), in bursts of 1-5; then count itself finished."""
    i = 0
    r = pool.ring(ring)
    while i < count:
        k = min(1 + i % 5, count - i)
        hs = pool.get_bulk(k)
        for j, h in enumerate(hs):
            pool.view(int(h))[:8] = struct.pack("<II", tag, i + j)
        assert r.enqueue_bulk(hs, timeout=30)
        i += k
    with finished.get_lock():
        finished.value += 1


def _consumer(pool, ring, out_ring, finished, producers):
    """Move what arrives to out_ring until every producer finished and the ring is drained."""
    r, out = pool.ring(ring), pool.ring(out_ring)
    while True:
        got = r.dequeue_burst(7, timeout=0.1)
        if got.size:
            assert out.enqueue_bulk(got, timeout=30)
        elif finished.value == producers and not r.handles():
            return


def test_three_producers_two_consumers_in_five_processes_deliver_each_once():
    n, producers = 600, 3
    with sh.SharedPool(16, 4096, rings=2, ring_capacity=64, cache_size=16) as p:
        finished = mp.get_context("fork").Value("i", 0)
        pids = [_fork(_producer, p, 0, n, tag, finished) for tag in range(producers)]
        # two consumers move to ring 1 what they take from ring 0
        pids += [_fork(_consumer, p, 0, 1, finished, producers) for _ in range(2)]
        seen: dict[tuple[int, int], int] = {}
        r1 = p.ring(1)
        while len(seen) < n * producers:
            got = r1.dequeue_burst(64, timeout=30)
            assert got.size, f"stalled at {len(seen)}"
            for h in got:
                key = struct.unpack("<II", bytes(p.view(int(h))[:8]))
                seen[key] = seen.get(key, 0) + 1
            p.put_bulk(got)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert set(seen.values()) == {1}
        assert sorted(seen) == [(t, i) for t in range(producers) for i in range(n)]
        p.recover()
        assert p.audit()["ok"], p.audit()["problems"]
        assert p.available == p.capacity


def _hold_slot_and_die(pool, ready_w):
    h = int(pool.get())
    os.write(ready_w, struct.pack("<ii", pool._slot(), h))
    time.sleep(60)


def test_dead_producers_claimed_cell_is_tombstoned_by_recovery():
    """The state a producer killed between its claim and its publish leaves:
    the next cell claimed in its slot's name, its handle marked as in the ring.
    A consumer stops there (the cell may yet be published), then recovery turns
    the claim into a tombstone and gives the handle back."""
    with sh.SharedPool(16, 64, rings=1, ring_capacity=8, cache_size=0) as p:
        r = p.ring(0)
        before = p.get_bulk(2)
        assert r.enqueue_bulk(before)
        rfd, wfd = os.pipe()
        pid = _fork(_hold_slot_and_die, p, wfd)
        slot, h = struct.unpack("<ii", os.read(rfd, 8))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(rfd)
        os.close(wfd)
        # what the kill left: cell at prod_pos claimed by `slot`, h marked RING(0, slot)
        lay, mm = p._lay, p._m.mm
        ring0 = lay["off_rings"] + 128  # after the ring's futex block
        prod = struct.unpack_from("<I", mm, ring0 + 64)[0]
        size = struct.unpack_from("<I", mm, ring0)[0]
        cell = ring0 + 192 + 8 * (prod & (size - 1))
        assert struct.unpack_from("<Q", mm, cell)[0] == prod << 32 | 0xFFFFFFFF  # free for prod
        struct.pack_into("<Q", mm, cell, prod << 32 | 0x80000000 | slot)
        struct.pack_into("<I", mm, ring0 + 64, prod + 1)
        struct.pack_into("<I", mm, lay["off_owner"] + 4 * h, 3 << 28 | slot)
        assert p.owner(h) == ("ring", 0)
        after = p.get_bulk(2)
        assert r.enqueue_bulk(after)  # behind the claimed cell
        t0 = time.monotonic()
        got = []
        while len(got) < 4 and time.monotonic() - t0 < 10:
            got += r.dequeue_burst(4, timeout=1).tolist()
        assert got == before.tolist() + after.tolist()  # the stall was ended by recovery
        assert p.owner(h) == ("free", -1)  # given back, not delivered
        p.put_bulk(np.array(got, dtype=np.uint32))
        audit = p.audit()
        assert audit["ok"], audit["problems"]
        assert p.available == p.capacity
