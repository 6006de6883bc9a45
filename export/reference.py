"""PyTorch reference of SPEC.md §1–7: the slow, obvious computation every backend is held to.

Written from the spec, one mask at a time where the spec speaks of one mask, with torch's own
`F.interpolate` for every resize; it shares no code with the runtime's NumPy path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .clip_model import ClipModel
from .clip_resnet import ResNetVisionTower

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ReferenceOutput:
    global_features: torch.Tensor  # K×E, f^G
    local_features: torch.Tensor  # K×E, f^L
    text_feature: torch.Tensor  # E, t
    scores: torch.Tensor  # K, 100·cos (ViT) or 100·dot (ResNet, §7)
    index: int


def bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Half-pixel centres, no antialiasing (torchvision 0.11 semantics)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


class GlobalLocalReference:
    def __init__(
        self,
        model: ClipModel,
        masked_blocks: int = 3,
        alpha: float = 0.95,
        beta: float = 0.5,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        fill: tuple[float, ...] = IMAGENET_MEAN,
    ) -> None:
        self.model = model.eval()
        self.k = masked_blocks
        self.alpha, self.beta = alpha, beta
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.fill = torch.tensor(fill).view(1, 3, 1, 1)
        self.size = model.config.image_size
        self.grid = model.config.grid

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        """§1: uint8 H×W×3 → 1×3×H×W, ImageNet constants."""
        x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255.0
        return (x - self.mean) / self.std

    @property
    def resnet(self) -> bool:
        return self.model.config.family == "resnet"

    @torch.no_grad()
    def global_features(self, xn: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """§2: token zeroing before each of the last k blocks; §7 for a ResNet."""
        visual = self.model.visual
        x224 = bilinear(xn, (self.size, self.size))
        grid = bilinear(masks.float()[:, None], (self.grid, self.grid))[:, 0]  # K×g×g, soft
        if isinstance(visual, ResNetVisionTower):
            return self._resnet_global(visual, x224, grid)
        x = visual.embed(x224)
        layers = len(visual.transformer.resblocks)
        x = visual.run_blocks(x, 0, layers - self.k)
        weights = grid.flatten(1)[:, :, None]  # K×g²×1, row-major like the patch tokens
        for block in visual.transformer.resblocks[layers - self.k:]:
            cls, patches = x[:, :1], x[:, 1:]
            patches = patches * weights
            x = block(torch.cat([cls.expand(patches.shape[0], -1, -1), patches], dim=1))
        return visual.pool(x)

    @staticmethod
    def _resnet_global(visual: ResNetVisionTower, x224: torch.Tensor, grid: torch.Tensor
                       ) -> torch.Tensor:
        """§7: the layer-4 map, each position's channel vector scaled to unit length, times each
        mask's grid, through the unmodified attention pool; mask by mask, unnormalised. (A zero
        channel vector stays zero: F.normalize floors the norm at 1e-12.)"""
        unit = F.normalize(visual.feature_map(x224)[0], dim=0)  # C×g×g
        return torch.cat([visual.pool((unit * m)[None]) for m in grid])

    @torch.no_grad()
    def local_features(self, xn: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """§3: fill outside the mask, crop the tight box, squash to S×S, encode; mask by mask."""
        crops = []
        for mask in masks:
            m = mask.float()[None, None]
            xm = xn * m + (1 - m) * self.fill
            ys, xs = torch.nonzero(mask, as_tuple=True)
            y0, y1 = int(ys.min()), int(ys.max()) + 1
            x0, x1 = int(xs.min()), int(xs.max()) + 1
            crops.append(bilinear(xm[:, :, y0:y1, x0:x1], (self.size, self.size)))
        features = self.model.encode_image(torch.cat(crops))
        if self.resnet:  # §7: f^L is L2-normalised
            return F.normalize(features, dim=-1)
        return features

    @torch.no_grad()
    def text_features(self, ids: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids.long(), end_index.long())

    @torch.no_grad()
    def run(
        self,
        image: np.ndarray,
        masks: np.ndarray,
        sentence_ids: tuple[torch.Tensor, torch.Tensor],
        phrase_ids: tuple[torch.Tensor, torch.Tensor],
    ) -> ReferenceOutput:
        """§1–6 end to end. `*_ids` are (1×77 ids, 1 end index) of s' and of its noun phrase."""
        xn = self.normalise(image)
        m = torch.from_numpy(np.asarray(masks, dtype=bool))
        fg = self.global_features(xn, m)
        fl = self.local_features(xn, m)
        ts = self.text_features(*sentence_ids)[0]
        tp = self.text_features(*phrase_ids)[0]
        if self.resnet:  # §7: each text feature unit before the mix, a plain dot product after
            ts, tp = F.normalize(ts, dim=0), F.normalize(tp, dim=0)
        t = self.beta * ts + (1 - self.beta) * tp
        f = self.alpha * fg + (1 - self.alpha) * fl
        if self.resnet:
            scores = 100.0 * (f @ t)
        else:
            scores = 100.0 * F.cosine_similarity(f, t[None], dim=-1, eps=0.0)
        return ReferenceOutput(fg, fl, t, scores, int(torch.argmax(scores)))
