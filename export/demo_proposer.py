"""Train the demo pack's proposer: a tiny SAM 2, trained here on synthetic scenes, point prompts.

No real SAM checkpoint can be downloaded where the demo pack is built, and a random SAM proposes
noise, so the pack's proposer is trained from scratch on `synthetic_refer` scenes with SAM's recipe
(simplified): one positive point per prompt, three masks per prompt with the loss on the best one,
and an IoU head taught the true IoU of all three so that the automatic mask generator's filters
work. Inputs go through the runtime's own `prepare_input`, so training sees the runtime's pixels.
The result is a Hugging Face `Sam2Model` folder (or `SamModel`, with `family="sam"`) for the
ordinary exporter (`zsris-export sam`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsris_rt.pack import ProposerSettings
from zsris_rt.proposer.input_frame import InputFrame, prepare_input
from zsris_rt.synthetic_refer import TOUCH_GAP, SyntheticScene, draw_scene, touching_same_colour

from .choices import PROPOSER_STEPS
from .onnx_sam import proposer_settings
from .reproducible import reproducible

# Sam2Config overrides: a 4-stage Hiera (widths 32-256, 6 blocks) at 256 px, its FPN at 64, and
# SAM 2's decoder at width 64, whose upscaling adds the stride-4 and stride-8 maps back in (SAM's
# has only the stride-16 embedding, and cut small shapes and touching ones coarsely): 1.4 M
# parameters. Chosen on held-out point prompts at 1500 steps each (best-of-3 IoU): SAM, width 64,
# 0.65; this at width 16, 0.72; this, 0.76; focal + dice instead of BCE + dice (width 16), 0.66.
DEMO_FAMILY = "sam2"
DEMO_GEOMETRY: dict[str, dict] = dict(
    vision_config=dict(
        backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[256, 256],
                             hidden_size=32, blocks_per_stage=[1, 2, 2, 1],
                             embed_dim_per_stage=[32, 64, 128, 256],
                             num_attention_heads_per_stage=[1, 2, 4, 8],
                             window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[4],
                             window_positional_embedding_background_size=[4, 4]),
        backbone_channel_list=[256, 128, 64, 32],
        backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]], fpn_hidden_size=64),
    prompt_encoder_config=dict(hidden_size=64, image_size=256, patch_size=16),
    mask_decoder_config=dict(hidden_size=64, mlp_dim=128, num_attention_heads=4,
                             iou_head_hidden_dim=64),
)
PROMPTS_PER_SCENE = 16
BACKGROUND_PROMPTS = 0.2  # share of prompts on the background, whose target is the background
# Shapes touching a shape of their own colour are one blob of pixels, split only by shape; their
# prompts are drawn (1 + TOUCHING_WEIGHT)× as often as the other shapes' (hard examples).
TOUCHING_WEIGHT = 4.0
# The image encoder starts as a random feature map that the decoder first learns to read; trained
# from the first step, it stalls the decoder (held-out best-of-3 0.45 against 0.79 frozen, 1500
# steps). So it stays frozen for the first ENCODER_FROZEN of the steps, then trains at
# ENCODER_LR_SCALE × the decoder's learning rate.
ENCODER_FROZEN = 1 / 3
ENCODER_LR_SCALE = 0.1
POSITIONAL_SCALE = 1.0  # std of the prompt/image positional encoding's random frequencies
WARMUP = 0.05  # of the steps, linear warm-up before the cosine decay


def recipe() -> dict[str, float]:
    """The settings besides steps, seed and threads that shape the weights: recorded with each
    run, so that `zsris-export demo --work` does not reuse a checkpoint made another way."""
    return {"prompts_per_scene": PROMPTS_PER_SCENE, "background_prompts": BACKGROUND_PROMPTS,
            "touching_weight": TOUCHING_WEIGHT, "touch_gap": TOUCH_GAP,
            "encoder_frozen": ENCODER_FROZEN, "encoder_lr_scale": ENCODER_LR_SCALE,
            "positional_scale": POSITIONAL_SCALE, "warmup": WARMUP}


def _initialise(model: nn.Module) -> None:
    """Trainable starting weights: transformers draws the vision encoder at std 1e-10 (meant to be
    overwritten by a checkpoint) and the random Fourier frequencies at std hidden/2, far too high
    for a 16×16 grid; linear and conv layers get PyTorch's fan-in init instead."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
                module.reset_parameters()
        gaussian = model.shared_image_embedding.positional_embedding
        gaussian.copy_(torch.randn_like(gaussian) * POSITIONAL_SCALE)


def _input_mask(mask: np.ndarray, frame: InputFrame, cells: int) -> np.ndarray:
    """A visible-object mask H×W → its area fraction in each cell of the low-res grid (`cells`²
    over the input frame), over the image's part of that frame (the part the runtime crops)."""
    factor = cells / frame.input_size
    height, width = (math.ceil(side * factor) for side in frame.resized)
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)


def _prompt_weights(scene: SyntheticScene) -> np.ndarray:
    """Each shape's share of the object prompts: hard examples (see TOUCHING_WEIGHT) weigh more."""
    weights = 1 + TOUCHING_WEIGHT * touching_same_colour(scene)
    return weights / weights.sum()


def _batch(rng: np.random.Generator, scenes: int, settings: ProposerSettings, cells: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images B×3×S×S, points B×P×1×2 (input frame) and soft targets B×P×h×w for one step."""
    images, points, targets = [], [], []
    for _ in range(scenes):
        scene = draw_scene(rng)
        image, frame = prepare_input(scene.pixels, settings)
        masks = [obj.mask for obj in scene.objects]
        masks.append(~np.any(masks, axis=0))  # the background, last
        cell_masks = [_input_mask(mask, frame, cells) for mask in masks]
        weights = _prompt_weights(scene)
        chosen = []
        for _ in range(PROMPTS_PER_SCENE):
            on_background = rng.random() < BACKGROUND_PROMPTS
            index = len(masks) - 1 if on_background else int(rng.choice(len(weights), p=weights))
            ys, xs = np.nonzero(masks[index])
            pick = int(rng.integers(len(xs)))
            jitter = rng.uniform(-0.5, 0.5, size=2)
            chosen.append(cell_masks[index])
            points.append(frame.to_input(np.array([[xs[pick] + jitter[0],
                                                    ys[pick] + jitter[1]]])))
        images.append(image)
        targets.append(np.stack(chosen))
    return (torch.from_numpy(np.concatenate(images)),
            torch.from_numpy(np.stack(points)).reshape(scenes, PROMPTS_PER_SCENE, 1, 2),
            torch.from_numpy(np.stack(targets)))


def _losses(logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask loss: BCE + dice of the best of the 3 masks, IoU loss: MSE of all 3 predicted IoUs
    against the true IoU of each mask) for logits B×P×3×l×l and targets B×P×h×w."""
    height, width = targets.shape[-2:]
    up = logits[..., :height, :width]  # the image's part of the low-res grid
    target = targets[:, :, None].expand_as(up)
    bce = F.binary_cross_entropy_with_logits(up, target, reduction="none").mean((-2, -1))
    prob = up.sigmoid()
    dice = 1 - (2 * (prob * target).sum((-2, -1)) + 1) / (prob.sum((-2, -1)) +
                                                          target.sum((-2, -1)) + 1)
    mask_loss = (bce + dice).min(dim=2).values.mean()
    with torch.no_grad():
        predicted, truth = up > 0, target > 0.5
        inter = (predicted & truth).sum((-2, -1)).float()
        union = (predicted | truth).sum((-2, -1)).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return mask_loss, F.mse_loss(iou_pred, iou)


def train_proposer(out: Path, steps: int = PROPOSER_STEPS, seed: int = 0, batch: int = 4,
                   lr: float = 3e-3, geometry: dict[str, dict] | None = None, threads: int = 1,
                   progress: Callable[[str], None] | None = None,
                   family: str = DEMO_FAMILY) -> dict[str, object]:
    """Train a `SamModel` of `geometry` (default `DEMO_GEOMETRY`) for `steps` steps of `batch`
    scenes × `PROMPTS_PER_SCENE` prompts, save it into `out` with `save_pretrained`, and return
    the run's facts for provenance. Deterministic on the CPU: the same arguments (`threads`
    included) give the same bytes."""
    from transformers import Sam2Config, Sam2Model, SamConfig, SamModel

    config_class, model_class = (SamConfig, SamModel) if family == "sam" else (Sam2Config,
                                                                                 Sam2Model)
    with reproducible(seed, threads):
        model = model_class(config_class(**(DEMO_GEOMETRY if geometry is None else geometry)))
        _initialise(model)
        model.train()
        settings = proposer_settings(model)
        encoder = [*model.vision_encoder.parameters(), model.no_memory_embedding] if (
            family == "sam2") else list(model.vision_encoder.parameters())
        in_encoder = {id(parameter) for parameter in encoder}
        rest = [parameter for parameter in model.parameters() if id(parameter) not in in_encoder]
        # AdamW leaves a parameter without a gradient untouched: the frozen phase costs nothing.
        optimiser = torch.optim.AdamW([{"params": rest, "lr": lr},
                                       {"params": encoder, "lr": lr * ENCODER_LR_SCALE}],
                                      lr=lr, weight_decay=0.01)
        warmup = max(1, int(WARMUP * steps))
        frozen_steps = int(ENCODER_FROZEN * steps)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
        start = last_report = time.perf_counter()
        history: list[tuple[float, float]] = []
        for step in range(steps):
            images, points, targets = _batch(np.random.default_rng([seed, 7, step]), batch,
                                             settings, settings.low_res_size)
            labels = torch.ones(points.shape[:3], dtype=torch.int64)
            # get_image_embeddings runs under no_grad (transformers); the full forward does not.
            image = ({"image_embeddings": model.get_image_embeddings(images)}
                     if step < frozen_steps else {"pixel_values": images})
            output = model(**image, input_points=points, input_labels=labels,
                           multimask_output=True)
            mask_loss, iou_loss = _losses(output.pred_masks, output.iou_scores, targets)
            optimiser.zero_grad()
            (mask_loss + iou_loss).backward()
            optimiser.step()
            scheduler.step()
            history.append((mask_loss.item(), iou_loss.item()))
            now = time.perf_counter()
            if progress is not None and (now - last_report >= 20 or step == steps - 1):
                last_report = now
                rate = (step + 1) / (now - start)
                recent = np.mean(history[-20:], axis=0)
                eta = (steps - step - 1) / rate
                progress(f"step {step + 1}/{steps}: mask loss {recent[0]:.4f}, IoU loss "
                         f"{recent[1]:.4f}, {rate:.2f} steps/s, ETA {eta:.0f} s")
        seconds = time.perf_counter() - start
        model.eval()
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
    final = np.mean(history[-50:], axis=0)
    return {"steps": steps, "seed": seed, "batch": batch, "threads": threads,
            "recipe": recipe(), "encoder_frozen_steps": frozen_steps, "lr": lr,
            "seconds": round(seconds, 1),
            "mask_loss_first": round(history[0][0], 4), "mask_loss": round(float(final[0]), 4),
            "iou_loss": round(float(final[1]), 4),
            "parameters": sum(p.numel() for p in model.parameters())}
