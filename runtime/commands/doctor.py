"""`zsris-rt doctor`: what this machine really runs (the probes: `zsris_rt.diagnosis`).

Exit status: 0 when everything needed runs, 1 when something is missing or broken (each such line
starts with "PROBLEM").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..diagnosis import diagnose
from .exit_codes import run_command


def _lines(report: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for key, value in report.items():
        if key == "problems":
            continue
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines += _lines(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], str):
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}  {item}" for item in value]
        else:
            lines.append(f"{indent}{key}: {value}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt doctor",
        description="Report what this machine runs: Python, packages, ONNX Runtime providers "
                    "(tried for real with --pack), GPUs, TensorRT and the CUDA bindings, the C++ "
                    "mask ops, a pack's integrity, its cached TensorRT engines and the backend "
                    "`--backend auto` picks for it. "
                    "Exit status 1 when something is missing or broken.")
    parser.add_argument("--pack", type=Path, help="also verify this pack and load one of its "
                                                  "graphs on every available provider (default: "
                                                  "$ZSRIS_PACK, else the demo pack, when there "
                                                  "is one)")
    parser.add_argument("--no-verify", action="store_true",
                        help="check the pack's files are present without hashing them")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("zsris-rt doctor", lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    from ..errors import PackError
    from ..pack import default_pack

    pack = args.pack
    if pack is None:
        try:
            pack = default_pack()
        except PackError:
            pack = None  # no pack anywhere: report the machine alone
    report = diagnose(pack, verify=not args.no_verify)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_lines(report)))
        for problem in report["problems"]:
            print(f"PROBLEM: {problem}")
        if not report["problems"]:
            print("ok: nothing missing")
    return 1 if report["problems"] else 0
