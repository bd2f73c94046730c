"""`python -m turbomem bench xdp` end to end, cut down to two contenders and one size."""

import pytest

from turbomem.bench import cli, xdp_suite
from turbomem.packet import vethlab


def test_xdp_suite_is_selectable_but_not_in_all():
    assert cli.parse_args(["bench", "xdp", "--quick"]).suite == "xdp"
    assert "xdp" not in cli.selected("all")
    assert "xdp" in cli.RUNNERS


def test_xdp_suite_measures_live_and_drain(monkeypatch):
    why = vethlab.available()
    if why:
        pytest.skip(why)
    monkeypatch.setattr(xdp_suite, "CONTENDERS", ("af_xdp", "recvmmsg"))
    monkeypatch.setattr(xdp_suite, "DRAIN_CONTENDERS", ("af_xdp", "recvmmsg"))
    monkeypatch.setattr(xdp_suite, "SIZES", (64,))
    res = xdp_suite.suite(quick=True)
    assert res["skipped"] is None
    rows = {(r["phase"], r["contender"]): r for r in res["rows"]}
    assert set(rows) == {("live", "af_xdp"), ("live", "recvmmsg"), ("drain", "af_xdp"),
                         ("drain", "recvmmsg")}
    for r in rows.values():
        assert r["packets_per_sec"] > 0
    # what was queued was drained (the kernel may drop a few under load: it says so)
    drained = rows[("drain", "af_xdp")]["packets"]
    assert drained + rows[("drain", "af_xdp")]["kernel_drops"] >= 0.9 * 3 * 6000
    goal = [g for g in res["goals"] if g["goal"].startswith("AF_XDP on a pool vs recvmmsg")]
    assert len(goal) == 2 and all(g["measured"] > 0 for g in goal)
    assert res["chart"]["labels"]
