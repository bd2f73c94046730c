"""Another process writing nonsense into the control area must not crash us:
every index read from the mapping is bounds-checked.  Each case runs in a
child process so that a crash shows up as a signal, not as a dead test run."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest

from turbomem import shared as sh
from turbomem.errors import TurbomemError


def _scribble_and_use(seed: int) -> None:
    rnd = random.Random(seed)
    p = sh.SharedPool(64, 128, rings=2, ring_capacity=16, cache_size=8, max_slots=8)
    held = [int(h) for h in p.get_bulk(20)]
    p.ring(0).enqueue_bulk(held[:5])
    lay = p._lay
    mm = p._m.mm
    start = lay["off_ctl"]  # all of it: the depot heads, magazines, owner words, slots, caches, rings
    end = lay["off_objects"]
    for _ in range(rnd.choice([1, 10, 200, 5000])):
        off = rnd.randrange(start, end - 4)
        mm[off:off + 4] = rnd.getrandbits(32).to_bytes(4, "little")
    ops = [lambda: p.get(), lambda: p.get_bulk(rnd.randint(1, 40)), lambda: p.put(rnd.choice(held)),
           lambda: p.put_bulk(held[5:9]), lambda: p.ring(0).dequeue_burst(8), lambda: p.ring(1).enqueue(held[10]),
           lambda: p.ring(1).dequeue_burst(4), lambda: p.census(), lambda: p.audit(), lambda: p.recover(),
           lambda: p.stats(), lambda: p.ring(0).handles(), lambda: len(p.ring(1))]
    for _ in range(300):
        try:
            rnd.choice(ops)()
        except (TurbomemError, ValueError, MemoryError, IndexError):
            pass


def _scribble_ring(seed: int) -> None:
    rnd = random.Random(seed)
    r = sh.SharedRing(16)
    r.put_bulk(range(5))
    for _ in range(50):  # anywhere in the ring's control block, geometry and counters
        o = rnd.randrange(sh.HEADER_SIZE, sh.HEADER_SIZE + 128 + 256)
        r._m.mm[o:o + 4] = rnd.getrandbits(32).to_bytes(4, "little")
        for fn in (lambda: r.get_burst(8), lambda: r.put_bulk([1, 2]), lambda: len(r)):
            try:
                fn()
            except (TurbomemError, ValueError):
                pass


@pytest.mark.parametrize("seed", range(12))
def test_scribbled_pool_control_area_never_crashes(seed):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(60)  # a hang would fail the test (SIGALRM), not block the suite
            _scribble_and_use(seed)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status), f"crashed with signal {os.WTERMSIG(status)}"
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("seed", range(6))
def test_scribbled_ring_never_crashes(seed):
    """A scribbled multi-producer head/tail can leave ring.h's publish step
    waiting for a predecessor that does not exist (the same as a producer
    killed between reserve and publish, see docs/shared.md): a hang of that
    side is allowed and ended by an alarm; a crash is not."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(5)
            _scribble_ring(seed)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGALRM, f"crashed with signal {os.WTERMSIG(status)}"
    else:
        assert os.waitstatus_to_exitcode(status) == 0


def test_scribbled_ring_geometry_is_reported():
    with sh.SharedRing(16) as r:
        r._m.mm[sh.HEADER_SIZE + 128:sh.HEADER_SIZE + 132] = (1 << 20).to_bytes(4, "little")  # ring.h size
        with pytest.raises(ValueError, match="geometry"):
            r.get()
