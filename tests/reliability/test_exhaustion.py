"""Exhaustion: empty pools, address-space limits, huge pages that are not there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import turbomem as tm
from cy.checks import assert_accounting
from turbomem import memory
from turbomem.errors import HugePageError, OutOfMemoryError, PoolEmptyError, TurbomemError

REPO = Path(__file__).resolve().parents[2]


def maps_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.parametrize("cache_size", [0, 4, 16])
def test_empty_pool_every_call(cache_size):
    p = tm.Pool(8, 16, cache_size=cache_size, populate=False)
    try:
        held = p.get_bulk(10).tolist()
        held += [p.get() for _ in range(6)]
        with pytest.raises(PoolEmptyError) as info:
            p.get()
        assert isinstance(info.value, MemoryError) and isinstance(info.value, TurbomemError)
        assert p.try_get() == -1
        with pytest.raises(PoolEmptyError):
            p.get_bulk(1)
        assert_accounting(p, held)
        p.put_bulk(held[:3])
        with pytest.raises(PoolEmptyError):
            p.get_bulk(4)  # all or nothing: 3 free, none taken
        assert_accounting(p, held[3:])
        with pytest.raises(PoolEmptyError, match="capacity"):
            p.get_bulk(17)
        assert_accounting(p, held[3:])
        assert len(p.get_bulk(0)) == 0
        assert_accounting(p, held[3:])
    finally:
        p.close()


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))


def test_pool_beyond_rlimit_as_is_memory_error_and_leaks_nothing():
    r = _run("""
        import resource, turbomem as tm
        from turbomem.errors import OutOfMemoryError, TurbomemError
        def maps():
            with open("/proc/self/maps") as f:
                return sum(1 for _ in f)
        small = tm.Pool(64, 1000, populate=False)      # warm everything up first
        small.close()
        limit = 1 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        before = maps()
        for policy in ("auto", "none", "thp"):
            for i in range(20):
                try:
                    tm.Pool(4096, 1 << 20, hugepages=policy)  # 4 GiB > 1 GiB limit
                except OutOfMemoryError as e:
                    assert isinstance(e, MemoryError) and isinstance(e, TurbomemError), type(e)
                except tm.HugePageError:
                    assert policy == "thp"
                else:
                    raise SystemExit("no error")
        assert maps() == before, (maps(), before)
        p = tm.Pool(64, 1000, populate=False)  # still usable afterwards
        assert len(set(p.get_bulk(1000).tolist())) == 1000
        print("OK")
    """)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_populate_beyond_rlimit_as():
    # mapping fits the limit only without populate? Both must be clean errors.
    r = _run("""
        import resource, turbomem as tm
        limit = 512 << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        ok = err = 0
        for n in (1 << 10, 1 << 16, 1 << 18, 1 << 20):
            try:
                p = tm.Pool(4096, n, populate=True)
                p.close(); ok += 1
            except MemoryError:
                err += 1
        print("OK", ok, err)
    """)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def _hugetlb_free() -> int:
    return memory.hugetlb_pages().get("free", 0) if isinstance(memory.hugetlb_pages(), dict) else 0


def test_hugetlb_beyond_reserved_fails_at_creation():
    before = maps_count()
    free_pages = _hugetlb_free()
    want = (free_pages + 8) * 2 * 1024 * 1024  # always more than what is reserved
    with pytest.raises(HugePageError) as info:
        tm.Pool(4096, want // 4096, hugepages="hugetlb")
    assert isinstance(info.value, TurbomemError) and isinstance(info.value, OSError)
    assert "huge" in str(info.value).lower()
    assert maps_count() <= before + 1


def test_hugetlb_failure_in_subprocess_is_not_a_sigbus():
    # populate=False must also fail now, not SIGBUS on first touch later
    r = _run("""
        import turbomem as tm
        from turbomem import memory
        info = memory.hugetlb_pages()
        free = info.get("free", 0) if isinstance(info, dict) else 0
        try:
            p = tm.Pool(4096, (free + 8) * 512, hugepages="hugetlb", populate=False)
        except tm.HugePageError:
            print("OK refused")
        else:
            a = p.array(); a[:] = 1; print("OK touched")
    """)
    assert r.returncode == 0 and "OK" in r.stdout, (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("mode", ["never", "unknown", "unsupported"])
def test_thp_required_when_thp_unavailable(monkeypatch, mode):
    monkeypatch.setattr(memory, "thp_mode", lambda: mode)
    before = maps_count()
    with pytest.raises(HugePageError) as info:
        tm.Pool(64, 1000, hugepages="thp")
    assert mode in str(info.value)
    assert maps_count() <= before + 1
    p = tm.Pool(64, 1000, hugepages="auto", populate=False)  # auto never fails for THP
    try:
        assert_accounting(p, [])
    finally:
        p.close()


def test_failed_creation_leaves_other_pools_intact(monkeypatch):
    p = tm.Pool(16, 100, populate=False)
    try:
        held = p.get_bulk(30).tolist()
        monkeypatch.setattr(memory, "thp_mode", lambda: "never")
        for _ in range(5):
            with pytest.raises(HugePageError):
                tm.Pool(64, 1000, hugepages="thp")
            with pytest.raises(ValueError):
                tm.Pool(64, 0)
        assert_accounting(p, held)
    finally:
        p.close()
