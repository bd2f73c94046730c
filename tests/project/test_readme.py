"""The README's two commands are the contract; CI must run the test one verbatim."""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import pytest

from turbomem.packet import vethlab

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m turbomem")
    assert "pytest -n auto" in commands[1]


def test_ci_runs_the_readme_test_command():
    install_and_test = _readme_commands()[1].split("&& ", 2)[-1]  # after creating/activating the venv
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def _blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)


def test_every_python_block_runs(tmp_path, monkeypatch):
    """The README's Python blocks, in order, in one namespace; the Cython block is saved as touch.pyx and
    built by the README's own build script (from this install, editable or not)."""
    blocks = _blocks()
    python = [code for lang, code in blocks if lang == "python"]
    cython = [code for lang, code in blocks if lang == "cython"]
    assert len(python) >= 4 and len(cython) == 1
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the Cython block cannot be built")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "touch.pyx").write_text(cython[0])
    namespace: dict = {"__name__": "__readme__"}
    with contextlib.ExitStack() as stack:
        # The README says "eth0", as a user's would.  The test binds its AF_XDP and packet sockets to a veth
        # interface of its own instead: never the host's NIC (whose traffic an XDP program would divert), and
        # never one that another suite running on this machine binds at the same time.
        iface = "eth0"
        if vethlab.available() is None:
            iface = stack.enter_context(vethlab.VethLab("rd")).near
        for code in python:
            code = code.replace('"eth0"', f'"{iface}"')
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    assert (tmp_path / "trace.pcap").exists()
    assert any(p.name.startswith("touch.") and p.suffix == ".so" for p in tmp_path.iterdir())


def test_benchmark_figures_come_from_docs_benchmarks():
    """Every number in the README's benchmark table appears in docs/benchmarks.md (the same run)."""
    text = (ROOT / "README.md").read_text()
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    section = text.split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what")]
    assert len(rows) >= 8
    for row in rows:
        for number in re.findall(r"\d+(?:\.\d+)?", " ".join(row.split("|")[2:5])):
            assert number in docs, f"{number} (README: {row}) is not in docs/benchmarks.md"


def test_main_job_figures_are_explained():
    """The README explains every figure of the main job's text output."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## What the main job shows", 1)[1].split("\n## ", 1)[0]
    for figure in ("THP mode", "cache hit path", "policy", "backing", "on huge pages", "NUMA binding",
                   "pages live on", "populate", "get+put/s", "ns/get+put", "bulk32 obj/s", "accounting",
                   "Counters"):
        assert figure in section, figure
