"""Liveness of a slot's owner: pidfd where the kernel has it, kill(pid, 0)
otherwise; a start-time guard against pid reuse in both."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from turbomem import _sys, procfs
from turbomem import shared as sh


def _have_pidfd() -> bool:
    try:
        os.close(_sys.pidfd_open(os.getpid()))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            return False
        raise
    return True


needs_pidfd = pytest.mark.skipif(not _have_pidfd(), reason="this kernel has no pidfd_open (Linux < 5.3)")


def _child(action):
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)
    while procfs.process_state(pid) is None:
        time.sleep(0.001)
    return pid, procfs.process_state(pid).start_time


def _wait_state(pid, letter):
    deadline = time.monotonic() + 10
    while (procfs.process_state(pid) or procfs.ProcessState("gone", 0)).state != letter:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def _run_checks(expect_how):
    me = procfs.process_state("self").start_time
    alive, how = sh._liveness(os.getpid(), me)
    assert alive and how == f"{expect_how}: running"
    pid, start = _child(lambda: time.sleep(30))
    try:
        alive, how = sh._liveness(pid, start)
        assert alive and how == f"{expect_how}: running"
        # Same pid, another start time: a process that reused the owner's pid.
        alive, how = sh._liveness(pid, start + 1)
        assert not alive and how.startswith(f"{expect_how}: pid reused")
        assert sh._liveness(pid, 0)[0]  # a slot still being claimed: judged by the pid
        os.kill(pid, signal.SIGKILL)
        _wait_state(pid, "Z")
        alive, how = sh._liveness(pid, start)  # a zombie is dead
        assert not alive and how == f"{expect_how}: exited"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    alive, how = sh._liveness(pid, start)  # reaped: gone
    assert not alive and how in (f"{expect_how}: no such process", f"{expect_how}: exited")
    assert sh._liveness(0, 0) == (False, "no pid") and not sh._liveness(-5, 0)[0]


@needs_pidfd
def test_pidfd_liveness():
    _run_checks("pidfd")


def test_kill_fallback_where_pidfd_open_is_missing(monkeypatch):
    """The fallback path, as on a kernel without pidfd_open: every answer
    from the kernel is real, only pidfd_open reports ENOSYS."""
    def no_pidfd(pid):
        raise OSError(errno.ENOSYS, "pidfd_open: Function not implemented")
    monkeypatch.setattr(sh._sys, "pidfd_open", no_pidfd)
    _run_checks("kill(0)")


@needs_pidfd
def test_pidfd_pins_the_process_it_was_opened_on():
    """What the liveness check relies on: a pidfd opened on a process says
    'exited' after it dies, even while its pid could name someone else."""
    pid, _start = _child(lambda: time.sleep(30))
    fd = _sys.pidfd_open(pid)
    try:
        assert not _sys.pidfd_exited(fd)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert _sys.pidfd_exited(fd)
    finally:
        os.close(fd)
    with pytest.raises(ProcessLookupError):
        _sys.pidfd_open(pid)


@needs_pidfd
def test_recover_uses_liveness_and_spares_a_live_owner_with_a_reused_look():
    """A live process's slot is left alone; a slot whose recorded start time
    does not match the process now at that pid is recovered."""
    with sh.SharedPool(64, 8, cache_size=0) as p:
        pid, start = _child(lambda: (p.get_bulk(3), time.sleep(30)))
        try:
            deadline = time.monotonic() + 10
            while sum(p.census()["held"].values()) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            assert p.recover()["objects"] == 0  # alive: nothing taken from it
            (s,) = [s for s, spid, *_ in p._v.slots() if spid == pid]
            me, me_start = sh._me()
            assert p._v.recover(s, pid, start + 1, 0, me, me_start) == -1  # the C side re-checks the start time too
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert p.recover()["objects"] == 3 and p.available == 8


def test_slot_of_a_dead_owner_whose_pid_was_reused_is_recovered():
    """The recorded owner 'died' and its pid now names a live process (here:
    a live child, the slot faked with another start time): recover() must
    take the slot back, and must leave the live child's own slot alone."""
    with sh.SharedPool(64, 8, cache_size=0) as p:
        pid, start = _child(lambda: time.sleep(30))
        try:
            ghost = p._v.claim_slot(pid, pid, start + 7)  # "the previous owner of this pid"
            real = p._v.claim_slot(pid, pid, start)       # the process that has the pid now
            assert ghost >= 0 and real >= 0
            held = [p._v.get(ghost), p._v.get(ghost), p._v.get(real)]
            assert all(h >= 0 for h in held)
            res = p.recover()
            assert [(r["slot"], r["objects"]) for r in res["slots"]] == [(ghost, 2)]
            assert p.owner(held[2]) == ("held", real)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert p.recover()["objects"] == 1 and p.available == 8 and p.audit()["ok"]
