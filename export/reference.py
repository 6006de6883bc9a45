"""PyTorch reference of SPEC.md §1–6: the slow, obvious computation every backend is held to.

Written from the spec, one mask at a time where the spec speaks of one mask, with torch's own
`F.interpolate` for every resize; it shares no code with the runtime's NumPy path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .clip_model import ClipModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ReferenceOutput:
    global_features: torch.Tensor  # K×E, f^G
    local_features: torch.Tensor  # K×E, f^L
    text_feature: torch.Tensor  # E, t
    scores: torch.Tensor  # K, 100·cos
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

    @torch.no_grad()
    def global_features(self, xn: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """§2: token zeroing before each of the last k blocks."""
        visual = self.model.visual
        x224 = bilinear(xn, (self.size, self.size))
        grid = bilinear(masks.float()[:, None], (self.grid, self.grid))[:, 0]  # K×g×g, soft
        x = visual.embed(x224)
        layers = len(visual.transformer.resblocks)
        x = visual.run_blocks(x, 0, layers - self.k)
        weights = grid.flatten(1)[:, :, None]  # K×g²×1, row-major like the patch tokens
        for block in visual.transformer.resblocks[layers - self.k:]:
            cls, patches = x[:, :1], x[:, 1:]
            patches = patches * weights
            x = block(torch.cat([cls.expand(patches.shape[0], -1, -1), patches], dim=1))
        return visual.pool(x)

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
        return self.model.encode_image(torch.cat(crops))

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
        t = self.beta * ts + (1 - self.beta) * tp
        f = self.alpha * fg + (1 - self.alpha) * fl
        scores = 100.0 * F.cosine_similarity(f, t[None], dim=-1, eps=0.0)
        return ReferenceOutput(fg, fl, t, scores, int(torch.argmax(scores)))
