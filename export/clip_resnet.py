"""The ResNet image tower of OpenAI's CLIP (RN50, RN101, RN50x4, …) in plain PyTorch.

OpenAI's "modified ResNet": a three-convolution stem with an average pool, bottleneck stages whose
strided steps average-pool instead of striding (anti-aliased), and an attention pool in place of
the global average pool. Parameter names are OpenAI's (`visual.layer1.0.conv1.weight`,
`visual.attnpool.q_proj.weight`, …), so OpenAI and open_clip state dicts load as they are. The
tower is split where SPEC §7 works: `feature_map` (image → layer-4 map) and `pool` (the attention
pool, on positions as rows), with attention written out as matmul + softmax for the exporter.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

EXPANSION = 4  # bottleneck output channels per planes


class Bottleneck(nn.Module):
    """1×1 → 3×3 → (average pool when strided) → 1×1, plus the (pooled, projected) shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU()
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * EXPANSION, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * EXPANSION)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(self.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class AttentionPool(nn.Module):
    """CLIP's attention pool: the mean of the positions joins them as a query token, positional
    embeddings are added, and only that token's multi-head attention output is kept."""

    def __init__(self, grid: int, width: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, out_dim)
        self.heads = heads

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """B×N×C (N = g² positions, row-major) → B×E."""
        x = torch.cat([positions.mean(dim=1, keepdim=True), positions], dim=1)
        x = x + self.positional_embedding
        batch, length, width = x.shape
        head_dim = width // self.heads
        q = self.q_proj(x[:, :1]).reshape(batch, 1, self.heads, head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(batch, length, self.heads, head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(batch, length, self.heads, head_dim).transpose(1, 2)
        logits = torch.matmul(q * head_dim ** -0.5, k.transpose(-1, -2))
        out = torch.matmul(torch.softmax(logits, dim=-1), v)  # B×h×1×d
        return self.c_proj(out.transpose(1, 2).reshape(batch, width))


class ResNetVisionTower(nn.Module):
    """Stem, four bottleneck stages (`stages` blocks each, widths w, 2w, 4w, 8w planes), and the
    attention pool over the 32× smaller layer-4 map of 32·w channels."""

    def __init__(self, stages: tuple[int, ...], width: int, image_size: int, heads: int,
                 out_dim: int) -> None:
        super().__init__()
        half = width // 2
        self.conv1 = nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU()
        inplanes = width
        for index, blocks in enumerate(stages):
            planes = width * 2 ** index
            layer = [Bottleneck(inplanes, planes, 1 if index == 0 else 2)]
            inplanes = planes * EXPANSION
            layer += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*layer))
        self.stages = len(stages)
        self.attnpool = AttentionPool(image_size // 32, inplanes, heads, out_dim)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×S×S → the layer-4 map B×C×g×g."""
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(self.relu(self.bn3(self.conv3(x))))
        for index in range(self.stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return x

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """B×C×g×g → B×E: the attention pool, unnormalised."""
        return self.attnpool(maps.flatten(2).transpose(1, 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(images))
