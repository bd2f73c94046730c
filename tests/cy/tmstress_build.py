"""Compile tests/cy/tmstress.pyx once per test session (shared by xdist workers).

The extension only cimports turbomem._core; it is built into a temp directory
keyed by the sources' hash, under an fcntl lock so that parallel pytest-xdist
workers compile it exactly once.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "tmstress.pyx"


def _key() -> str:
    h = hashlib.sha256()
    for path in (SOURCE, REPO / "turbomem" / "_core.pxd"):
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _find_built(build_dir: Path) -> Path | None:
    for path in build_dir.glob("tmstress*.so"):
        return path
    return None


def _compile(build_dir: Path) -> None:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    src = build_dir / "tmstress.pyx"
    src.write_bytes(SOURCE.read_bytes())
    ext = Extension(
        "tmstress",
        [str(src)],
        include_dirs=[numpy.get_include()],  # NOT include/turbomem: no pool.h here
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
    modules = cythonize([ext], include_path=[str(REPO)], quiet=True,
                        compiler_directives={"language_level": 3})
    dist = Distribution({"ext_modules": modules})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(build_dir)
    cmd.build_temp = str(build_dir / "tmp")
    cmd.inplace = False
    cmd.ensure_finalized()
    cmd.run()


def load_stress():
    """Import (building first if needed) and return the tmstress module."""
    build_dir = Path(tempfile.gettempdir()) / f"turbomem-tmstress-{_key()}"
    build_dir.mkdir(exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            built = _find_built(build_dir)
            if built is None:
                _compile(build_dir)
                built = _find_built(build_dir)
                if built is None:
                    raise RuntimeError(f"tmstress did not build in {build_dir}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if "tmstress" in sys.modules:
        return sys.modules["tmstress"]
    spec = importlib.util.spec_from_file_location("tmstress", built)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["tmstress"] = module
    return module


if __name__ == "__main__":
    print(load_stress().__file__)
    os._exit(0)
