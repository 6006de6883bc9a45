"""Train the demo pack's CLIP: a tiny ViT CLIP that learns shape, colour, size and place words.

No CLIP weights can be downloaded where this project is built, so the demo pack's CLIP is trained
here, contrastively, on captions of synthetic objects: the caption/image pretraining CLIP had, in
miniature, never the referring task (no expression is chosen to single an object out; a caption
is just true of its object). Each object is seen the two ways Global-Local scoring sees it — the
whole scene with its mask on the tokens of the last blocks (SPEC.md §2) and its masked crop (§3) —
and both views are built with the runtime's own preprocessing and mask ops, so training sees the
pixels the runtime will. A caption counts as a positive for every view it is true of, so "a
circle" is not pushed away from the other circles of a batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsris_rt.bilinear import resize_bilinear
from zsris_rt.image import normalise
from zsris_rt.maskops import mask_grid, masked_crops, tight_boxes
from zsris_rt.synthetic_refer import (
    COLOURS,
    KINDS,
    MARGIN,
    ORDINALS,
    RELATIONS,
    SIZES,
    NounPhrase,
    SceneObject,
    draw_scene,
    offset,
    phrases_of,
    shortest_name,
)

from .choices import CLIP_STEPS
from .clip_model import ClipConfig, ClipModel, random_init_
from .compact_vocab import compact_clip_tokenizer
from .reference import IMAGENET_MEAN, IMAGENET_STD
from .reproducible import reproducible

PLACES = ("on the left", "on the right", "at the top", "at the bottom")
BACKGROUND = "the background"
# Every word a caption or a `zsris-rt synth` expression uses: the compact vocabulary's coverage.
WORDS = [*KINDS, *COLOURS, *SIZES, *ORDINALS, *RELATIONS, *PLACES, BACKGROUND,
         "a", "to", "from", "leftmost", "rightmost", "shape"]
TRAIN_CONTEXT = 16  # longest caption in tokens; the model keeps CLIP's 77 positions
DEMO_CONFIG = dict(embed_dim=64, image_size=224, patch_size=32, vision_width=64, vision_layers=4,
                   vision_heads=1, context_length=77, text_width=64, text_layers=2, text_heads=1)
MASKED_BLOCKS = 3  # the exporter's default k


@dataclass(frozen=True)
class Caption:
    """A caption and the facts it states: a noun phrase, and optionally where the object is
    (`place`, one of PLACES) or how it lies to another object (`relation`, `anchor`)."""

    text: str
    phrase: NounPhrase | None  # None: the background
    place: str | None = None
    relation: str | None = None
    anchor: NounPhrase | None = None

    def holds(self, obj: SceneObject | None, scene: list[SceneObject], size: tuple[int, int],
              crop: bool = False) -> bool | None:
        """Whether the caption is true of `obj` in `scene` (an H×W image; `obj` None is the
        background). Seen as a `crop`, an object shows its kind and colour only (the crop is
        squashed to a square, out of its scene): a caption that also states its size or where it
        is gives None there, cannot tell, when the kind and colour fit."""
        if obj is None or self.phrase is None:
            return obj is None and self.phrase is None
        if not NounPhrase(self.phrase.kind, self.phrase.colour).matches(obj):
            return False
        if crop:
            return None if self.phrase.size or self.place or self.relation else True
        if not self.phrase.matches(obj):
            return False
        if self.place is not None and not _is_at(obj, self.place, size):
            return False
        if self.relation is None or self.anchor is None:
            return True
        return any(o is not obj and self.anchor.matches(o) and offset(obj, o, self.relation) > 0
                   for o in scene)


def _is_at(obj: SceneObject, place: str, size: tuple[int, int]) -> bool:
    """Centroid in the outer third of the image on that side."""
    (x, y), (h, w) = obj.centroid, size
    return {"on the left": x < w / 3, "on the right": x > 2 * w / 3,
            "at the top": y < h / 3, "at the bottom": y > 2 * h / 3}[place]


def caption_for(rng: np.random.Generator, obj: SceneObject, scene: list[SceneObject],
                size: tuple[int, int], spatial: bool) -> Caption:
    """A random true caption of `obj`: a noun phrase with or without a determiner, and when
    `spatial` (the whole-scene view, which has context), sometimes a place or a relation; without,
    only what a crop shows (kind, colour)."""
    phrases = [p for p in phrases_of(obj, full=False) if spatial or p.size is None]
    phrase = phrases[int(rng.integers(len(phrases)))]
    text = ("the ", "a ", "")[int(rng.integers(3))] + str(phrase)
    if spatial and rng.random() < 0.4:
        places = [p for p in PLACES if _is_at(obj, p, size)]
        margin = MARGIN * min(size)
        relations = [(r, name) for o in scene if o is not obj
                     for r in RELATIONS if offset(obj, o, r) >= margin
                     for name in [shortest_name(o, scene)] if name is not None]
        if places and (not relations or rng.random() < 0.5):
            place = places[int(rng.integers(len(places)))]
            return Caption(f"{text} {place}", phrase, place=place)
        if relations:
            relation, anchor = relations[int(rng.integers(len(relations)))]
            return Caption(f"{text} {relation} the {anchor}", phrase, relation=relation,
                           anchor=anchor)
    return Caption(text, phrase)


@dataclass
class Batch:
    scenes: torch.Tensor  # S×3×s×s, the trunk's input
    scene_index: torch.Tensor  # G: which scene each whole-scene view belongs to
    grids: torch.Tensor  # G×g×g soft masks of SPEC §2
    crops: torch.Tensor  # L×3×s×s masked crops of SPEC §3
    ids: torch.Tensor  # C×TRAIN_CONTEXT token ids of the batch's distinct captions
    end_index: torch.Tensor  # C
    positives: torch.Tensor  # (G + L)×C bool: caption c is true of view v
    unknown: torch.Tensor  # (G + L)×C bool: view v cannot tell (left out of the loss)


def make_batch(rng: np.random.Generator, scenes: int,
               tokenize: Callable[[list[str]], list[list[int]]], config: ClipConfig,
               pad: int) -> Batch:
    """`scenes` new scenes; every object (and the background) of each gives one whole-scene view
    and one crop, each with its own caption; positives are every caption true of a view."""
    fill = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    squares, grids, crops = [], [], []
    views: dict[bool, list] = {True: [], False: []}  # whole-scene views, then crop views
    for _ in range(scenes):
        scene = draw_scene(rng)
        size = scene.pixels.shape[:2]
        objects: list[SceneObject | None] = [*scene.objects, None]
        union = np.any([o.mask for o in scene.objects], axis=0)
        masks = np.stack([o.mask for o in scene.objects] + [~union])
        xn = normalise(scene.pixels, IMAGENET_MEAN, IMAGENET_STD)
        squares.append(resize_bilinear(xn, (config.image_size, config.image_size)))
        grids.append(mask_grid(masks, config.grid))
        crops.append(masked_crops(xn, masks, tight_boxes(masks), fill, config.image_size))
        for spatial in (True, False):
            for obj in objects:
                caption = (Caption(BACKGROUND, None) if obj is None else
                           caption_for(rng, obj, scene.objects, size, spatial))
                views[spatial].append((obj, scene.objects, size, not spatial, caption))
    ordered = views[True] + views[False]  # the order of the feature rows
    captions = list(dict.fromkeys(v[-1] for v in ordered))
    truth = [[c.holds(obj, objs, size, crop) for c in captions]
             for obj, objs, size, crop, _ in ordered]
    positives = torch.tensor([[t is True for t in row] for row in truth])
    unknown = torch.tensor([[t is None for t in row] for row in truth])
    ids = torch.full((len(captions), TRAIN_CONTEXT), pad, dtype=torch.long)
    end = torch.empty(len(captions), dtype=torch.long)
    for row, tokens in enumerate(tokenize([c.text for c in captions])):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        end[row] = len(tokens) - 1
    counts = [len(g) for g in grids]
    return Batch(torch.from_numpy(np.stack(squares)),
                 torch.repeat_interleave(torch.arange(scenes), torch.tensor(counts)),
                 torch.from_numpy(np.concatenate(grids)), torch.from_numpy(np.concatenate(crops)),
                 ids, end, positives, unknown)


def global_features(model: ClipModel, scenes: torch.Tensor, scene_index: torch.Tensor,
                    grids: torch.Tensor, masked_blocks: int) -> torch.Tensor:
    """SPEC §2 with gradients: the trunk once per scene, then each view's last k blocks with its
    soft mask multiplied into the patch tokens before every block."""
    visual = model.visual
    layers = len(visual.transformer.resblocks)
    x = visual.run_blocks(visual.embed(scenes), 0, layers - masked_blocks)[scene_index]
    weights = grids.flatten(1)[:, :, None]
    for block in visual.transformer.resblocks[layers - masked_blocks:]:
        x = block(torch.cat([x[:, :1], x[:, 1:] * weights], dim=1))
    return visual.pool(x)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor,
                        unknown: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every true caption of a view (and every view a caption is true
    of) is a positive: −log of the probability mass on the positives, both ways; pairs the view
    cannot tell are neither positive nor negative."""
    logits = logits.masked_fill(unknown, float("-inf"))
    masked = logits.masked_fill(~positives, float("-inf"))
    views = torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)
    texts = torch.logsumexp(logits, 0) - torch.logsumexp(masked, 0)
    return 0.5 * (views.mean() + texts.mean())


def train_clip(out: Path, steps: int = CLIP_STEPS, seed: int = 0, scenes_per_step: int = 8,
               lr: float = 1e-3, threads: int = 1,
               progress: Callable[[str], None] | None = None) -> dict:
    """Train, then write `out/clip.pt` (OpenAI-layout state dict) and `out/tokenizer.json` for
    `zsris-export clip out/clip.pt --tokenizer out/tokenizer.json`; returns the run's facts.
    The same arguments (`threads` included) give the same bytes."""
    with reproducible(seed, threads):
        facts = _train(out, steps, seed, scenes_per_step, lr, progress)
    return {**facts, "threads": threads}


def _train(out: Path, steps: int, seed: int, scenes_per_step: int, lr: float,
           progress: Callable[[str], None] | None) -> dict:
    tokenizer = compact_clip_tokenizer(WORDS)
    tokenizer.no_padding()
    config = ClipConfig(vocab_size=tokenizer.get_vocab_size(), **DEMO_CONFIG)
    model = random_init_(ClipModel(config), seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "logit_scale"]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "logit_scale"]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                   {"params": rest, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: min(1.0, (i + 1) / warmup) *
                                                 0.5 * (1 + math.cos(math.pi * i / steps)))

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts)]

    start, last_report, losses = time.perf_counter(), 0.0, []
    model.train()
    for step in range(steps):
        batch = make_batch(np.random.default_rng([seed, 1, step]), scenes_per_step, tokenize,
                           config, pad=0)
        views = torch.cat([global_features(model, batch.scenes, batch.scene_index, batch.grids,
                                           MASKED_BLOCKS),
                           model.encode_image(batch.crops)])
        texts = model.encode_text(batch.ids, batch.end_index)
        logits = model.logit_scale.exp() * F.normalize(views, dim=-1) @ \
            F.normalize(texts, dim=-1).T
        loss = multi_positive_loss(logits, batch.positives, batch.unknown)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        elapsed = time.perf_counter() - start
        if progress is not None and (elapsed - last_report >= 20 or step == steps - 1):
            last_report = elapsed
            rate = (step + 1) / elapsed
            progress(f"clip   step {step + 1}/{steps}  loss {np.mean(losses[-50:]):.3f}  "
                     f"{rate:.1f} steps/s  ETA {(steps - step - 1) / rate:.0f}s")
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "clip.pt")
    tokenizer.save(str(out / "tokenizer.json"))
    return {"steps": steps, "seed": seed, "scenes_per_step": scenes_per_step, "lr": lr,
            "seconds": round(time.perf_counter() - start, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocabulary": config.vocab_size}
