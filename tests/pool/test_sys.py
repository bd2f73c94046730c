"""The ctypes layer: results, and errors that carry errno and say what was attempted."""

from __future__ import annotations

import errno
import platform

import pytest

from turbomem import _sys

RW = _sys.PROT_READ | _sys.PROT_WRITE
ANON = _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS


@pytest.fixture
def mapping():
    length = 4 * 1024 * 1024
    addr = _sys.mmap(length, RW, ANON)
    yield addr, length
    _sys.munmap(addr, length)


def test_constants_match_linux_headers():
    assert _sys.MADV_HUGEPAGE == 14
    assert _sys.MADV_NOHUGEPAGE == 15
    assert _sys.MADV_POPULATE_WRITE == 23
    assert _sys.MADV_COLLAPSE == 25
    assert _sys.MPOL_BIND == 2
    assert _sys.MAP_HUGE_2MB == 21 << 26
    assert _sys.MAP_FAILED == 2**64 - 1 or _sys.MAP_FAILED == 2**32 - 1


def test_syscall_numbers_for_this_machine():
    if platform.machine() == "x86_64":
        assert _sys.SYSCALL_NUMBERS["x86_64"] == {"mbind": 237, "get_mempolicy": 239, "move_pages": 279, "getcpu": 309}
    assert _sys.SYSCALL_NUMBERS["aarch64"]["mbind"] == 235


def test_mmap_returns_page_aligned_writable_memory(mapping):
    addr, length = mapping
    assert addr % _sys.PAGE_SIZE == 0
    _sys.madvise(addr, length, _sys.MADV_POPULATE_WRITE, advice_name="MADV_POPULATE_WRITE")


def test_mmap_failure_is_oserror_with_errno_and_size():
    with pytest.raises(OSError) as info:
        _sys.mmap(1 << 60, RW, ANON)
    assert info.value.errno == errno.ENOMEM
    assert "mmap(1152921504606846976 bytes" in str(info.value)
    assert "Cannot allocate memory" in str(info.value)


def test_munmap_of_misaligned_address_names_the_range():
    with pytest.raises(OSError) as info:
        _sys.munmap(0x1001, 4096)
    assert info.value.errno == errno.EINVAL
    assert "munmap(0x1001+4096)" in str(info.value)


def test_madvise_error_names_the_advice(mapping):
    addr, length = mapping
    with pytest.raises(OSError) as info:
        _sys.madvise(addr + 1, length, _sys.MADV_HUGEPAGE, advice_name="MADV_HUGEPAGE")
    assert info.value.errno == errno.EINVAL
    assert str(info.value).startswith(f"[Errno {errno.EINVAL}] madvise(MADV_HUGEPAGE) on {addr + 1:#x}+{length}: ")


def test_mbind_to_missing_node_raises_with_node_in_message(mapping):
    addr, length = mapping
    with pytest.raises(OSError) as info:
        _sys.mbind(addr, length, _sys.MPOL_BIND, [63])
    # EINVAL on a real kernel; EPERM/ENOSYS where seccomp blocks mbind.
    assert info.value.errno in (errno.EINVAL, errno.EPERM, errno.ENOSYS)
    assert f"mbind(MPOL_BIND, node 63) on {addr:#x}+{length}" in str(info.value)


def test_mbind_then_query_pages_and_node(mapping):
    addr, length = mapping
    try:
        _sys.mbind(addr, length, _sys.MPOL_BIND, [0])
    except OSError as exc:
        pytest.skip(f"mbind refused here: {exc}")
    _sys.madvise(addr, length, _sys.MADV_POPULATE_WRITE)
    assert _sys.node_of_address(addr) == 0
    statuses = _sys.move_pages_query([addr, addr + _sys.PAGE_SIZE])
    assert statuses == [0, 0]


def test_move_pages_reports_untouched_pages_as_enoent(mapping):
    addr, _ = mapping
    try:
        statuses = _sys.move_pages_query([addr])
    except OSError as exc:
        pytest.skip(f"move_pages refused here: {exc}")
    assert statuses == [-errno.ENOENT]


def test_getcpu_agrees_with_affinity():
    cpu, node = _sys.getcpu()
    allowed = _sys.sched_getaffinity()
    assert cpu in allowed
    assert node >= 0
    assert _sys.sched_getcpu() in allowed


def test_sched_setaffinity_error_names_cpus():
    with pytest.raises(OSError) as info:
        _sys.sched_setaffinity({100_000})
    assert info.value.errno == errno.EINVAL
    assert "sched_setaffinity(pid 0, cpus [100000])" in str(info.value)


def test_errno_name():
    assert _sys.errno_name(errno.EPERM) == "EPERM"
    assert _sys.errno_name(99999) == "errno 99999"
