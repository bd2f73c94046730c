"""Fixtures for the shared-memory tests: 2 MB hugetlb pages reserved for one test."""

from __future__ import annotations

import gc
import os
import time

import pytest

from turbomem import procfs

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def _free() -> int:
    pool = procfs.hugetlb_pool()
    return pool.free - pool.reserved


def _write_nr(n: int) -> None:
    with open(NR_HUGEPAGES, "w") as f:
        f.write(str(n))


class HugetlbReservation:
    """``set_free(n)``: make exactly n 2 MB pages free for new mappings (as far as
    this test's own changes go), by raising or lowering nr_hugepages; the test
    is skipped when the kernel will not.  Everything added is taken back at
    the end, without touching pages others added meanwhile."""

    def __init__(self) -> None:
        self.added = 0

    def set_free(self, n: int) -> None:
        total = int(open(NR_HUGEPAGES).read())
        want = max(total + n - _free(), 0)
        if want < total - self.added:  # never take away pages this test did not add
            pytest.skip(f"{_free()} 2 MB hugetlb pages are already free here (others reserved them): "
                        f"cannot make exactly {n} free")
        _write_nr(want)
        self.added += want - total
        deadline = time.monotonic() + 2
        while _free() < n and time.monotonic() < deadline:
            # Pages of a mapping still being torn down (a child's exit, a pool
            # kept by a view until collected) come back shortly: ask again.
            gc.collect()
            time.sleep(0.05)
            total = int(open(NR_HUGEPAGES).read())
            want = total + n - _free()
            _write_nr(want)
            self.added += want - total
        if _free() != n:
            pytest.skip(f"the kernel gave {_free()} free 2 MB hugetlb pages, not the {n} asked for "
                        "(memory too fragmented, or pages in use)")

    def restore(self) -> None:
        if self.added:
            cur = int(open(NR_HUGEPAGES).read())
            _write_nr(max(cur - self.added, 0))
            self.added = 0


@pytest.fixture
def hugetlb(hugetlb_lock):
    """A HugetlbReservation; skips unless root can write nr_hugepages.  Holds
    the hugetlb lock alone (tests/conftest.py): no other test runs meanwhile."""
    if os.geteuid() != 0:
        pytest.skip("reserving hugetlb pages needs root (/proc/sys/vm/nr_hugepages)")
    if procfs.hugetlb_pool().source == "unavailable" or not os.path.exists(NR_HUGEPAGES):
        pytest.skip("this kernel has no 2 MB hugetlb pool")
    res = HugetlbReservation()
    try:
        yield res
    finally:
        res.restore()
