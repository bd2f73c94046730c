"""The turbomem DPDK mempool driver (dpdk/): built against the system DPDK,
then DPDK's own mbuf_autotest and our mempool_autotest-shaped C test run with
it under EAL --no-huge --no-pci.  Skipped, with the reason, where DPDK (or
dpdk-test) is not installed.  Also: the dpdk bench suite's parsers on canned
testpmd output and smaps text."""

import os
import shutil
import subprocess

import pytest

from turbomem.bench import dpdk_suite

EAL = ["--no-huge", "--no-pci", "--no-shconf", "-m", "256", "--lcores=(0-3)@(0-1)", "--log-level=lib.eal:warning"]


def _thp_enabled():
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()


@pytest.fixture(scope="module")
def built():
    if dpdk_suite.dpdk_dir() is None:
        pytest.skip("dpdk/ sources not in this checkout")
    if shutil.which("pkg-config") is None or subprocess.run(
            ["pkg-config", "--exists", "libdpdk"]).returncode != 0:
        pytest.skip("libdpdk not installed (apt install libdpdk-dev)")
    out, why = dpdk_suite.build()
    assert out is not None, why  # DPDK is here: a failed build is a failure, not a skip
    return out


def _eal(prefix):
    return EAL + ["--file-prefix", "tmtest%d%s" % (os.getpid(), prefix)]


def _run(cmd, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("tm_cache", [None, "64"])
def test_mempool_autotest_shape(built, tm_cache):
    """Our C test: get/put, full/empty, bulks, 4 lcores + a non-EAL thread,
    exact counts, refused foreign pointers, huge page coverage of the region."""
    r = _run([str(built / "test_turbomem_mempool")] + _eal("c%s" % tm_cache),
             env={"TURBOMEM_DPDK_CACHE": tm_cache} if tm_cache else None)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "PASSED: 0 failure(s)" in out
    assert "non-EAL thread" in out
    assert "turbomem: pool tm_test_cache0" in out  # the driver logged its region


def test_mbuf_autotest_with_turbomem(built):
    """DPDK's own mbuf_autotest, every mbuf pool made through --mbuf-pool-ops-name turbomem."""
    exe = shutil.which("dpdk-test")
    if exe is None:
        pytest.skip("dpdk-test not installed (apt install dpdk-test)")
    r = _run([exe] + _eal("m") + ["-d", str(built / "librte_mempool_turbomem.so"),
                                  "--mbuf-pool-ops-name", "turbomem"], env={"DPDK_TEST": "mbuf_autotest"})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "Test OK" in out
    assert "turbomem: pool test_pktmbuf_pool" in out  # the test's pools really were ours


def test_driver_region_is_all_huge_pages(built):
    """With THP madvise/always the driver's region is 100% huge pages (smaps)."""
    thp = _thp_enabled()
    if thp not in ("madvise", "always"):
        pytest.skip("THP is %s: the driver keeps small pages (and says so)" % thp)
    exe = shutil.which("dpdk-test")
    if exe is None:
        pytest.skip("dpdk-test not installed")
    r = _run([exe] + _eal("h") + ["-d", str(built / "librte_mempool_turbomem.so"),
                                  "--mbuf-pool-ops-name", "turbomem"], env={"DPDK_TEST": "mbuf_autotest"})
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("turbomem: pool ")]
    assert lines
    for l in lines:
        assert "(100.0%)" in l, l


# ---- the bench suite's parsers, on canned text --------------------------------------

STATS = """testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 100        RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  3
  TX-packets: 90         TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 100        RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 95         TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
testpmd> show port stats all

  ######################## NIC statistics for port 0  ########################
  RX-packets: 5000       RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  3
  TX-packets: 4990       TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:      1500000          Rx-bps:            0
  Tx-pps:      1400000          Tx-bps:            0
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 5000       RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 4995       TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:      1500000          Rx-bps:            0
  Tx-pps:      1300000          Tx-bps:            0
  ############################################################################
"""


def test_parse_port_stats_two_shows():
    shows = dpdk_suite.parse_port_stats(STATS)
    assert len(shows) == 2
    assert shows[0][0]["tx_pps"] == 0 and shows[0][0]["rx_nombuf"] == 3
    assert shows[1][0]["tx_pps"] == 1400000 and shows[1][1]["tx_pps"] == 1300000
    assert shows[1][1]["tx_packets"] - shows[0][1]["tx_packets"] == 4900


def test_pool_ranges_prefers_the_driver_region():
    text = ("Zone 3: name:<MP_mb_pool_0_0>, len:0x40, virt:0x10000, socket_id:0, flags:0\n"
            "turbomem: pool mb_pool_0: 8 objects x 2368 B in 0x7f0000000000-0x7f0000200000 (2 MiB), ...\n")
    assert dpdk_suite.pool_ranges(text) == [(0x7F0000000000, 0x7F0000200000)]
    text = ("Zone 3: name:<MP_mb_pool_0_0>, len:0x1000, virt:0x10000, socket_id:0, flags:0\n"
            "Zone 4: name:<MP_mb_pool_0_1>, len:0x2000, virt:0x20000, socket_id:0, flags:0\n"
            "Zone 5: name:<MP_mb_pool_0_ring>, len:0x2000, virt:0x30000, socket_id:0, flags:0\n"
            "Zone 6: name:<MP_mb_pool_01_0>, len:0x2000, virt:0x40000, socket_id:0, flags:0\n")
    assert dpdk_suite.pool_ranges(text) == [(0x10000, 0x11000), (0x20000, 0x22000)]


SMAPS = """00400000-00600000 rw-p 00000000 00:00 0
Size:               2048 kB
KernelPageSize:        4 kB
AnonHugePages:      2048 kB
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
KernelPageSize:        4 kB
AnonHugePages:      2048 kB
7e0000000000-7e0000400000 rw-s 00000000 00:0f 1234    /anon_hugepage (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
Private_Hugetlb:    4096 kB
"""


def test_coverage_exact_estimate_and_hugetlb():
    vmas = dpdk_suite.parse_smaps(SMAPS)
    assert len(vmas) == 3 and vmas[2]["kps"] == 2 << 20
    cov, how = dpdk_suite.coverage(vmas, [(0x400000, 0x600000)])
    assert cov == 1.0 and how == "exact"
    cov, how = dpdk_suite.coverage(vmas, [(0x7F0000000000, 0x7F0000400000)])
    assert cov == 0.5 and how == "exact"
    cov, how = dpdk_suite.coverage(vmas, [(0x7F0000000000, 0x7F0000100000)])  # inside a wider VMA
    assert cov == 0.5 and how.startswith("estimate")
    cov, how = dpdk_suite.coverage(vmas, [(0x7E0000100000, 0x7E0000200000)])
    assert cov == 1.0
    assert dpdk_suite.coverage(vmas, [])[0] is None


def test_rows_and_goals_from_canned_runs():
    raw = []
    for rep in range(3):
        for setup, mpps in (("ring_mp_mc/hugetlb", 10.0), ("turbomem/THP", 11.0), ("ring_mp_mc/4K", 9.0)):
            raw.append({"topology": "null", "setup": setup, "rep": rep, "mpps": mpps + rep * 0.1,
                        "coverage": 1.0 if "4K" not in setup else 0.0})
    rows = dpdk_suite.build_rows(raw)
    tm = [r for r in rows if r["topology"] == "null" and r["setup"] == "turbomem/THP"][0]
    assert tm["mpps"] == pytest.approx(11.1)
    assert tm["vs_hugetlb"] == pytest.approx(11.1 / 10.1)
    assert tm["vs_4k"] == pytest.approx(11.1 / 9.1)
    goals = dpdk_suite.evaluate_goals(rows)
    g = {x["goal"]: x for x in goals}
    assert g[dpdk_suite.GOALS[0][0]]["met"] is True
    assert g[dpdk_suite.GOALS[1][0]]["met"] is True  # 1.22 >= 1.1
    assert g[dpdk_suite.GOALS[2][0]]["measured"] is None  # no af_packet runs: no figure, not a pass


def test_cli_knows_the_dpdk_suite():
    from turbomem.bench import cli

    assert cli.parse_args(["bench", "dpdk", "--quick"]).suite == "dpdk"
    assert "dpdk" not in cli.selected("all")  # needs root and hugepages: only when named
    assert "dpdk" in cli.RUNNERS


def test_paired_ratio_pairs_runs_of_the_same_repetition():
    raw = [{"topology": "null", "setup": "a", "rep": 0, "mpps": 10.0},
           {"topology": "null", "setup": "b", "rep": 0, "mpps": 20.0},
           {"topology": "null", "setup": "a", "rep": 1, "mpps": 40.0},  # the machine got faster: both sides
           {"topology": "null", "setup": "b", "rep": 1, "mpps": 80.0},
           {"topology": "null", "setup": "a", "rep": 2, "mpps": 5.0}]   # no partner in rep 2: not paired
    assert dpdk_suite.paired_ratio(raw, "null", "a", "b") == pytest.approx(0.5)
    assert dpdk_suite.paired_ratio(raw, "af_packet", "a", "b") is None
