"""SharedPool on memfd MFD_HUGETLB pages, for real: the tests reserve 2 MB
pages themselves (root), check smaps, share the pool with other processes,
and give the pages back (tests/shared/conftest.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import pytest

from turbomem import procfs
from turbomem import shared as sh
from turbomem.errors import HugePageError

from .helpers import hugetlb_child

HUGE = 2 << 20


def _pages_needed(obj_size, capacity, **kw):
    lay = sh.pool_layout(capacity, obj_size, kw.get("cache_size", min(32, capacity)), kw.get("max_slots", 64),
                         kw.get("rings", 0), kw.get("ring_capacity", 0), HUGE)
    assert lay["total_size"] % HUGE == 0
    return lay["total_size"] // HUGE


def _vmas(pool):
    addr = pool._v.address()
    return procfs.mappings_for(addr, addr + pool._m.size)


# Sizes around the 2 MB edges: objects ending just below, at, and just past a
# page boundary, and a pool whose control area alone is most of a page.
SIZES = [(2048, 100), (2048, 1000), (64, 32700), (4096, 511), (4096, 512), (1 << 20, 3), (8, 150_000)]


@pytest.mark.parametrize("obj_size,capacity", SIZES)
def test_hugetlb_pool_gets_exactly_the_pages_it_needs(hugetlb, obj_size, capacity):
    need = _pages_needed(obj_size, capacity)
    hugetlb.set_free(need)  # exactly enough: a rounding error either way shows
    free_before = procfs.hugetlb_pool().free
    with sh.SharedPool(obj_size, capacity) as p:
        rep = p.hugepage_report()
        assert rep["hugetlb"] and rep["page_size"] == HUGE, rep
        assert "MFD_HUGETLB" in rep["backing"] and "MFD_HUGETLB" in rep["reason"]
        assert f"{need} needed" in rep["reason"] and rep["requested"] == "auto"
        assert rep["size"] == need * HUGE == os.fstat(p.fd).st_size and rep["hugetlb_pages"] == need
        vmas = _vmas(p)  # the proof, straight from smaps
        assert vmas and all("ht" in v.vmflags and v.fields["KernelPageSize"] == HUGE for v in vmas)
        assert sum(v.size for v in vmas) == need * HUGE
        # The last object's last byte is inside the mapping and writable (a
        # short ftruncate or mmap would SIGBUS or segfault here).
        last = capacity - 1
        p.objects()[last, obj_size - 1] = 0xAB
        p.view(0)[0] = 0xCD
        hs = p.get_bulk(capacity)
        assert sorted(hs.tolist()) == list(range(capacity))
        p.put_bulk(hs)
        assert p.audit()["ok"]
        rep = p.hugepage_report()
        assert rep["hugetlb_faulted"] > 0 and rep["huge_bytes"] == need * HUGE
        assert procfs.hugetlb_pool().free < free_before  # the pages really came from the pool
    assert procfs.hugetlb_pool().free == free_before  # and went back on close


def test_one_page_short_falls_back_or_raises(hugetlb):
    need = _pages_needed(2048, 2000)
    assert need >= 2
    hugetlb.set_free(need - 1)
    with sh.SharedPool(2048, 2000) as p:  # auto: 4 KB pages, and it says why
        rep = p.hugepage_report()
        assert not rep["hugetlb"] and rep["page_size"] == 4096
        assert f"{need - 1} free 2 MB hugetlb pages, {need} needed" in rep["reason"]
    with pytest.raises(HugePageError, match="nr_hugepages"):
        sh.SharedPool(2048, 2000, hugepages="hugetlb")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_hugetlb_pool_shared_with_another_process(hugetlb, method):
    """The child gets the pool by pickle (spawn: the fd is duplicated into it;
    fork: inherited) and through a Queue (the resource sharer passes the fd
    over a socket), checks its own smaps, and writes where the parent reads."""
    hugetlb.set_free(_pages_needed(2048, 64, rings=1, ring_capacity=16))
    ctx = mp.get_context(method)
    with sh.SharedPool(2048, 64, rings=1, ring_capacity=16) as p:
        assert p.hugepage_report()["hugetlb"]
        q, out = ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=hugetlb_child, args=(p, q, out))
        proc.start()
        q.put(p)
        hs = p.get_bulk(2)
        for i, h in enumerate(hs):
            p.view(h)[:8] = (0x1111 * (i + 1)).to_bytes(8, "little")
        assert p.ring(0).enqueue_bulk(hs)
        res = out.get(timeout=60)
        proc.join(30)
        assert proc.exitcode == 0, res
        assert res["arg"]["hugetlb"] and res["arg"]["page_size"] == HUGE and res["arg"]["smaps_ht"]
        assert res["queue"]["hugetlb"] and res["queue"]["smaps_ht"]
        assert res["read"] == [0x1111, 0x2222]
        for h in hs:  # the child's writes, seen here: one memory, no copy
            assert int.from_bytes(p.view(h)[:8], "little") == 0x5A5A
        p.recover()
        assert p.available == 64 and p.audit()["ok"]


def test_named_pool_never_hugetlb_and_says_why(hugetlb):
    hugetlb.set_free(_pages_needed(2048, 64) + 1)  # pages are there: the name is the reason
    name = "test-" + uuid.uuid4().hex[:10]
    with sh.SharedPool(2048, 64, name=name) as p:
        try:
            rep = p.hugepage_report()
            assert not rep["hugetlb"] and rep["page_size"] == 4096 and rep["backing"] == "/dev/shm file"
            assert "/dev/shm (tmpfs)" in rep["reason"] and "memfd has no name" in rep["reason"]
            with sh.SharedPool.attach(name) as q:
                assert not q.hugepage_report()["hugetlb"]
        finally:
            p.unlink()
    with pytest.raises(HugePageError, match="name=None"):
        sh.SharedPool(2048, 64, name=name, hugepages="hugetlb")
    assert not os.path.exists(sh._shm_path(name))  # refused before creating the file


def test_hugetlb_requested_without_pages_raises_before_mapping(hugetlb_lock):
    pool = procfs.hugetlb_pool()
    need = _pages_needed(2048, 4096)
    if pool.free - pool.reserved >= need:
        pytest.skip(f"{pool.free - pool.reserved} hugetlb pages are free here: the refusal cannot be provoked")
    with pytest.raises(HugePageError, match=r"echo \d+ > /proc/sys/vm/nr_hugepages"):
        sh.SharedPool(2048, 4096, hugepages="hugetlb")
    with pytest.raises(HugePageError, match="name=None"):
        sh.SharedPool(2048, 16, name="test-" + uuid.uuid4().hex[:10], hugepages="hugetlb")


def test_thp_requested_where_shmem_thp_is_off_raises():
    mode = procfs.shmem_thp_mode()
    if mode in ("always", "within_size", "advise", "force"):
        with sh.SharedPool(2048, 16, hugepages="thp") as p:
            assert "hugepages='thp'" in p.hugepage_report()["reason"]
        return
    with pytest.raises(HugePageError, match="shmem_enabled"):
        sh.SharedPool(2048, 16, hugepages="thp")
