"""SharedPool(numa_node=...): bound before the first touch, populated, and the
report says where the pages are (move_pages, the same proof as Pool's)."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import turbomem as tm
from turbomem import _sys, numa
from turbomem import shared as sh
from turbomem.errors import NumaError

HUGE = 2 << 20


def _policy(pool) -> int:
    return _sys.get_mempolicy(pool._v.address() + pool._m.size - 1, _sys.MPOL_F_ADDR)


@pytest.mark.parametrize("node", [0, np.int64(0), np.uint8(0)])
def test_bound_to_node_0_and_every_page_is_there(node):
    with sh.SharedPool(2048, 1000, numa_node=node) as p:
        rep = p.hugepage_report()
        assert rep["numa_node"] == 0 and type(rep["numa_node"]) is int
        assert rep["numa_status"].startswith("bound to node 0 (requested)")
        pages = p._m.size // rep["page_size"]
        where = rep["page_nodes"]
        assert where["method"] == "move_pages", where
        # Populated at creation: every page present, all on node 0.
        assert where["nodes"] == {0: pages} and where["not_present"] == 0
        assert rep["populate"] in ("MADV_POPULATE_WRITE", "touch")
        assert _policy(p) == _sys.MPOL_BIND  # the kernel's word, not ours


def test_default_binds_to_the_calling_threads_node():
    with sh.SharedPool(64, 64) as p:
        rep = p.hugepage_report()
        assert rep["numa_node"] == numa.current_node()
        assert "calling thread's node" in rep["numa_status"]


@pytest.mark.parametrize("bad,err", [(True, TypeError), (np.bool_(False), TypeError), (0.0, TypeError),
                                     ("0", TypeError), (-1, NumaError), (max(numa.node_ids()) + 1, NumaError),
                                     (1 << 40, NumaError)])
def test_bad_nodes_raise_what_pool_raises_before_creating_anything(bad, err):
    name = "test-" + uuid.uuid4().hex[:10]
    with pytest.raises(err) as got:
        sh.SharedPool(64, 16, name=name, numa_node=bad)
    with pytest.raises(err) as pool_got:
        tm.Pool(64, 16, numa_node=bad)
    assert str(got.value) == str(pool_got.value)
    assert not os.path.exists(sh._shm_path(name))


def test_attached_process_sees_where_the_creator_put_the_pages():
    name = "test-" + uuid.uuid4().hex[:10]
    with sh.SharedPool(4096, 256, name=name, numa_node=0) as p:
        try:
            with sh.SharedPool.attach(name) as q:
                rep = q.hugepage_report()
                assert rep["numa_node"] is None and rep["numa_status"].startswith("attached")
                assert rep["page_nodes"]["nodes"] == {0: q._m.size // 4096}
                assert _policy(q) == _sys.MPOL_BIND  # tmpfs keeps the policy for every process
        finally:
            p.unlink()


def test_hugetlb_pool_bound_to_node_0(hugetlb):
    need = sh.pool_layout(2048, 2048, 32, 64, 0, 0, HUGE)["total_size"] // HUGE
    hugetlb.set_free(need)
    with sh.SharedPool(2048, 2048, numa_node=0) as p:
        rep = p.hugepage_report()
        assert rep["hugetlb"] and rep["numa_node"] == 0
        assert rep["page_nodes"]["nodes"] == {0: need} and rep["page_nodes"]["not_present"] == 0
        assert rep["hugetlb_faulted"] == need * HUGE  # populated at creation, not at first touch
