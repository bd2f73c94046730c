"""Compile a small Cython module that cimports turbomem._core, at run time.

Used by the benchmark suite (turbomem/bench/cimport_bench.pyx) and the test
suite (tests/cy/).  The module is built once per source hash into a temp
directory, under an fcntl lock so that parallel processes (pytest-xdist
workers) build it exactly once.  It must NOT include turbomem/pool.h: it only
cimports turbomem._core, whose exported functions hold the one thread registry.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # where `turbomem/_core.pxd` is found


def _key(source: Path) -> str:
    h = hashlib.sha256()
    for path in (source, PACKAGE_PARENT / "turbomem" / "_core.pxd"):
        h.update(path.read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _compile(name: str, source: Path, build_dir: Path) -> None:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    src = build_dir / f"{name}.pyx"
    src.write_bytes(source.read_bytes())
    ext = Extension(
        name,
        [str(src)],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
    modules = cythonize([ext], include_path=[str(PACKAGE_PARENT)], quiet=True,
                        compiler_directives={"language_level": 3})
    dist = Distribution({"ext_modules": modules})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(build_dir)
    cmd.build_temp = str(build_dir / "tmp")
    cmd.inplace = False
    cmd.ensure_finalized()
    cmd.run()


def build_and_import(name: str, source: Path) -> ModuleType:
    """Import module `name` compiled from `source` (building it first if needed).

    Needs Cython, setuptools and a C compiler (ImportError / CompileError otherwise)."""
    if name in sys.modules:
        return sys.modules[name]
    source = Path(source)
    build_dir = Path(tempfile.gettempdir()) / f"turbomem-{name}-{_key(source)}"
    build_dir.mkdir(exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            built = next(iter(build_dir.glob(f"{name}*.so")), None)
            if built is None:
                _compile(name, source, build_dir)
                built = next(iter(build_dir.glob(f"{name}*.so")), None)
                if built is None:
                    raise RuntimeError(f"{name} did not build in {build_dir}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    spec = importlib.util.spec_from_file_location(name, built)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {built} as {name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
