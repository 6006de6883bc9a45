"""PyTorch reference of the proposer's "segment everything": the result the runtime is held to.

segment-anything's `SamAutomaticMaskGenerator` with one crop (crop_n_layers=0), no small-region
cleanup and binary masks, around a transformers `SamModel` / `Sam2Model`, plus the project's
declared choices: a float, antialiased torch resize instead of PIL's, and empty masks dropped
before NMS. Written from the official code, one plain step per function; it shares no code with
the runtime. Comparisons keep the official dtypes on purpose, because they decide ties at a
threshold: predicted IoU and stability meet their thresholds in float32 (torch's rule for a
tensor against a Python float), box IoU meets the NMS threshold in float64 (torchvision's C++).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsris_rt.pack import GeneratorDefaults, ProposerSettings


@dataclass
class ReferenceProposals:
    """The generator's masks, best predicted IoU first, with what the runtime must also report."""

    masks: torch.Tensor  # K×H×W bool
    iou: torch.Tensor  # K float32, predicted IoU
    stability: torch.Tensor  # K float32
    boxes: torch.Tensor  # K×4 int64, [x0, y0, x1, y1) with x1, y1 exclusive (tight box)
    points: torch.Tensor  # K×2 float32, the grid point (image coordinates) behind each mask

    def __len__(self) -> int:
        return len(self.iou)


def input_shape(height: int, width: int, settings: ProposerSettings) -> tuple[int, int]:
    """The (h, w) the image is resized to before padding: official `get_preprocess_shape`."""
    size = settings.input_size
    if settings.resize == "square":
        return size, size
    if settings.resize != "longest":
        raise ValueError(f"unknown resize mode {settings.resize!r}")
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(image: np.ndarray, settings: ProposerSettings) -> torch.Tensor:
    """H×W×3 uint8 RGB → the 1×3×S×S encoder input: normalise, resize, pad bottom-right with 0."""
    height, width = image.shape[:2]
    mean = torch.tensor(settings.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(settings.std, dtype=torch.float32)[:, None, None]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32) / 255
    x = (x - mean) / std
    new_h, new_w = input_shape(height, width, settings)
    x = F.interpolate(x[None], (new_h, new_w), mode=settings.resize_filter, align_corners=False,
                      antialias=True)
    size = settings.input_size
    return F.pad(x, (0, size - new_w, 0, size - new_h))


def point_grid(points_per_side: int, height: int, width: int) -> torch.Tensor:
    """The official `build_point_grid` in image coordinates, N×2 (x, y) float64, x fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side, indexing="xy")
    unit = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    return torch.from_numpy(unit * np.array([width, height]))


def to_encoder_frame(points: torch.Tensor, height: int, width: int,
                     settings: ProposerSettings) -> torch.Tensor:
    """Image coordinates → the encoder input's pixel frame, float32, as each official predictor.

    SAM's `ResizeLongestSide.apply_coords` works in float64 and the model rounds once; SAM 2's
    `transform_coords` rounds the points to float32 first and divides and scales in float32.
    """
    if settings.resize == "longest":
        new_h, new_w = input_shape(height, width, settings)
        scaled = points.to(torch.float64) * torch.tensor([new_w / width, new_h / height],
                                                         dtype=torch.float64)
        return scaled.to(torch.float32)
    if settings.resize != "square":
        raise ValueError(f"unknown resize mode {settings.resize!r}")
    unit = points.to(torch.float32) / torch.tensor([width, height], dtype=torch.float32)
    return unit * settings.input_size


def postprocess_logits(logits: torch.Tensor, height: int, width: int,
                       settings: ProposerSettings) -> torch.Tensor:
    """B×C×l×l low-res logits → B×C×H×W: official `Sam.postprocess_masks` / SAM 2's.

    "longest" goes through the padded S×S frame so the padding can be cut off before the final
    resize; "square" has no padding and goes straight to the image size.
    """
    if settings.resize == "square":
        return F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
    size = settings.input_size
    new_h, new_w = input_shape(height, width, settings)
    x = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
    x = x[..., :new_h, :new_w]
    return F.interpolate(x, (height, width), mode="bilinear", align_corners=False)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks cut at threshold ± offset (official `calculate_stability_score`).

    The high cut lies inside the low one, so the IoU is a ratio of counts; 0/0 gives NaN, which
    fails every `>=` test, as the official code's does.
    """
    high = (logits > threshold + offset).sum((-2, -1))
    low = (logits > threshold - offset).sum((-2, -1))
    return high.to(torch.float32) / low.to(torch.float32)


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """K×H×W bool → K×4 int64 inclusive [x0, y0, x1, y1]; an empty mask gives [0, 0, 0, 0]."""
    height, width = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)
    ys = torch.arange(height)
    xs = torch.arange(width)
    boxes = torch.stack([
        torch.where(cols, xs, width).amin(-1),
        torch.where(rows, ys, height).amin(-1),
        torch.where(cols, xs, -1).amax(-1),
        torch.where(rows, ys, -1).amax(-1),
    ], dim=-1)
    return torch.where(rows.any(-1)[:, None], boxes, 0)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Indices kept by greedy NMS, highest score first (torchvision `nms` on one category).

    Boxes are inclusive integer xyxy used as float32, area (x1 - x0)·(y1 - y0) without the +1, as
    torchvision computes it; a box is dropped when its IoU with a kept box is above the threshold.
    Ties in score keep the earlier box first (a stable sort: torchvision's sort is not stable).
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    x0, y0, x1, y1 = boxes[order].to(torch.float32).unbind(-1)
    areas = (x1 - x0) * (y1 - y0)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= iou.to(torch.float64) > iou_thresh
    return order[torch.tensor(keep, dtype=torch.int64)]


def _empty(height: int, width: int) -> ReferenceProposals:
    return ReferenceProposals(masks=torch.zeros(0, height, width, dtype=torch.bool),
                              iou=torch.zeros(0), stability=torch.zeros(0),
                              boxes=torch.zeros(0, 4, dtype=torch.int64), points=torch.zeros(0, 2))


def _process_chunk(model: nn.Module, embeddings: Any, points: torch.Tensor, height: int,
                   width: int, settings: ProposerSettings,
                   generator: GeneratorDefaults) -> ReferenceProposals:
    """One decoder call and the per-mask filters of the official `_process_batch`."""
    n = len(points)
    prompts = to_encoder_frame(points, height, width, settings)
    out = model(image_embeddings=embeddings, input_points=prompts[None, :, None, :],
                input_labels=torch.ones(1, n, 1, dtype=torch.int64), multimask_output=True)
    logits = out.pred_masks[0].flatten(0, 1)  # point-major: point 0's three masks first
    iou = out.iou_scores[0].flatten(0, 1)
    mask_points = points.to(torch.float32).repeat_interleave(out.pred_masks.shape[2], dim=0)
    # The IoU filter reads no mask, so applying it before the upsampling changes nothing.
    if generator.pred_iou_thresh > 0:
        keep = iou > generator.pred_iou_thresh
        logits, iou, mask_points = logits[keep], iou[keep], mask_points[keep]
    if len(iou) == 0:
        return _empty(height, width)
    logits = postprocess_logits(logits[:, None], height, width, settings)[:, 0]
    threshold = settings.mask_threshold
    stability = stability_score(logits, threshold, generator.stability_score_offset)
    keep = torch.ones(len(iou), dtype=torch.bool)
    if generator.stability_score_thresh > 0:
        keep = stability >= generator.stability_score_thresh
    masks = logits[keep] > threshold
    keep_masks = masks.flatten(1).any(1)  # project choice: empty masks go before NMS
    masks = masks[keep_masks]
    return ReferenceProposals(masks=masks, iou=iou[keep][keep_masks],
                              stability=stability[keep][keep_masks], boxes=mask_to_box(masks),
                              points=mask_points[keep][keep_masks])


@torch.no_grad()
def reference_generate(model: nn.Module, settings: ProposerSettings, image: np.ndarray,
                       **overrides: Any) -> ReferenceProposals:
    """All masks of `image` (H×W×3 uint8 RGB), best predicted IoU first, boxes exclusive.

    `overrides` are `GeneratorDefaults` fields replacing `settings.generator`'s; another name is
    a TypeError.
    """
    generator = dataclasses.replace(settings.generator, **overrides)
    height, width = image.shape[:2]
    embeddings = model.get_image_embeddings(preprocess(image, settings))
    points = point_grid(generator.points_per_side, height, width)
    step = generator.points_per_batch
    chunks = [_process_chunk(model, embeddings, points[start:start + step], height, width,
                             settings, generator) for start in range(0, len(points), step)]
    boxes = torch.cat([c.boxes for c in chunks])
    iou = torch.cat([c.iou for c in chunks])
    keep = box_nms(boxes, iou, generator.box_nms_thresh)
    if generator.max_masks is not None:
        keep = keep[:generator.max_masks]
    return ReferenceProposals(masks=torch.cat([c.masks for c in chunks])[keep], iou=iou[keep],
                              stability=torch.cat([c.stability for c in chunks])[keep],
                              boxes=boxes[keep] + torch.tensor([0, 0, 1, 1]),
                              points=torch.cat([c.points for c in chunks])[keep])
