"""Helpers shared by tests in several folders (importable because tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_env(**extra: str) -> dict:
    """os.environ for a child Python that imports turbomem from this checkout."""
    path = str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=path, **extra)


def maps_count() -> int:
    """Mappings in /proc/self/maps, read directly (not through turbomem) for leak checks."""
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)
