"""The ``pipeline`` benchmark: packet pipeline and UDP receive, fast vs naive.

``run(quick)`` returns rows ``{"name", "packets_per_sec", "ratio", ...}``:

* ``pipeline_naive`` / ``pipeline_fast``: examples/pipeline.py's two modes
  (turbomem.packet.pipeline) against its naive twin
  (turbomem.bench.naive_pipeline) over the same generated pcap; ``ratio`` of the fast
  row is fast / naive.  Both must forward exactly the same packets.
* ``udp_recv_recvfrom`` / ``udp_recv_burst``: receive path alone (empty a
  queue of N loopback datagrams); ``udp_echo_recvfrom`` / ``udp_echo_burst``:
  echo server under a load generator (turbomem.bench.udpbench).

Each measurement is repeated (1 time quick, 3 times otherwise) and the best
run kept, because these are wall-clock rates on a shared machine.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["run"]


def _ring_factory():
    import turbomem as tm

    return tm.Ring, "turbomem.Ring"


def _best(fn, repeats):
    best = None
    for _ in range(repeats):
        r = fn()
        if best is None or r["packets_per_sec"] > best["packets_per_sec"]:
            best = r
    return best


def run(quick: bool = False) -> list[dict]:
    import turbomem as tm
    from turbomem.bench.naive_pipeline import run_naive
    from turbomem.bench.udpbench import drain_benchmark, echo_benchmark
    from turbomem.packet import traffic
    from turbomem.packet.pipeline import PcapSource, Pipeline

    repeats = 1 if quick else 3
    n_packets = 30_000 if quick else 200_000
    rows: list[dict] = []
    factory, ring_name = _ring_factory()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pcap")
        traffic.write_pcap(path, traffic.generate_packets(n_packets, seed=42))
        naive = _best(lambda: run_naive(path), repeats)
        rows.append({"name": "pipeline_naive", "packets_per_sec": naive["packets_per_sec"],
                     "ratio": 1.0, "packets": naive["received"],
                     "forwarded": naive["forwarded"]})
        if factory is None:
            rows.append({"name": "pipeline_fast", "packets_per_sec": 0.0, "ratio": 0.0,
                         "skipped": "no turbomem.Ring and no examples/ fallback"})
        else:
            def fast():
                with tm.Pool(2048, 16384) as pool:
                    res = Pipeline(pool, factory, ring_size=4096, burst=256, stage_burst=2048).run(
                        PcapSource(path, pool, 256))
                    if pool.available != pool.capacity:
                        raise AssertionError("pipeline leaked buffers")
                    return res
            res = _best(fast, repeats)
            if res["forwarded"] != naive["forwarded"]:
                raise AssertionError(f"fast forwarded {res['forwarded']}, naive "
                                     f"{naive['forwarded']}")
            rows.append({"name": "pipeline_fast", "packets_per_sec": res["packets_per_sec"],
                         "ratio": res["packets_per_sec"] / naive["packets_per_sec"],
                         "packets": res["received"], "forwarded": res["forwarded"],
                         "ring": ring_name})

    count = 20_000 if quick else 50_000
    for kind, fn in (("udp_recv", lambda m: drain_benchmark(m, count=count, burst=256,
                                                            rounds=1 if quick else 3)),
                     ("udp_echo", lambda m: echo_benchmark(m, count=count, burst=256))):
        base = _best(lambda fn=fn: fn("recvfrom"), repeats)
        burst = _best(lambda fn=fn: fn("burst"), repeats)
        rows.append({"name": f"{kind}_recvfrom", "packets_per_sec": base["packets_per_sec"],
                     "ratio": 1.0, "packets": base["packets"]})
        rows.append({"name": f"{kind}_burst", "packets_per_sec": burst["packets_per_sec"],
                     "ratio": burst["packets_per_sec"] / max(base["packets_per_sec"], 1e-9),
                     "packets": burst["packets"]})
    return rows


GOALS = {"pipeline_fast": 5.0, "udp_recv_burst": 3.0}


def suite(quick: bool = False, progress=None) -> dict:
    """run() as a suite result for `python -m turbomem bench pipeline`."""
    if progress is not None:
        progress.update(0, 1, "pipeline")
    rows = run(quick)
    if progress is not None:
        progress.update(1, 1, "pipeline")
        progress.done()
    goals = []
    for row in rows:
        target = GOALS.get(row["name"])
        if target is not None:
            goals.append({"goal": f"{row['name']} vs its baseline", "target_text": f">= {target:g}x",
                          "measured": row["ratio"], "met": row["ratio"] >= target, "detail": "same input, same run"})
    return {
        "suite": "pipeline",
        "skipped": None,
        "notes": ["pipeline: examples/pipeline.py's stages (pcap -> classify -> forward over tm.Ring, one pool) "
                  "against --naive (bytes per packet, queue.Queue); udp: burst recvmmsg into pool objects "
                  "against a socket.recvfrom loop, on loopback"],
        "columns": [{"key": "name", "title": "case"}, {"key": "packets_per_sec", "title": "packets/s", "fmt": "d"},
                    {"key": "ratio", "title": "vs baseline", "fmt": "x"}, {"key": "packets", "title": "packets", "fmt": "d"}],
        "rows": rows,
        "goals": goals,
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
