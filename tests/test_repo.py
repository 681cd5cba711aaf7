"""The repository's promises to a newcomer: CI installs with the README's own command and runs
the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments cut."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "the README begins with a bash block of its two commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_installs_with_the_readmes_command_and_runs_its_tests():
    run, test = readme_commands()
    install, _, main_job = run.partition(" && ")
    assert main_job == "shrink-sweep run"
    assert test == f"{install} && pytest"
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert "pytest" in ci_lines
    assert "torch==2.13.0" in install  # the CPU build on disk, not a multi-GB CUDA one
