"""Segment everything: segment-anything's automatic mask generator on the pack's two graphs.

The encoder runs once per image; the point grid goes through the decoder in chunks of
`points_per_batch` prompts per call; each chunk is filtered (predicted IoU, then stability) before
the next, and one box NMS over the survivors decides the final set. Crop layers and small-region
clean-up are not implemented (their defaults are off).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, cast

import numpy as np

from ..backends import Backend
from ..backends.base import run_in_chunks
from ..errors import ZsrisError
from ..maskops import logit_masks, logit_statistics, mask_nms
from ..pack import GeneratorDefaults, ProposerSettings
from ..results import Proposals
from .box_nms import box_nms
from .input_frame import InputFrame, prepare_input
from .modes import ProposerMode, grid_levels, proposer_mode

# A decoder call's activations grow with its prompts (about 70 MB per prompt at SAM ViT-B and
# Hiera-tiny geometry, mostly the upscaled 256×256 maps); calls are cut so that they hold about
# this much, whatever `points_per_batch` (the filter's chunk) says.
DECODER_CALL_BYTES = 512 << 20


@dataclass
class ImageEmbedding:
    """Everything the decoder needs about one image besides prompts: the decoder's per-image
    half's outputs (the encoder's, for a one-graph decoder), and where the image sits."""

    tensors: dict[str, np.ndarray]
    frame: InputFrame


def prompts_per_call(embedding: ImageEmbedding, low_res_size: int) -> int:
    """The most prompts one decoder call takes within `DECODER_CALL_BYTES`, from an estimate of a
    prompt's float32 activations: the image tokens (g²×C, about eight live at once in the
    two-way transformer) and the two upscaled maps (C/4 channels at l/2, C/8 at l; about three
    of each)."""
    # The image tokens are the widest tensor: 1×C×g×g from the encoder, g²×C once split.
    channels, tokens = max((t.shape[1], t.shape[2] * t.shape[3]) if t.ndim == 4 else
                           (t.shape[-1], t.shape[-2]) for t in embedding.tensors.values()
                           if t.ndim >= 2)
    area = low_res_size ** 2
    floats = 8 * tokens * channels + 3 * (area // 4) * (channels // 4) + 3 * area * (channels // 8)
    return max(1, DECODER_CALL_BYTES // (4 * floats))


def point_grid(points_per_side: int) -> np.ndarray:
    """n² points (x, y) in [0, 1]², cell centres, x varying fastest (segment-anything's)."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs = np.tile(side[None, :], (points_per_side, 1))
    ys = np.tile(side[:, None], (1, points_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def generator_options(defaults: GeneratorDefaults, overrides: dict[str, object]
                      ) -> GeneratorDefaults:
    """The defaults with `overrides` applied, each checked; unknown names are refused."""
    known = asdict(defaults)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"unknown proposer option(s) {', '.join(unknown)}; "
                        f"known: {', '.join(known)}")
    options = replace(defaults, **cast(dict[str, Any], overrides))  # checked below
    for name in ("points_per_side", "points_per_batch"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ZsrisError(f"{name} must be a positive integer, got {value!r}")
    if options.max_masks is not None and (isinstance(options.max_masks, bool) or
                                          not isinstance(options.max_masks, (int, np.integer))
                                          or options.max_masks < 1):
        raise ZsrisError(f"max_masks must be a positive integer or None, got "
                         f"{options.max_masks!r}")
    for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                 "box_nms_thresh"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
                not np.isfinite(value):
            raise ZsrisError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= options.box_nms_thresh <= 1.0:
        raise ZsrisError(f"box_nms_thresh must lie in [0, 1], got {options.box_nms_thresh}")
    thresh = options.mask_nms_thresh
    if thresh is not None and (isinstance(thresh, bool) or not isinstance(
            thresh, (int, float, np.floating)) or not 0.0 <= thresh <= 1.0):
        raise ZsrisError(f"mask_nms_thresh must lie in [0, 1] or be None, got {thresh!r}")
    return options


class Proposer:
    def __init__(self, settings: ProposerSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend

    def prepare(self) -> None:
        graphs = ["prop_encoder", "prop_decoder"]
        if self.settings.decoder_state:
            graphs.insert(1, "prop_decoder_image")
        for graph in graphs:
            self.backend.prepare(graph)

    def encode(self, rgb: np.ndarray) -> ImageEmbedding:
        """Run the encoder on an RGB uint8 H×W×3 image, then the decoder's per-image half."""
        image, frame = prepare_input(rgb, self.settings)
        tensors = dict(zip(self.settings.embeddings,
                           self.backend.run("prop_encoder", {"image": image}, release=True),
                           strict=True))
        if self.settings.decoder_state:
            tensors = dict(zip(self.settings.decoder_state,
                               self.backend.run("prop_decoder_image", tensors, release=True),
                               strict=True))
        return ImageEmbedding(tensors, frame)

    def decode(self, embedding: ImageEmbedding, points: np.ndarray, labels: np.ndarray, *,
               release: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Prompts N×P×2 (image pixels) with labels N×P → low-res logits N×3×l×l, IoU N×3, in
        calls of at most `prompts_per_call` prompts; `release=False` when more decoding follows
        at once (the backend then keeps its working memory, see `Backend.run`)."""
        inputs = {**embedding.tensors,
                  "points": embedding.frame.to_input(points),
                  "labels": np.ascontiguousarray(labels, dtype=np.int64)}
        logits, iou = run_in_chunks(
            partial(self.backend.run_batched, "prop_decoder", batched=("points", "labels")),
            inputs, ("points", "labels"),
            prompts_per_call(embedding, self.settings.low_res_size), release=release)
        return logits, iou

    def generate(self, embedding: ImageEmbedding, timings: dict[str, float] | None = None,
                 mode: str | ProposerMode = "exact", **overrides: object) -> Proposals:
        """The automatic mask generator's masks for an encoded image; see `GeneratorDefaults`
        for the options (each a keyword here) and `proposer_modes` for `mode`."""
        opts = generator_options(self.settings.generator, overrides)
        plan = proposer_mode(mode)
        timings = {} if timings is None else timings
        walk = _GridWalk(self, embedding, opts)
        for level in grid_levels(opts.points_per_side, plan.coarse_to_fine):
            before = len(walk.kept)
            walk.decode(level[~walk.done[level] & ~walk.covered[level]])
            if not plan.skip_covered:
                continue
            survivors = walk.kept.survivors(opts.box_nms_thresh)
            if plan.recentre:
                walk.decode(walk.centres(survivors))
                survivors = walk.kept.survivors(opts.box_nms_thresh)
            walk.cover(survivors, plan.cover_margin)
            if plan.stop_when_idle and len(survivors) and not np.any(survivors >= before):
                break
        tick = time.perf_counter()
        masks, order, found = walk.kept.final(walk.maps, self.settings.mask_threshold, opts)
        timings["prop_decoder"] = timings.get("prop_decoder", 0.0) + walk.decode_ms
        timings["prop_filter"] = timings.get("prop_filter", 0.0) + walk.filter_ms
        timings["prop_nms"] = (time.perf_counter() - tick) * 1e3
        boxes = found["boxes"][order] + np.array([0, 0, 1, 1])  # inclusive → exclusive
        return Proposals(masks=masks, iou=found["iou"][order].astype(np.float32),
                         stability=found["stability"][order].astype(np.float32),
                         boxes=boxes.astype(np.int64), points=found["points"][order],
                         timings=timings, mode=plan.describe(), prompts=int(walk.done.sum()),
                         grid_points=len(walk.grid))


class _GridWalk:
    """One image's point grid as the generator walks it: which points are decoded, which lie
    inside the masks found so far, and the masks kept after the per-chunk filters."""

    def __init__(self, proposer: Proposer, embedding: ImageEmbedding,
                 opts: GeneratorDefaults) -> None:
        self.proposer, self.embedding, self.opts = proposer, embedding, opts
        self.threshold = proposer.settings.mask_threshold
        frame = embedding.frame
        height, width = frame.image_size
        self.maps = frame.logit_maps(proposer.settings.low_res_size)
        side = opts.points_per_side
        self.grid = (point_grid(side) * np.array([width, height])).astype(np.float32)
        # The grid is an n×n lattice: a mask is read at its points through n rows and n columns
        # of the upsampling maps, never at full resolution.
        self.rows = self.maps[0][np.minimum(self.grid[::side, 1].astype(np.int64), height - 1)]
        self.cols = self.maps[1][np.minimum(self.grid[:side, 0].astype(np.int64), width - 1)]
        self.done = np.zeros(len(self.grid), dtype=bool)
        self.covered = np.zeros(len(self.grid), dtype=bool)
        self.kept = _Kept()
        self.recentred: set[int] = set()
        self.decode_ms = self.filter_ms = 0.0

    def decode(self, indices: np.ndarray) -> None:
        """Decode the grid points `indices` in chunks of `points_per_batch`, filtering each."""
        batch = self.opts.points_per_batch
        for start in range(0, len(indices), batch):
            chunk = indices[start:start + batch]
            self.done[chunk] = True
            points = self.grid[chunk]
            tick = time.perf_counter()
            logits, iou = self.proposer.decode(self.embedding, points[:, None, :],
                                               np.ones((len(points), 1), dtype=np.int64),
                                               release=start + batch >= len(indices))
            tock = time.perf_counter()
            self.kept.add_filtered(logits, iou, points, self.maps, self.threshold, self.opts)
            self.decode_ms += (tock - tick) * 1e3
            self.filter_ms += (time.perf_counter() - tock) * 1e3

    def _at_grid(self, index: int) -> np.ndarray:
        """n² logits of kept mask `index` at the grid points."""
        return (self.rows @ self.kept.logit(index) @ self.cols.T).ravel()

    def centres(self, survivors: np.ndarray) -> np.ndarray:
        """For each surviving mask not yet seen here, the undecoded grid point where its logit
        is highest: a prompt at an object's centre gives SAM's best mask of it, while the point
        that found it may sit on its edge."""
        picked: list[int] = []
        for index in (int(i) for i in survivors if int(i) not in self.recentred):
            self.recentred.add(index)
            logits = np.where(self.done, -np.inf, self._at_grid(index))
            best = int(np.argmax(logits))
            if logits[best] > self.threshold and best not in picked:
                picked.append(best)
        return np.array(picked, dtype=np.int64)

    def cover(self, survivors: np.ndarray, margin: float) -> None:
        """Covered points: inside the core (logit above threshold + `margin`) of a mask that
        survives NMS so far."""
        self.covered[:] = False
        for index in survivors:
            self.covered |= self._at_grid(int(index)) > self.threshold + margin


class _Kept:
    """The masks that passed the per-chunk filters so far, chunk by chunk: low-res logits stay in
    their chunks (up to 256 KiB each), so only the few that pass NMS are ever gathered."""

    def __init__(self) -> None:
        self.logits: list[np.ndarray] = []
        self.rest: dict[str, list[np.ndarray]] = {k: [] for k in
                                                  ("iou", "stability", "boxes", "points")}

    def __len__(self) -> int:
        return sum(len(chunk) for chunk in self.logits)

    def add_filtered(self, logits: np.ndarray, iou: np.ndarray, points: np.ndarray,
                     maps: tuple[np.ndarray, np.ndarray], threshold: float,
                     opts: GeneratorDefaults) -> None:
        """Keep the masks of one decoded chunk that pass the predicted-IoU and stability
        filters (segment-anything's, in its order); an empty chunk keeps nothing."""
        masks_per_point = logits.shape[1]
        logits = logits.reshape(-1, *logits.shape[2:])
        iou = iou.reshape(-1)
        points = np.repeat(points, masks_per_point, axis=0)
        keep = iou > opts.pred_iou_thresh if opts.pred_iou_thresh > 0 else \
            np.ones(iou.shape, dtype=bool)
        logits, iou, points = logits[keep], iou[keep], points[keep]
        stability, boxes, area = logit_statistics(logits, maps, threshold,
                                                  opts.stability_score_offset)
        keep = area > 0  # an empty mask has nothing to score (stability drops it by default)
        if opts.stability_score_thresh > 0:
            keep &= stability >= opts.stability_score_thresh
        if not keep.any():
            return
        self.logits.append(logits[keep])
        for name, value in (("iou", iou), ("stability", stability), ("boxes", boxes),
                            ("points", points)):
            self.rest[name].append(value[keep])

    def _found(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.rest.items()}

    def survivors(self, box_nms_thresh: float) -> np.ndarray:
        """Indices of the kept masks that survive box NMS over all kept, best first."""
        if not self.logits:
            return np.zeros(0, dtype=np.int64)
        found = self._found()
        return box_nms(found["boxes"], found["iou"], box_nms_thresh)

    def logit(self, index: int) -> np.ndarray:
        """The low-res logits of kept mask `index`."""
        for chunk in self.logits:
            if index < len(chunk):
                return chunk[index]
            index -= len(chunk)
        raise IndexError(index)

    def final(self, maps: tuple[np.ndarray, np.ndarray], threshold: float,
              opts: GeneratorDefaults) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(K×H×W masks, their indices among the kept, the kept's columns): box NMS, then
        `max_masks` and the optional mask NMS."""
        if not self.logits:
            empty = np.zeros((0, *maps[0].shape[:1], maps[1].shape[0]), dtype=bool)
            return empty, np.zeros(0, dtype=np.int64), {
                "iou": np.zeros(0, np.float32), "stability": np.zeros(0, np.float32),
                "boxes": np.zeros((0, 4), np.int64), "points": np.zeros((0, 2), np.float32)}
        found = self._found()
        order = box_nms(found["boxes"], found["iou"], opts.box_nms_thresh)
        if opts.max_masks is not None and opts.mask_nms_thresh is None:
            order = order[:opts.max_masks]
        starts = np.cumsum([0] + [len(chunk) for chunk in self.logits])
        chosen = np.empty((len(order), *self.logits[0].shape[1:]), dtype=np.float32)
        for row, index in enumerate(order):
            chunk = int(np.searchsorted(starts, index, side="right")) - 1
            chosen[row] = self.logits[chunk][index - starts[chunk]]
        masks = logit_masks(chosen, maps, threshold)
        if opts.mask_nms_thresh is not None:
            # `order` is best first with ties in grid order, as mask_nms sorts: kept stays so.
            survivors = mask_nms(masks, found["iou"][order], opts.mask_nms_thresh)
            survivors = survivors[:opts.max_masks]
            order, masks = order[survivors], masks[survivors]
        return masks, order, found
