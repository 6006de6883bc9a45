"""The paper's scoring against `--spatial`, per expression kind, with the true masks and with the
proposer's, on the demo pack: the held-out val split of the standard synthetic set (seed 2026,
as the README's other demo figures) and the held-out new phrasings (seed 7000, never used for
tuning; `zsris-rt synth --phrasings new`). KIND_TEMPERATURE was chosen on testA
(benchmarks/spatial_tuning.py). Writes benchmarks/results/spatial.json and prints a table.

    python benchmarks/spatial_eval.py [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from zsris_rt.commands.eval import main as eval_main
from zsris_rt.synthetic_refer import NEW_PHRASINGS_SEED, write_synthetic_refer

RESULTS = Path(__file__).resolve().parent / "results" / "spatial.json"
SETS = {"held-out val (standard, seed 2026)": (2026, 240, "standard"),
        f"new phrasings (seed {NEW_PHRASINGS_SEED})": (NEW_PHRASINGS_SEED, 120, "new")}


def figures(summary: dict) -> dict:
    out = {"all": summary["strict"]}
    out.update({kind: v["strict"] for kind, v in summary["by_kind"].items()})
    return {k: {"samples": v["samples"], "P@0.5": v["P@0.5"], "mIoU": v["mIoU"]}
            for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="spatial-")))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report: dict = {}
    for name, (seed, images, phrasings) in SETS.items():
        data = args.work / f"data-{seed}-{phrasings}"
        write_synthetic_refer(data, "refcoco", images=images, seed=seed, phrasings=phrasings)
        for proposals in ("gt", "model"):
            for mode in ("paper", "spatial"):
                out = args.work / f"eval-{seed}-{phrasings}-{proposals}-{mode}"
                argv = ["--data", str(data), "--dataset", "refcoco", "--split", "val",
                        "--images", str(data / "images"), "--out", str(out), "--proposals",
                        proposals, "--threads", str(args.threads)]
                with contextlib.redirect_stdout(io.StringIO()):
                    eval_main(argv + (["--spatial"] if mode == "spatial" else []))
                summary = json.loads((out / "summary.json").read_text())
                report.setdefault(name, {}).setdefault(proposals, {})[mode] = figures(summary)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    for name, by_proposals in report.items():
        for proposals, modes in by_proposals.items():
            masks = "true masks" if proposals == "gt" else "proposer's masks"
            print(f"\n{name}, {masks}: P@0.5 (share of expressions answered with IoU ≥ 0.5)")
            print("| kind | n | paper | --spatial |\n|---|---|---|---|")
            for kind, paper in modes["paper"].items():
                spatial = modes["spatial"][kind]
                print(f"| {kind} | {paper['samples']} | {paper['P@0.5']:.1f} | "
                      f"{spatial['P@0.5']:.1f} |")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
