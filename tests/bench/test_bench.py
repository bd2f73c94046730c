"""Builds the benchmark harnesses and runs tiny configurations (seconds).

No speed assertions: only that the output is well formed and rates positive.
The DPDK half is skipped when pkg-config cannot find libdpdk.
"""

import json
import subprocess

import pytest

np = pytest.importorskip("numpy")

from turbomem.bench import _paths, core, hugepages, python_suite  # noqa: E402

RESULT_KEYS = {"type", "impl", "driver", "cache", "bulk", "n_keep", "threads", "rep", "objects", "seconds",
               "rate_persec", "ns_per_obj"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TURBOMEM_CACHE_DIR", str(tmp_path / "cache"))


def test_include_dir_has_pool_h():
    assert (_paths.include_dir() / "turbomem" / "pool.h").is_file()


def _check_results(out, impls):
    assert out["meta"]["type"] == "meta"
    assert not out["garbage"], out["garbage"]
    assert not out["errors"], out["errors"]
    rs = out["results"]
    assert rs
    for r in rs:
        assert RESULT_KEYS <= set(r), r
        assert r["objects"] > 0 and r["seconds"] > 0
        assert r["rate_persec"] > 0 and r["ns_per_obj"] > 0
        assert abs(r["rate_persec"] * r["ns_per_obj"] - 1e9) < 1e9 * 1e-3
    assert {(r["impl"], r["driver"]) for r in rs} == impls
    # every configuration x every rep
    per = {}
    for r in rs:
        per.setdefault((r["impl"], r["driver"], r["cache"], r["bulk"], r["n_keep"], r["threads"]), []).append(r["rep"])
    assert all(sorted(v) == list(range(core.SMOKE["reps"])) for v in per.values())
    return rs


def test_harness_without_dpdk():
    b = core.compile_harness(want_dpdk=False)
    assert b.error is None and b.path and not b.with_dpdk
    assert b.dpdk_skipped == "not requested"
    out = core.run_harness(b, dict(core.SMOKE, threads="1,all"))
    assert out["returncode"] == 0, out["stderr"]
    _check_results(out, {("turbomem", m) for m, _pre, _x in core.MODES})
    assert out["meta"]["with_dpdk"] is False


def test_harness_rejects_bad_arguments():
    b = core.compile_harness(want_dpdk=False)
    r = subprocess.run([b.path, "--bulks", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "bad argument" in r.stderr


def test_harness_plan_skips_n_keep_below_bulk():
    b = core.compile_harness(want_dpdk=False)
    r = subprocess.run([b.path, "--list", "--impls", "tm", "--bulks", "1,256", "--keeps", "bulk,128",
                        "--caches", "0", "--threads", "1"], capture_output=True, text=True)
    plan = [json.loads(l) for l in r.stdout.splitlines() if '"plan"' in l]
    assert sorted((p["bulk"], p["n_keep"]) for p in plan) == [(1, 1), (1, 128), (256, 256)]


def test_harness_with_dpdk():
    cflags, libs, why = core.dpdk_flags()
    if why:
        pytest.skip("DPDK comparison skipped: %s" % why)
    b = core.compile_harness(want_dpdk=True)
    assert b.error is None and b.with_dpdk, b.dpdk_skipped
    out = core.run_harness(b, core.SMOKE)
    if out["returncode"] == 3:
        pytest.skip("DPDK EAL cannot start here: %s" % out["stderr"][-300:])
    assert out["returncode"] == 0, out["stderr"][-2000:]
    rs = _check_results(out, {("turbomem", m) for m, _pre, _x in core.MODES} | {("dpdk", d) for d in core.DRIVERS})
    rows = core.build_rows(rs)
    assert rows and all(r.get(x + "ring_mp_mc") for r in rows for _m, _pre, x in core.MODES)


def test_core_suite_smoke_no_dpdk():
    res = core.run(params=core.SMOKE, want_dpdk=False)
    assert res["skipped"] is None
    assert any("DPDK comparison skipped" in n for n in res["notes"])
    assert res["rows"] and all(r[pre + "_mops"] > 0 for r in res["rows"] for _m, pre, _x in core.MODES)
    assert all(g["met"] is None for g in res["goals"])


def test_chase_helpers():
    lib = hugepages.chase_lib()
    stride, n = 256, 64
    buf = np.zeros(n * stride, dtype=np.uint8)
    perm = np.random.default_rng(1).permutation(n).astype(np.uint32)
    start = lib.tmb_link(buf.ctypes.data, stride, perm.ctypes.data, n)
    assert start // stride == perm[0]
    # a single cycle of length n: n steps come back to the start, fewer do not
    assert lib.tmb_chase(buf.ctypes.data, start, n) == start
    assert lib.tmb_chase(buf.ctypes.data, start, n - 1) != start
    lib.tmb_write(buf.ctypes.data, buf.nbytes, 7)
    assert (buf == 7).all()
    lib.tmb_touch(buf.ctypes.data, buf.nbytes, 4096)
    assert buf[0] == 0


def test_hugepages_suite_smoke():
    res = hugepages.run(params=hugepages.SMOKE)
    assert res["skipped"] is None
    raw_rows = [r for r in res["rows"] if r["kind"] == "raw"]
    assert len(raw_rows) == 2
    for r in res["rows"]:
        assert r["create_ms"] > 0 and r["chase_ns"] > 0 and r["write_gbs"] > 0


def test_python_suite_smoke():
    res = python_suite.run(params=python_suite.SMOKE)
    names = {r["impl"] for r in res["rows"]}
    assert {"deque free list", "queue.SimpleQueue", "list + threading.Lock", "queue.Queue"} <= names
    assert all(r["ns"] > 0 for r in res["rows"])
    Pool, why = python_suite.load_pool_class()
    if Pool is None:
        assert any("not importable" in n for n in res["notes"])
    else:
        assert "turbomem Pool" in names
