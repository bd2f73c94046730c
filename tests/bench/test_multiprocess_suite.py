"""`python -m turbomem bench multiprocess`: every contender delivers every packet
(the suite checks each histogram itself); speed is never asserted here."""

from __future__ import annotations

from turbomem.bench import multiprocess_suite as m


def test_small_run_counts_every_packet_in_every_contender():
    rows = m.run(packets=3000, rounds=1)
    names = [r["name"] for r in rows]
    assert names == ["turbomem", "mp_queue", "faster_fifo", "shm_offsets"]
    for r in rows:
        if r.get("skipped"):
            assert r["name"] == "faster_fifo" and "faster-fifo" in r["skipped"]
        else:
            assert r["packets"] == 3000 and r["packets_per_sec"] > 0


def test_suite_shape_has_goals_and_chart(monkeypatch):
    monkeypatch.setattr(m, "run", lambda quick: [
        {"name": "turbomem", "packets_per_sec": 300.0, "vs_mp_queue": 30.0, "packets": 1},
        {"name": "mp_queue", "packets_per_sec": 10.0, "vs_mp_queue": 1.0, "packets": 1},
        {"name": "faster_fifo", "packets_per_sec": 0.0, "vs_mp_queue": 0.0, "skipped": "not installed"},
        {"name": "shm_offsets", "packets_per_sec": 20.0, "vs_mp_queue": 2.0, "packets": 1}])
    res = m.suite(quick=True)
    assert res["suite"] == "multiprocess" and len(res["goals"]) == 1 and res["goals"][0]["met"]
    assert "faster_fifo" not in res["chart"]["labels"]
