"""Helpers shared by tests in several folders (importable because tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import turbomem

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the turbomem under test is imported from: this checkout (editable install) or site-packages
# (CI's sdist install). Child processes get this directory, never the checkout, so that a source
# tree without compiled modules cannot shadow the installed package.
PACKAGE_PARENT = Path(turbomem.__file__).resolve().parent.parent


def child_env(**extra: str) -> dict:
    """os.environ for a child Python that imports the same turbomem as this process."""
    path = str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=path, **extra)


def maps_count() -> int:
    """Mappings in /proc/self/maps, read directly (not through turbomem) for leak checks."""
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


def in_child(fn) -> int:
    """Run fn() in a forked child; its exit status (0 ok, 1 assertion, 2 other)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except AssertionError:
            import traceback
            traceback.print_exc()
            code = 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def park(pool, k, parked, release, out=None):
    """Fill this thread's cache with k objects (get k, put them back), record
    the pool's cached count in `out` if given, set `parked`, then block on
    `release` (a thread idle in no pool call, its cache full)."""
    hs = [pool.get() for _ in range(k)]
    for h in hs:
        pool.put(h)
    if out is not None:
        out.append(pool.stats()["cached"])
    parked.set()
    release.wait(30)


def fork_during(threads, stop, child, times):
    """Start `threads` (they run until stop[0] is set), fork `times` children
    that each run child() (in_child), then stop and join the threads.  Returns
    (fork number, exit status) for every child that failed."""
    for t in threads:
        t.start()
    bad = []
    try:
        for i in range(times):
            rc = in_child(child)
            if rc:
                bad.append((i, rc))
    finally:
        stop[0] = 1
        for t in threads:
            t.join()
    return bad
