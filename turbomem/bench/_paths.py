"""Where the benchmark finds the C headers, its own C sources and its cache."""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent  # .../turbomem/bench
_PKG = _HERE.parent  # .../turbomem
_REPO = _PKG.parent  # the source checkout (if this is one)


def include_dir() -> Path:
    """The directory to pass as ``-I`` so that ``#include "turbomem/pool.h"`` works.

    An installed package ships the headers as ``turbomem/include/turbomem/*.h``;
    a source checkout has them at ``<repo>/include/turbomem/*.h``.
    """
    for cand in (_PKG / "include", _REPO / "include"):
        if (cand / "turbomem" / "pool.h").is_file():
            return cand
    raise FileNotFoundError(
        "turbomem/pool.h not found (looked in %s and %s)" % (_PKG / "include", _REPO / "include")
    )


def core_sources() -> list:
    """The compiled half of the core (src/pool.c) to link beside a C program.

    An installed package ships it as ``turbomem/src/pool.c``; a source
    checkout has it at ``<repo>/src/pool.c``.
    """
    for cand in (_PKG / "src", _REPO / "src"):
        if (cand / "pool.c").is_file():
            return [cand / "pool.c"]
    raise FileNotFoundError("src/pool.c not found (looked in %s and %s)" % (_PKG / "src", _REPO / "src"))


def bench_source(name: str) -> Path:
    """A C source shipped beside this module (core_bench.c, chase.c)."""
    return _HERE / name


def cache_dir() -> Path:
    """Where compiled harnesses go: $TURBOMEM_CACHE_DIR, else ~/.cache/turbomem."""
    env = os.environ.get("TURBOMEM_CACHE_DIR")
    if env:
        d = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = Path(base) / "turbomem"
    d.mkdir(parents=True, exist_ok=True)
    return d
