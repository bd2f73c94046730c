"""Build the compiled modules: turbomem._core over the C core (include/turbomem/*.h
and src/pool.c), turbomem._shm (pools and rings shared between processes), and
turbomem.packet._pcapwalk / _xsk, cimport users of turbomem/_core.pxd.

The core is include/turbomem/*.h (public API, inline hit paths) and
src/pool.c (registry, slow paths, fork, statistics), both at the top level as
the source of truth; they are also shipped inside the package
(turbomem/include/, turbomem/src/) so that an installed TurboMem can build its
C benchmark harness and `turbomem.get_include()` works for C users.
"""

import os
import shutil

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
HEADERS = os.path.join(HERE, "include", "turbomem")
CORE_SOURCES = [os.path.join("src", "pool.c")]
# Ship stripped extension modules (no symbol tables or debug info: ~5x smaller).
# TURBOMEM_NO_STRIP=1 keeps the symbols for profiling or gdb.
LINK_ARGS = [] if os.environ.get("TURBOMEM_NO_STRIP") else ["-Wl,--strip-all"]


class build_py_with_headers(build_py):
    """Copy include/turbomem/*.h and src/*.c into the built package."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "turbomem", "include", "turbomem")
        os.makedirs(target, exist_ok=True)
        for name in sorted(os.listdir(HEADERS)):
            if name.endswith(".h"):
                shutil.copy2(os.path.join(HEADERS, name), target)
        src_target = os.path.join(self.build_lib, "turbomem", "src")
        os.makedirs(src_target, exist_ok=True)
        for rel in CORE_SOURCES:
            shutil.copy2(os.path.join(HERE, rel), src_target)


def c_extension(name, sources, **extra):
    """One compiled module: the C core's headers and numpy on the include path,
    the same flags everywhere, stripped unless TURBOMEM_NO_STRIP is set."""
    return Extension(
        name,
        sources,
        include_dirs=[os.path.join(HERE, "include"), numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2", "-std=gnu11", "-Wno-unused-function"],
        extra_link_args=LINK_ARGS,
        **extra,
    )


extensions = [
    c_extension("turbomem._core", ["turbomem/_core.pyx"] + CORE_SOURCES, libraries=["pthread"]),
    # Pools and rings in a shared mapping (include/turbomem/shm.h): a module
    # of its own so the core's hit paths stay untouched.
    c_extension("turbomem._shm", ["turbomem/_shm.pyx"], libraries=["pthread"]),
    # The packet toolkit's pcap record walk and the AF_XDP / TPACKET_V3 loops
    # (include/turbomem/xsk.h): cimport users of turbomem._core (found through
    # include_path below); they never include pool.h themselves.
    c_extension("turbomem.packet._pcapwalk", ["turbomem/packet/_pcapwalk.pyx"]),
    c_extension("turbomem.packet._xsk", ["turbomem/packet/_xsk.pyx"]),
]

setup(
    ext_modules=cythonize(extensions, include_path=[HERE], compiler_directives={"language_level": "3"}),
    cmdclass={"build_py": build_py_with_headers},
)
