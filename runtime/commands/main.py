"""`zsris-rt`: the main command, or `zsris-rt COMMAND ...` for one of the others.

Each command is a module of this package with `main(argv) -> int`; it is imported only when run,
so that `zsris-rt --help` and a plain query pay for nothing else.
"""

from __future__ import annotations

import importlib
import sys

# `zsris-rt NAME ...` → (module in this package, one line for --help).
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("doctor", "what this machine runs: packages, providers, C++ mask ops, a pack"),
    "eval": ("eval", "oIoU/mIoU on data in the refer layout (RefCOCO/+/g)"),
    "synth": ("synth", "write a small synthetic dataset in the refer layout"),
    "check": ("check", "compare a backend / precision / pruning mode with exact fp32 CPU"),
    "bench": ("bench", "per-stage latency against the PyTorch reference, with compute floors"),
    "serve": ("serve", "keep a pack loaded and answer over HTTP (API, metrics, a page)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f".{COMMANDS[argv[0]][0]}", __package__)
        return int(module.main(argv[1:]))
    from .segment import main as segment_main

    return segment_main(argv, {name: text for name, (_, text) in COMMANDS.items()})


if __name__ == "__main__":
    sys.exit(main())
