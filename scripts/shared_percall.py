"""Per-call cost of SharedPool.get()+put() against the core Pool.get()+put(),
from Python, in one run, contenders alternating (round robin), best of rounds.

    python scripts/shared_percall.py [--calls 200000] [--rounds 7]

Prints ns per get+put pair (the loop's own cost included, the same for both)
and the ratio.  Numbers only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import time

import turbomem as tm


def pair_loop(pool, n: int) -> float:
    get, put = pool.get, pool.put
    t = time.perf_counter_ns()
    for _ in range(n):
        put(get())
    return (time.perf_counter_ns() - t) / n


def method_loop(pool, n: int) -> float:
    t = time.perf_counter_ns()
    for _ in range(n):
        h = pool.get()
        pool.put(h)
    return (time.perf_counter_ns() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    contenders = {"SharedPool": tm.SharedPool(2048, 4096), "Pool": tm.Pool(2048, 4096)}
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for loop in (pair_loop, method_loop):
            for name, pool in contenders.items():
                key = f"{name} {loop.__name__}"
                best[key] = min(best.get(key, float("inf")), loop(pool, args.calls))
    for p in contenders.values():
        p.close()
    out = {k: round(v, 1) for k, v in best.items()}
    for loop in ("pair_loop", "method_loop"):
        out[f"ratio {loop}"] = round(best[f"SharedPool {loop}"] / best[f"Pool {loop}"], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
