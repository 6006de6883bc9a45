"""One exit-status policy for every command (commands/exit_codes.py): 2 bad input, 3 no mask,
130 Ctrl-C, 1 internal error; one line on stderr; the traceback only with ZSRIS_DEBUG=1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zsris_rt.commands.exit_codes import run_command
from zsris_rt.errors import ImageError, NoMaskError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def raising(exc: BaseException) -> Callable[[], int]:
    def body() -> int:
        raise exc

    return body


@pytest.mark.parametrize("exc, status, words", [
    (ImageError("x.png: not a readable image"), 2, "prog: error: x.png: not a readable image"),
    (NoMaskError("the proposer kept no mask"), 3, "prog: the proposer kept no mask"),
    (FileNotFoundError(2, "No such file or directory", "out/x.png"), 2,
     "prog: error: No such file or directory: out/x.png"),
    (KeyboardInterrupt(), 130, "prog: interrupted"),
    (ValueError("shapes (2,3) and (4,) not aligned\nmore"), 1,
     "prog: internal error: ValueError: shapes (2,3) and (4,) not aligned (a bug; "
     "ZSRIS_DEBUG=1 shows the traceback)"),
])
def test_each_failure_is_one_line_and_its_status(exc, status, words, capsys, monkeypatch):
    monkeypatch.delenv("ZSRIS_DEBUG", raising=False)
    assert run_command("prog", raising(exc)) == status
    out, err = capsys.readouterr()
    assert out == "" and err == words + "\n"


def test_success_and_verdicts_pass_through(capsys):
    assert run_command("prog", lambda: 0) == 0
    assert run_command("prog", lambda: 1) == 1  # a command's own failed verdict
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("exc", [ImageError("bad"), ValueError("bug"), KeyboardInterrupt()])
def test_debug_shows_the_traceback(exc, monkeypatch):
    monkeypatch.setenv("ZSRIS_DEBUG", "1")
    with pytest.raises(type(exc)):
        run_command("prog", raising(exc))


def test_debug_zero_is_off(monkeypatch, capsys):
    monkeypatch.setenv("ZSRIS_DEBUG", "0")
    assert run_command("prog", raising(ValueError("bug"))) == 1
    assert "internal error" in capsys.readouterr().err


def test_interrupt_hook_replaces_the_line(capsys):
    said = []
    assert run_command("prog", raising(KeyboardInterrupt()),
                       lambda: said.append("resume hint")) == 130
    assert said == ["resume hint"] and capsys.readouterr().err == ""


def zsris_rt(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zsris_rt.commands", *argv],
                          capture_output=True, text=True, timeout=300)


def test_the_installed_commands_follow_it(tmp_path):
    """Through the real entry point, in a process of its own: bad input of each command."""
    missing = str(tmp_path / "nowhere.png")
    for argv in ([missing, "the star"],
                 ["check", "--images", missing, "--texts", "x"],
                 ["eval", "--data", str(tmp_path), "--dataset", "refcoco", "--split", "val",
                  "--images", str(tmp_path), "--out", str(tmp_path / "e")],
                 ["synth", "--out", str(tmp_path / "s"), "--images", "0"]):
        done = zsris_rt(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, argv


def test_an_internal_error_is_one_line_unless_debugging(tmp_path):
    """A library call that raises a plain Python error (a bug, not bad input): one line and
    status 1; with ZSRIS_DEBUG=1 the traceback."""
    code = ("import sys, zsris_rt.image as image\n"
            "def broken(path): raise RuntimeError('boom')\n"
            "image.read_image = broken\n"
            "from zsris_rt.commands.main import main\n"
            f"sys.exit(main([{str(EXAMPLES / 'scene-2.png')!r}, 'the big yellow star']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "ZSRIS_DEBUG": ""})
    assert done.returncode == 1
    assert done.stderr == ("zsris-rt: internal error: RuntimeError: boom (a bug; ZSRIS_DEBUG=1 "
                           "shows the traceback)\n")
    debug = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "ZSRIS_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "boom" in debug.stderr
