"""Compile tests/cy/tmstress.pyx once per test session (shared by xdist workers).

The extension only cimports turbomem._core; turbomem.cybuild builds it once per
source hash under a file lock.
"""

from __future__ import annotations

import os
from pathlib import Path

from turbomem.cybuild import build_and_import

SOURCE = Path(__file__).resolve().parent / "tmstress.pyx"


def load_stress():
    """Import (building first if needed) and return the tmstress module."""
    return build_and_import("tmstress", SOURCE)


if __name__ == "__main__":
    print(load_stress().__file__)
    os._exit(0)
