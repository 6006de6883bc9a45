"""The benchmark's workers that need torch (so they live on the export side, never in the runtime):
exporting a random-weight pack, and timing the PyTorch-eager reference (export/reference.py,
export/reference_amg.py) on the same workload as the runtime: decode the JPEG, parse and tokenise,
run, choose. The reference's stages are timed by wrapping its own methods, so it runs unchanged.

Each runs in a subprocess of its own, started by zsris_rt.bench.workers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.errors import BenchError
from ..bench.machine import heavy_modules_loaded, peak_rss
from ..bench.packs import RandomPack, split_proposer
from ..bench.stats import Json
from ..bench.timing import latency, timed_runs


class StageClock:
    """Wraps methods of an object to add their ms to a stage; the ones wrapped with `memo` return
    their first result again while `memoise` is on (the reference's image features computed once
    per scene, like the runtime's `Scene`; never the text features, which change per query)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.memo: dict[str, Any] = {}
        self.memoise = False

    def wrap(self, owner: Any, method: str, stage: str, memo: bool = False) -> None:
        fn: Callable[..., Any] = getattr(owner, method)

        def timed(*args: Any) -> Any:
            if memo and self.memoise and method in self.memo:
                return self.memo[method]
            start = time.perf_counter()
            out = fn(*args)
            self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3
            if memo:
                self.memo[method] = out
            return out

        setattr(owner, method, timed)

    def take(self) -> dict[str, float]:
        """The stage times since the last take; forgets the memoised values."""
        taken, self.ms = self.ms, {}
        self.memo.clear()
        return taken


def _threads(spec: Json) -> None:
    import torch

    torch.set_num_threads(spec["threads"])


def _process() -> Json:
    import torch

    return {"rss": peak_rss(), "torch_threads": torch.get_num_threads(),
            "heavy_modules_loaded": heavy_modules_loaded(),
            "torch_in_sys_modules": "torch" in sys.modules}


def clip_runs(spec: Json) -> Json:
    """GlobalLocalReference.run after decode + parse + tokenise, for each K; then one scene
    (image features memoised) queried with N expressions, for each N."""
    import numpy as np
    import torch

    _threads(spec)
    from zsris_rt.export.checkpoints import load_clip
    from zsris_rt.export.reference import GlobalLocalReference
    from zsris_rt.image import read_image
    from zsris_rt.pack import load_pack
    from zsris_rt.text import ExpressionParser
    from zsris_rt.tokenizer import ClipTokenizer

    start = time.perf_counter()
    s = load_pack(spec["pack"], verify=False).clip
    parser = ExpressionParser(s.spacy_model)
    tokenizer = ClipTokenizer(Path(spec["pack"]) / "tokenizer.json", s.context_length,
                              s.start_token, s.end_token, s.pad_token)
    reference = GlobalLocalReference(load_clip(spec["checkpoint"]).model, s.masked_blocks,
                                     s.alpha, s.beta, tuple(s.mean), tuple(s.std), tuple(s.fill))
    out: Json = {"startup_s": time.perf_counter() - start, "rss_after_load": peak_rss()}
    clock = StageClock()
    for method, stage in (("normalise", "preprocess"), ("global_features", "global"),
                          ("local_features", "local")):
        clock.wrap(reference, method, stage, memo=True)
    clock.wrap(reference, "text_features", "text_tower")
    masks = np.load(spec["masks"])

    def ids(phrase: str) -> tuple[Any, Any]:
        batch = tokenizer.encode([phrase])
        return torch.from_numpy(batch.ids), torch.from_numpy(batch.end_index)

    def query(rgb: Any, given: Any, text: str) -> Any:
        """Parse and tokenise (timed as "text_parse"), then run (timed as "score")."""
        start = time.perf_counter()
        phrases = parser.parse(text)
        sentence, noun_phrase = ids(phrases.sentence), ids(phrases.noun_phrase)
        clock.ms["text_parse"] = clock.ms.get("text_parse", 0.0) + \
            (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        result = reference.run(rgb, given, sentence, noun_phrase)
        clock.ms["score"] = clock.ms.get("score", 0.0) + (time.perf_counter() - start) * 1e3
        return result

    def decode() -> Any:
        start = time.perf_counter()
        rgb = read_image(spec["image"])
        clock.ms["decode"] = (time.perf_counter() - start) * 1e3
        return rgb

    def before() -> None:
        parser.clear_cache()
        clock.take()

    out["ks"] = {}
    for k in spec["ks"]:
        timings: list[dict[str, float]] = []

        def segment(given: Any = masks[:k], timings: list[dict[str, float]] = timings) -> Any:
            result = query(decode(), given, spec["text"])
            timings.append(_score_apart(clock.take()))
            return result

        times, results, extra = timed_runs(segment, before, spec["warmup"], spec["runs"])
        out["ks"][str(k)] = {**latency(times, extra, timings[spec["warmup"]:]),
                             "scores": [float(v) for v in results[-1].scores],
                             "index": results[-1].index}
    clock.memoise = True
    out["expressions"] = {}
    for n in spec["expressions"]:
        parts: list[dict[str, float]] = []

        def scene_and_queries(texts: list[str] = spec["texts"][:n],
                              parts: list[dict[str, float]] = parts,
                              given: Any = masks[:spec["expressions_k"]]) -> None:
            start = time.perf_counter()
            rgb = decode()
            for text in texts:
                query(rgb, given, text)
            stages = _score_apart(clock.take())
            encode = sum(stages.get(s, 0.0) for s in ("decode", "preprocess", "global", "local"))
            parts.append({"encode": encode,
                          "queries": (time.perf_counter() - start) * 1e3 - encode})

        times, _, extra = timed_runs(scene_and_queries, before, spec["warmup"], spec["runs"])
        record = latency(times, extra, parts[spec["warmup"]:])
        record["per_expression_ms"] = record["stages_ms"]["queries"]["median"] / n
        out["expressions"][str(n)] = record
    return {**out, **_process()}


def _score_apart(stages: dict[str, float]) -> dict[str, float]:
    """"score" was timed around all of `reference.run`: keep only what its wrapped stages did
    not take (the fusion, the cosine and the argmax); "text" = parse + tokenise + text tower."""
    out = dict(stages)
    tower = out.pop("text_tower", 0.0)
    inside = sum(out.get(s, 0.0) for s in ("preprocess", "global", "local")) + tower
    out["score"] = out.get("score", 0.0) - inside
    out["text"] = out.pop("text_parse", 0.0) + tower
    return out


def proposer_runs(spec: Json) -> Json:
    """reference_generate on the decoded JPEG: the encoder (preprocess + get_image_embeddings)
    apart from the rest (decoder calls, mask post-processing, NMS)."""
    _threads(spec)
    from zsris_rt.export import reference_amg
    from zsris_rt.export.sam_checkpoints import load_proposer
    from zsris_rt.image import read_image
    from zsris_rt.pack import load_pack

    start = time.perf_counter()
    settings = load_pack(spec["pack"], verify=False).proposer
    model = load_proposer(spec["checkpoint"]).model
    out: Json = {"startup_s": time.perf_counter() - start, "rss_after_load": peak_rss()}
    clock = StageClock()
    clock.wrap(reference_amg, "preprocess", "prop_encoder")
    clock.wrap(model, "get_image_embeddings", "prop_encoder")
    timings: list[dict[str, float]] = []
    kept: list[int] = []

    def propose() -> None:
        start = time.perf_counter()
        rgb = read_image(spec["image"])
        decoded = time.perf_counter()
        proposals = reference_amg.reference_generate(model, settings, rgb, **spec["options"])
        stages = clock.take()
        stages["decode"] = (decoded - start) * 1e3
        stages["prop_rest"] = (time.perf_counter() - decoded) * 1e3 - stages["prop_encoder"]
        timings.append(stages)
        kept.append(len(proposals))

    times, _, extra = timed_runs(propose, clock.take, spec["warmup"], spec["runs"])
    out["propose"] = {**latency(times, extra, timings[spec["warmup"]:]),
                      "masks_kept": kept[spec["warmup"]:]}
    return {**out, **_process()}


def export_random_pack(spec: Json) -> Json:
    """Worker (torch): write the random checkpoints unless present, then export the pack."""
    from .cli import main as export_main
    from .random_checkpoint import write_random_clip, write_random_sam

    target = RandomPack(Path(spec["root"]), spec["clip_geometry"], spec["proposer"], spec["seed"])
    timings: Json = {}
    start = time.perf_counter()
    clip = target.clip_checkpoint
    if not (clip.is_file() or (clip / "config.json").is_file()):
        write_random_clip(target.clip_folder, target.clip_geometry, target.seed)
    if export_main(["clip", str(target.clip_checkpoint), "--out", str(target.pack),
                    "--force"]) != 0:
        raise BenchError("zsris-export clip failed")
    timings["clip_s"] = time.perf_counter() - start
    if target.proposer:
        start = time.perf_counter()
        if not (target.proposer_checkpoint / "config.json").is_file():
            write_random_sam(target.proposer_checkpoint, *split_proposer(target.proposer),
                             target.seed)
        if export_main(["sam", str(target.proposer_checkpoint), "--pack", str(target.pack),
                        "--force"]) != 0:
            raise BenchError("zsris-export sam failed")
        timings["proposer_s"] = time.perf_counter() - start
    return timings
