"""Helpers shared by tests in several folders (importable because tests/ is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import turbomem

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the turbomem under test is imported from: this checkout (editable install) or site-packages
# (CI's sdist install). Child processes get this directory, never the checkout, so that a source
# tree without compiled modules cannot shadow the installed package.
PACKAGE_PARENT = Path(turbomem.__file__).resolve().parent.parent


def child_env(**extra: str) -> dict:
    """os.environ for a child Python that imports the same turbomem as this process."""
    path = str(PACKAGE_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=path, **extra)


def maps_count() -> int:
    """Mappings in /proc/self/maps, read directly (not through turbomem) for leak checks."""
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)
