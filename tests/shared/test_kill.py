"""SIGKILL at random points during churn; after recovery every object is
accounted for exactly once.  (scripts/shared_kill_soak.py runs 10,000.)"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from turbomem import shared as sh

from .helpers import churn

KILLS = int(os.environ.get("TURBOMEM_KILLS", "300"))


def _spawn(pool, seed, ring_in, ring_out):
    pid = os.fork()
    if pid == 0:
        try:
            churn(pool, seed, ring_in, ring_out)
        finally:
            os._exit(0)
    return pid


def kill_run(kills: int, seed: int = 1, capacity: int = 512, workers: int = 4) -> dict:
    rnd = random.Random(seed)
    pool = sh.SharedPool(64, capacity, rings=2, ring_capacity=64, cache_size=16, max_slots=64)
    try:
        # worker i produces on ring i % 2 and consumes ring (i + 1) % 2: every
        # ring has several producers and consumers, any of which may be killed
        pids = [_spawn(pool, rnd.random(), (i + 1) % 2, i % 2) for i in range(workers)]
        recovered = 0
        for k in range(kills):
            time.sleep(rnd.random() * 0.002)
            i = rnd.randrange(workers)
            os.kill(pids[i], signal.SIGKILL)
            os.waitpid(pids[i], 0)
            if rnd.random() < 0.5:  # else a churner's recover() (or its short get) does it
                recovered += pool.recover()["objects"]
            audit_live = pool.census()  # readable while the others run
            assert sum(audit_live["held"].values()) <= capacity
            pids[i] = _spawn(pool, rnd.random(), (i + 1) % 2, i % 2)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        pool.recover()
        audit = pool.audit()
        return {"audit": audit, "recovered": recovered}
    finally:
        pool.close()


def test_random_sigkills_lose_nothing():
    res = kill_run(KILLS)
    audit = res["audit"]
    assert audit["ok"], audit["problems"]
    c = audit["census"]
    # after every process is gone and recovered, only the free array and the
    # rings hold objects, and together they hold all of them, once each
    assert c["held"] == {} and c["cached"] == {}
    assert c["free"] + audit["in_rings"] == 512
    assert res["recovered"] > 0
