"""Choose the spatial choice's KIND_TEMPERATURE on the TUNING split only (testA of the demo's
standard synthetic set, seed 2026), with the true masks as candidates; the README's spatial
figures are then measured on val and on the held-out new phrasings (seed 7000), never here.

    python benchmarks/spatial_tuning.py [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from zsris_rt.commands.eval import main as eval_main
from zsris_rt.spatial import choice
from zsris_rt.synthetic_refer import write_synthetic_refer

TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0)
SPATIAL_KINDS = ("ordinal", "position", "relation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="spatial-")))
    args = parser.parse_args()
    data = args.work / "tuning"
    write_synthetic_refer(data, "refcoco", images=240, seed=2026)
    rows = {}
    for temperature in TEMPERATURES:
        choice.KIND_TEMPERATURE = temperature
        out = args.work / f"eval-{temperature:g}"
        with contextlib.redirect_stdout(io.StringIO()):
            eval_main(["--data", str(data), "--dataset", "refcoco", "--split", "testA",
                       "--images", str(data / "images"), "--out", str(out), "--proposals", "gt",
                       "--threads", "1", "--spatial"])
        summary = json.loads((out / "summary.json").read_text())
        by_kind = {k: summary["by_kind"][k]["strict"]["P@0.5"] for k in summary["by_kind"]}
        rows[temperature] = by_kind
        print(f"T = {temperature:g}: " + ", ".join(f"{k} {v:.1f}" for k, v in by_kind.items()),
              flush=True)
    best = max(rows, key=lambda t: sum(rows[t].get(k, 0.0) for k in SPATIAL_KINDS))
    print(f"best on testA (sum of the spatial kinds' P@0.5): T = {best:g}")


if __name__ == "__main__":
    main()
