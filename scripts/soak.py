#!/usr/bin/env python3
"""Soak test (not in CI): 10**9 pool operations from several threads.

Runs the nogil mixed-stress loop of tests/cy (token-checked ownership, failing
calls mixed in) in chunks over pools of varied shapes, printing a progress
line, and after every chunk drains the pool and counts each handle exactly
once.  Usage:  python scripts/soak.py [--ops 1e9] [--threads 8]
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import turbomem as tm  # noqa: E402
from cy.checks import assert_accounting  # noqa: E402
from cy.tmstress_build import load_stress  # noqa: E402

SHAPES = [  # capacity, cache_size, max_hold, max_bulk
    (4096, 256, 256, 64),
    (512, 32, 128, 32),
    (100, 8, 32, 8),
    (20_000, 512, 512, 256),
    (64, 0, 8, 4),
    (64, 1, 16, 4),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=float, default=1e9)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--chunk", type=float, default=2e7, help="ops per chunk (all threads)")
    args = ap.parse_args()
    stress = load_stress()
    total, target, chunk_no = 0, int(args.ops), 0
    t0 = time.monotonic()
    while total < target:
        cap, cache, hold, bulk = SHAPES[chunk_no % len(SHAPES)]
        threads = 2 + chunk_no % (args.threads - 1) if args.threads > 2 else args.threads
        per = max(1, int(min(args.chunk, target - total)) // threads)
        pool = tm.Pool(64, cap, cache_size=cache, populate=False)
        res = [None] * threads

        def run(i):
            res[i] = stress.mixed_stress(pool, per, chunk_no * 1000 + i + 1, hold, bulk)

        ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        bad = sum(r["token_errors"] + r["unexpected"] for r in res)
        if bad or sum(r["gets"] for r in res) != sum(r["puts"] for r in res):
            print(f"\nsoak: FAIL in chunk {chunk_no}: {res}", flush=True)
            return 1
        assert_accounting(pool, [])
        pool.close()
        total += per * threads
        chunk_no += 1
        el = time.monotonic() - t0
        print(f"\rsoak: {total:,} / {target:,} ops ({100 * total / target:5.1f}%), "
              f"{chunk_no} pools, {total / el / 1e6:6.1f} Mops/s, {el:7.1f} s", end="", flush=True)
    print(f"\nsoak: {total:,} ops in {time.monotonic() - t0:.1f} s OK", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
