"""The command line as a user meets it: program name, --version, usage, defaults, `| head`."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import turbomem

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "turbomem", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_version_is_written_once_and_printed():
    assert importlib.metadata.version("turbomem") == turbomem.__version__
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"python -m turbomem {turbomem.__version__}"


def test_help_names_the_program_bench_and_defaults():
    out = _run("--help").stdout
    usage = out.split("\n\n", 1)[0]
    assert usage.startswith("usage: python -m turbomem ")
    from turbomem.bench.cli import EXTRA_SUITES, SUITE_NAMES

    suites = "|".join(SUITE_NAMES + EXTRA_SUITES + ("all",))
    assert "core|python|hugepages|pipeline" in suites
    assert f"python -m turbomem bench [{suites}]" in usage
    assert "(default: 2048)" in out and "(default: 64)" in out and "(default: auto)" in out
    assert "per thread" in out  # what ns/get+put means
    bench = _run("bench", "--help").stdout
    assert bench.startswith("usage: python -m turbomem bench")


def test_installed_script_says_its_own_name():
    script = Path(sys.executable).with_name("turbomem")
    if not script.exists():
        script = Path(shutil.which("turbomem") or "/nonexistent")
    if not script.exists():
        pytest.skip("the turbomem console script is not installed in this environment")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("usage: turbomem ") and "turbomem bench [" in out
    assert subprocess.run([str(script), "bench", "--help"], capture_output=True, text=True,
                          timeout=60).stdout.startswith("usage: turbomem bench")


@pytest.mark.parametrize("cmd", [
    ["-m", "turbomem", "--seconds", "0.05", "--pool-mb", "8"],
    ["-m", "turbomem", "--json", "--seconds", "0.05", "--pool-mb", "8"],
    [str(ROOT / "examples" / "pipeline.py"), "--generate", "500"],
], ids=["main-job", "main-job-json", "pipeline-example"])
def test_a_closed_pipe_ends_the_command_quietly(cmd):
    """`... | head`: the reader is gone before the first write; no traceback, SIGPIPE's status."""
    r, w = os.pipe()
    os.close(r)  # nobody will ever read: the first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, *cmd], stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141



def test_a_source_tree_without_the_compiled_core_says_so(tmp_path):
    """Run from a checkout whose turbomem/ has no _core: the error names the shadowing and the ways out."""
    src = tmp_path / "turbomem"
    src.mkdir()
    for name in ("__init__.py", "_version.py", "errors.py"):
        (src / name).write_text((ROOT / "turbomem" / name).read_text())
    # -S: no site-packages, so only the source tree can be found (as when it shadows an install)
    proc = subprocess.run([sys.executable, "-S", "-c", "import turbomem"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "is not built in" in proc.stderr and "shadows an installed TurboMem" in proc.stderr
