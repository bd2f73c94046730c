"""Fixtures shared by every test folder.

This directory is put on sys.path by pytest (rootdir conftest), which is
what makes ``support`` and ``cy.checks`` importable from the subfolders.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import turbomem as tm


def pytest_configure(config):
    # CI's sdist run sets this: the tests must exercise the installed package, not a source tree
    # that happens to be on sys.path.
    if os.environ.get("TURBOMEM_EXPECT_INSTALLED"):
        where = Path(tm.__file__).resolve()
        if "site-packages" not in where.parts:
            raise pytest.UsageError(f"TURBOMEM_EXPECT_INSTALLED is set but turbomem comes from {where}")
    config.addinivalue_line(
        "markers", "pool_args(obj_size, capacity, **kwargs): the Pool the `pool` fixture builds"
    )


@pytest.fixture
def pool(request):
    """A Pool that must get every handle back: the test fails if one leaked.

    Sized by the nearest ``pool_args`` marker (default 2048-byte objects, 512 of them).
    """
    marker = request.node.get_closest_marker("pool_args")
    args, kwargs = (marker.args, marker.kwargs) if marker else ((2048, 512), {})
    p = tm.Pool(*args, **kwargs)
    yield p
    assert p.available == p.capacity, "a handle leaked"
    p.close()


# The 2 MB hugetlb pool is one per machine.  A test that changes nr_hugepages
# (the `hugetlb_lock` fixture, tests/shared) holds this lock alone; every other
# test holds it shared, so that while pages are reserved for one test no other
# test takes them (an anonymous SharedPool with hugepages="auto" would) or reads
# counts that are about to change.  A file lock: pytest -n runs tests in
# several processes (and several suites may run on one machine).
HUGETLB_LOCK_PATH = "/tmp/turbomem-nr_hugepages.lock"


@pytest.fixture
def hugetlb_lock():
    """Hold the hugetlb lock alone for the test (no other test runs meanwhile)."""
    with open(HUGETLB_LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _hugetlb_lock_shared(request):
    if "hugetlb_lock" in request.fixturenames:  # it holds the lock alone
        yield
        return
    with open(HUGETLB_LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield
