"""Every blocking call sees a pending signal: a real SIGINT sent to a child
blocked in each wait ends it with KeyboardInterrupt within about 100 ms
(asserted with a generous 0.5 s bound on this loaded machine), with or
without a timeout; a handler that raises another exception ends it too.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from support import child_env

SETUP = {
    "dequeue_wait": "r = tm.Ring(4)\ncall = lambda: r.dequeue_wait({timeout})",
    "dequeue_burst_wait": "r = tm.Ring(4)\ncall = lambda: r.dequeue_burst_wait(4, {timeout})",
    "enqueue_wait": "r = tm.Ring(1)\nr.enqueue(1)\ncall = lambda: r.enqueue_wait(2, {timeout})",
    "enqueue_burst_wait": "r = tm.Ring(2)\ncall = lambda: r.enqueue_burst_wait([1, 2, 3], {timeout})",
    "recv": textwrap.dedent("""\
        import socket
        from turbomem.packet import io as net
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        pool = tm.Pool(2048, 64)
        rx = net.BurstReceiver(s, pool, 8)
        call = lambda: rx.recv(timeout={timeout})"""),
}

CHILD = """\
import signal, sys, time
# Python's own Ctrl-C handler even when the test runs in the background
# (a shell starts background jobs with SIGINT ignored, and children inherit it).
signal.signal(signal.SIGINT, signal.default_int_handler)
import turbomem as tm
{setup}
{handler}
print("ready", flush=True)
try:
    call()
except {expected}:
    print("interrupted", flush=True)
    sys.exit(0)
print("returned", flush=True)
sys.exit(1)
"""


def run_child(setup: str, handler: str = "", expected: str = "KeyboardInterrupt",
              sig: int = signal.SIGINT) -> float:
    """Start the child, send ``sig`` once it is waiting; seconds until it reported."""
    code = CHILD.format(setup=setup, handler=handler, expected=expected)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env(), text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(0.3)  # well inside the wait (GIL released, sleeping)
        sent = time.monotonic()
        os.kill(child.pid, sig)
        ready, _, _ = select.select([child.stdout], [], [], 10)
        assert ready, "the child did not react to the signal within 10 s"
        line = child.stdout.readline().strip()
        elapsed = time.monotonic() - sent
        assert line == "interrupted", (line, child.stderr.read())
        assert child.wait(10) == 0
        return elapsed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("timeout", ["None", "30"])
@pytest.mark.parametrize("call", list(SETUP))
def test_sigint_interrupts_every_blocking_call(call, timeout):
    elapsed = run_child(SETUP[call].format(timeout=timeout))
    assert elapsed < 0.5, f"{call}(timeout={timeout}) took {elapsed:.2f} s to see SIGINT"


@pytest.mark.parametrize("call", ["dequeue_wait", "enqueue_burst_wait"])
def test_a_handler_that_raises_ends_the_wait(call):
    handler = ("def boom(signum, frame):\n    raise LookupError('from the handler')\n"
               "signal.signal(signal.SIGUSR1, boom)")
    elapsed = run_child(SETUP[call].format(timeout="None"), handler, "LookupError",
                        signal.SIGUSR1)
    assert elapsed < 0.5


def test_a_handler_that_returns_does_not_end_the_wait():
    code = textwrap.dedent("""\
        import os, signal, threading, time
        import turbomem as tm
        hits = []
        signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
        r = tm.Ring(4)
        threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
        threading.Timer(0.3, lambda: r.enqueue(9)).start()
        assert r.dequeue_wait() == 9 and hits == [1]
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    assert out.stdout.strip() == "ok", out.stderr


def test_interrupted_producer_knows_what_went_in():
    code = textwrap.dedent("""\
        import os, signal, threading
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
        import turbomem as tm
        r = tm.Ring(2)
        threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            r.enqueue_burst_wait([1, 2, 3, 4])
        except KeyboardInterrupt as err:
            print(err.enqueued, len(r))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=child_env(), timeout=30)
    assert out.stdout.split() == ["2", "2"], out.stderr
