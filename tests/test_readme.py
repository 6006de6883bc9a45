"""CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    test_command = commands[1]
    assert "pytest" in test_command and "pip install" in test_command
    assert "zsris-rt " in commands[0] and "pip install" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
