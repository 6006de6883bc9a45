"""The README's Python block and every `examples/*.py` run, on the committed demo pack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_every_example_script_is_tested() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")} - {"make_scenes"}
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert scripts <= tested, scripts - tested


def test_readme_python_block_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README has no Python block"
    for block in blocks:
        run(["-c", block])


def test_encode_once_query_many() -> None:
    out = run([str(EXAMPLES / "encode_once_query_many.py")]).stdout.splitlines()
    expressions = json.loads((EXAMPLES / "scenes.json").read_text())[0]["expressions"]
    lines = [line for line in out if "→ mask" in line]
    assert len(lines) == len(expressions)
    right = int(re.fullmatch(r"(\d+) of (\d+) right", out[-1]).group(1))
    assert right == sum(f"(true {e['object']})" in line and f"mask {e['object']} " in line
                        for e, line in zip(expressions, lines, strict=True))
    assert right >= 0.8 * len(expressions)  # true masks, plain attribute expressions


def test_propose_with_options() -> None:
    out = run([str(EXAMPLES / "propose_with_options.py")]).stdout
    counts = [int(n) for n in re.findall(r": (\d+) masks from", out)]
    assert len(counts) == 3 and counts[1] <= 5  # max_masks=5 holds
    prompts = re.findall(r"from (\d+) of (\d+) grid points", out)
    assert prompts[2] == ("64", "64")  # points_per_side=8


def test_fast_modes() -> None:
    out = run([str(EXAMPLES / "fast_modes.py")]).stdout
    crops = dict(re.findall(r"^(exact|top-2) .*crops encoded per query \[([\d, ]+)\]", out, re.M))
    assert {int(n) for n in crops["top-2"].split(",")} == {2}
    assert "bound: 4 of 4 chosen masks as exact's" in out  # the bound is exact


@pytest.mark.parametrize("argv, status", [([], 0), (["nowhere.png", "the star"], 2)])
def test_robot_json(argv: list[str], status: int) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "robot_json.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == status, done.stderr
    if status == 0:
        area = re.search(r"(\d+) px = area (\d+)", done.stdout)
        assert area and area.group(1) == area.group(2)  # the RLE decodes to the reported area
        assert "grasp at (" in done.stdout
    else:
        assert "no target (2)" in done.stderr
