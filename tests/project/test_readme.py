"""The README's two commands are the contract; CI must run the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

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
