"""`zsris-export`'s entry point. The commands that work on an existing pack (`engines`,
`quantize`) need no PyTorch — a Jetson often has none — so they run without importing it; the
others go to cli.py, which does."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from zsris_rt.errors import ZsrisError

# Command → module with `add_parser(subparsers)` and `run(args) -> int`.
TORCH_FREE = {"engines": "engines_command", "quantize": "quantize"}


def torch_free_command(name: str) -> ModuleType:
    return importlib.import_module(f".{TORCH_FREE[name]}", __package__)


def run_torch_free(args: argparse.Namespace) -> int:
    """Run a parsed torch-free command; bad input is one line on stderr and exit status 2."""
    try:
        return torch_free_command(args.command).run(args)
    except ZsrisError as exc:
        print(f"zsris-export {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TORCH_FREE:
        parser = argparse.ArgumentParser(prog="zsris-export")
        torch_free_command(argv[0]).add_parser(parser.add_subparsers(dest="command",
                                                                     required=True))
        return run_torch_free(parser.parse_args(argv))
    from .cli import main as export_main

    return export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
