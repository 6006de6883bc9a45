"""`zsris-export demo`: train the demo pack's two models here and export them into a pack.

The committed `engines/demo` is this command's output: a tiny CLIP (demo_clip.py) and a tiny SAM
(demo_proposer.py), both trained on synthetic scenes on the CPU, then exported by the same
`zsris-export clip` and `zsris-export sam` a real checkpoint goes through. The manifest's
provenance records the training runs, so the pack says how it was made.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
# The automatic mask generator's defaults for this proposer, stored in the pack: chosen on testA
# of `zsris-rt synth --seed 2026 --images 240`, full pipeline, α 0.5, 16×16 points
# (benchmarks/demo_generator_tuning.py → results/demo-generator-tuning.json): predicted IoU 0.75,
# stability 0.85, mIoU 72.1 at 5.3 masks per image, the fewest masks within 0.5 of the best (0.6
# / 0.85, 72.4 at 6.3). segment-anything's 0.88 / 0.95 keep 1.9 masks per image (mIoU 20.4): this
# SAM 2's logits are not sharp enough for 0.95 stability.
DEMO_GENERATOR = GeneratorDefaults(points_per_side=16, pred_iou_thresh=0.75,
                                   stability_score_thresh=0.85)


@dataclass(frozen=True)
class DemoConfig:
    """Everything `build_demo_pack` needs; the same seed and threads give the same weights."""

    out: Path  # pack folder to write
    seed: int = 0
    clip_steps: int = CLIP_STEPS
    proposer_steps: int = PROPOSER_STEPS
    threads: int = 1  # torch threads per model: the weights depend on it
    jobs: int = 2  # models trained side by side in processes of their own (weights unchanged)
    work: Path | None = None  # keep the trained checkpoints here (and reuse them)
    force: bool = False  # replace an existing pack folder


def _reused(folder: Path, wanted: dict) -> dict | None:
    """What an earlier run with the same settings left in `folder` (its `training.json` says how
    it was made), so that re-exporting need not retrain; None when there is nothing to reuse."""
    record = folder / "training.json"
    if not record.is_file():
        return None
    facts = json.loads(record.read_text())
    return facts if all(facts.get(key) == value for key, value in wanted.items()) else None


def _train(model: str, folder: Path, steps: int, seed: int, threads: int, origin: float) -> dict:
    """Train one of the two demo models into `folder` and record how: the unit of work a worker
    process runs (its progress lines are stamped from the parent's `origin` and tagged)."""
    from zsris_rt.progress import progress_printer

    stamped = progress_printer(origin)

    def say(message: str) -> None:
        stamped(f"{model}: {message}")

    if model == "clip":
        from .demo_clip import train_clip

        facts = train_clip(folder, steps=steps, seed=seed, threads=threads, progress=say)
    else:
        from .demo_proposer import train_proposer

        facts = train_proposer(folder, steps, seed=seed, threads=threads, progress=say)
    (folder / "training.json").write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def _train_both(config: DemoConfig, work: Path, say: Callable[[str], None], origin: float
                ) -> dict[str, dict]:
    """Both models' training facts: reused where `work` has them, else trained, side by side in
    `config.jobs` worker processes (each pins its own threads, so the weights do not depend on
    the number of jobs)."""
    steps = {"clip": config.clip_steps, "proposer": config.proposer_steps}
    facts: dict[str, dict] = {}
    for model, count in steps.items():
        wanted: dict[str, object] = {"steps": count, "seed": config.seed,
                                     "threads": config.threads}
        if model == "proposer":  # its recipe changed since v1; the CLIP's has not
            from .demo_proposer import recipe

            wanted["recipe"] = recipe()
        reused = _reused(work / model, wanted)
        if reused is not None:
            say(f"reuse  {work / model} (trained with the same settings)")
            facts[model] = reused
    todo = [model for model in steps if model not in facts]
    for model in todo:
        say(f"train  {model}, {steps[model]} steps (seed {config.seed}, "
            f"{config.threads} thread(s))")
    arguments = [(model, work / model, steps[model], config.seed, config.threads, origin)
                 for model in todo]
    if config.jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(config.jobs, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train, *args) for args in arguments]
            facts.update(zip(todo, (future.result() for future in futures), strict=True))
    else:
        facts.update((model, _train(*args)) for model, args in zip(todo, arguments, strict=True))
    return facts


def build_demo_pack(config: DemoConfig) -> Path:
    """Train both models (in `config.work` when given, else a temporary folder), export them into
    a staging folder beside `config.out`, record the training, then move the pack into place."""
    import torch

    from zsris_rt.progress import progress_printer

    from .clip_pack import ClipExportConfig, export_clip_pack
    from .sam_pack import SamExportConfig, export_sam_into_pack

    origin = time.perf_counter()
    say = progress_printer(origin)
    out = config.out
    if out.exists() and any(out.iterdir()) and not config.force:
        raise ZsrisError(f"{out} exists and is not empty (use --force to replace it)")
    if min(config.clip_steps, config.proposer_steps, config.threads, config.jobs) < 1:
        raise ZsrisError("--clip-steps, --proposer-steps, --threads and --jobs must be at least 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = config.work or Path(tempfile.mkdtemp(prefix="zsris-demo-"))
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        trained = _train_both(config, work, say, origin)
        clip, proposer = trained["clip"], trained["proposer"]
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
