"""`zsris-export demo`: train the demo pack's two models here and export them into a pack.

The committed `engines/demo` is this command's output: a tiny CLIP (demo_clip.py) and a tiny SAM
(demo_proposer.py), both trained on synthetic scenes on the CPU, then exported by the same
`zsris-export clip` and `zsris-export sam` a real checkpoint goes through. The manifest's
provenance records the training runs, so the pack says how it was made.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from zsris_rt.errors import ZsrisError
from zsris_rt.pack import GeneratorDefaults, load_pack, write_manifest
from zsris_rt.text import DEFAULT_SPACY_MODEL

from .choices import CLIP_STEPS, PROPOSER_STEPS

# α of this CLIP: chosen among 0.1–0.95 on the testA split of `zsris-rt synth --seed 2026
# --images 240` with oracle masks (0.5: mIoU 80.9; the paper's 0.95, tuned for OpenAI's CLIP:
# 74.2); the README's figures are on the val split. β stays the paper's 0.5.
DEMO_ALPHA = 0.5
# The automatic mask generator's defaults for this proposer, stored in the pack. segment-anything's
# (predicted IoU > 0.88, stability ≥ 0.95) keep only the background here: this SAM's logits are
# soft and its IoU head modest. Chosen on the same testA split (full pipeline, α 0.5): 0.6 / 0.7
# with 16×16 points, mIoU 53.8, against 52.8 at 0.5 / 0.7 and 48.1 at 0.7 / 0.8; 32×32 points
# cost 3× the time for no gain.
DEMO_GENERATOR = GeneratorDefaults(points_per_side=16, pred_iou_thresh=0.6,
                                   stability_score_thresh=0.7)


@dataclass(frozen=True)
class DemoConfig:
    """Everything `build_demo_pack` needs; the same seed and threads give the same weights."""

    out: Path  # pack folder to write
    seed: int = 0
    clip_steps: int = CLIP_STEPS
    proposer_steps: int = PROPOSER_STEPS
    threads: int = 1  # torch threads: the weights depend on it
    work: Path | None = None  # keep the trained checkpoints here (and reuse them)
    force: bool = False  # replace an existing pack folder


def _trained(folder: Path, wanted: dict, say: Callable[[str], None],
             train: Callable[[], dict]) -> dict:
    """Train into `folder`, or reuse what an earlier run with the same settings left there (its
    `training.json` says how it was made): re-exporting need not retrain."""
    record = folder / "training.json"
    if record.is_file():
        facts = json.loads(record.read_text())
        if all(facts.get(key) == value for key, value in wanted.items()):
            say(f"reuse  {folder} (trained with the same settings)")
            return facts
    facts = train()
    record.write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def build_demo_pack(config: DemoConfig) -> Path:
    """Train both models (in `config.work` when given, else a temporary folder), export them into
    a staging folder beside `config.out`, record the training, then move the pack into place."""
    import torch

    from zsris_rt.progress import progress_printer

    from .clip_pack import ClipExportConfig, export_clip_pack
    from .demo_clip import train_clip
    from .demo_proposer import train_proposer
    from .sam_pack import SamExportConfig, export_sam_into_pack

    say = progress_printer()
    out = config.out
    if out.exists() and any(out.iterdir()) and not config.force:
        raise ZsrisError(f"{out} exists and is not empty (use --force to replace it)")
    if min(config.clip_steps, config.proposer_steps, config.threads) < 1:
        raise ZsrisError("--clip-steps, --proposer-steps and --threads must be at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = config.work or Path(tempfile.mkdtemp(prefix="zsris-demo-"))
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        say(f"train  CLIP, {config.clip_steps} steps (seed {config.seed}, "
            f"{config.threads} thread(s))")
        clip = _trained(work / "clip", {"steps": config.clip_steps, "seed": config.seed,
                                        "threads": config.threads}, say,
                        lambda: train_clip(work / "clip", steps=config.clip_steps, seed=config.seed,
                                           threads=config.threads, progress=say))
        say(f"train  proposer, {config.proposer_steps} steps")
        proposer = _trained(work / "proposer", {"steps": config.proposer_steps, "seed": config.seed,
                                                "threads": config.threads}, say,
                            lambda: train_proposer(work / "proposer", config.proposer_steps,
                                                   seed=config.seed, threads=config.threads,
                                                   progress=say))
        export_clip_pack(ClipExportConfig(
            checkpoint=work / "clip" / "clip.pt", out=staging, format="openai",
            alpha=DEMO_ALPHA, spacy_model=DEFAULT_SPACY_MODEL,
            tokenizer=work / "clip" / "tokenizer.json", force=True))
        export_sam_into_pack(SamExportConfig(checkpoint=work / "proposer", pack=staging,
                                             format="hf"))
        manifest = load_pack(staging).manifest
        assert manifest.proposer is not None
        manifest.proposer = replace(manifest.proposer, generator=DEMO_GENERATOR)
        manifest.provenance["training"] = {
            "command": "zsris-export demo", "seed": config.seed, "threads": config.threads,
            "torch": torch.__version__, "clip": clip, "proposer": proposer}
        write_manifest(staging, manifest)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not config.work:
            shutil.rmtree(work, ignore_errors=True)
    say(f"done   {out}")
    return out
