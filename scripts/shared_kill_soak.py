"""Soak: SIGKILL a churning process of a SharedPool thousands of times, then
check that every object is accounted for exactly once.

    python scripts/shared_kill_soak.py --kills 10000 [--workers 4] [--seed 1]

The suite runs the same function with 300 kills (tests/shared/test_kill.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from shared.test_kill import kill_run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t = time.monotonic()
    res = kill_run(args.kills, seed=args.seed, workers=args.workers)
    audit = res["audit"]
    print(json.dumps({"kills": args.kills, "seconds": round(time.monotonic() - t, 1),
                      "objects_recovered": res["recovered"], "ok": audit["ok"],
                      "problems": audit["problems"], "census": audit["census"],
                      "in_rings": audit["in_rings"]}, default=str))
    return 0 if audit["ok"] and not audit["census"]["held"] and not audit["census"]["cached"] else 1


if __name__ == "__main__":
    sys.exit(main())
