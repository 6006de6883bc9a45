"""`zsris-export`'s entry point: `engines` and `quantize` work on a pack without PyTorch (a
Jetson often has none); the other commands and --help still list everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zsris_rt.export.cli import build_parser

DEMO = Path(__file__).resolve().parent.parent / "engines" / "demo"


@pytest.mark.parametrize("argv, message", [
    (["engines", str(DEMO), "--precision", "int8"], "int8 engines need calibration images"),
    (["quantize", str(DEMO / "nowhere"), "--calib", str(DEMO)], "nowhere"),
])
def test_torch_free_commands_never_import_torch(argv, message):
    code = ("import sys; from zsris_rt.export.cli import main; "
            f"code = main({argv!r}); print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_help_lists_every_command():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(commands) >= {"clip", "sam", "demo", "random-clip", "random-sam", "engines",
                             "quantize"}
