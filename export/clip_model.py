"""An OpenAI-layout CLIP in plain PyTorch: the ViT image tower here, the ResNet one in
clip_resnet.py, the text tower here.

Every checkpoint format is converted to this module's state-dict names (those of OpenAI's
`clip/model.py`), so the reference and the exporter see one model whatever the source.
Attention is written out with matmul + softmax so that the TorchScript ONNX exporter emits plain
ops that every backend runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .clip_resnet import ResNetVisionTower


@dataclass(frozen=True)
class ClipConfig:
    """Geometry of a CLIP; `activation` is "quick_gelu" (OpenAI) or "gelu" (most open_clip).
    A ResNet image tower has `vision_stages` (blocks per stage), `vision_width` its stem width,
    `vision_heads` its attention pool's heads and `patch_size` 32 (its map's stride)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    vision_mlp_width: int = 0  # 0: 4 × width, as in every OpenAI model
    text_mlp_width: int = 0
    vision_stages: tuple[int, ...] = ()  # ResNet family only

    @property
    def family(self) -> str:
        return "resnet" if self.vision_stages else "vit"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with OpenAI's packed `in_proj_weight` layout."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(width // heads)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        head_dim = width // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = torch.matmul(q * self.scale, k.transpose(-1, -2))
        if mask is not None:
            logits = logits + mask
        out = torch.matmul(torch.softmax(logits, dim=-1), v)
        out = out.permute(0, 2, 1, 3).reshape(batch, length, width)
        return self.out_proj(out)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, activation: str, eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, hidden, activation)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, hidden: int, activation: str,
                 eps: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualBlock(width, heads, hidden or 4 * width, activation, eps)
            for _ in range(layers)
        )


class VisionTower(nn.Module):
    """ViT image tower; `embed` and `head` split it where SPEC.md §2 applies the masks."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        width = cfg.vision_width
        self.conv1 = nn.Conv2d(3, width, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.grid * cfg.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.transformer = Transformer(
            width, cfg.vision_layers, cfg.vision_heads, cfg.vision_mlp_width, cfg.activation,
            cfg.layer_norm_eps,
        )
        self.ln_post = nn.LayerNorm(width, eps=cfg.layer_norm_eps)
        self.proj = nn.Parameter(torch.zeros(width, cfg.embed_dim))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch + class + positional embedding and `ln_pre`: B×3×S×S → B×T×D."""
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.transformer.resblocks[start:stop]:
            x = block(x)
        return x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """`ln_post(CLS) @ proj`, not normalised."""
        return self.ln_post(tokens[:, 0]) @ self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        return self.pool(self.run_blocks(x, 0, len(self.transformer.resblocks)))


class ClipModel(nn.Module):
    """Both towers with OpenAI's parameter names (visual.*, transformer.*, token_embedding, …)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.config = cfg
        self.visual: VisionTower | ResNetVisionTower = VisionTower(cfg)
        if cfg.family == "resnet":
            self.visual = ResNetVisionTower(cfg.vision_stages, cfg.vision_width, cfg.image_size,
                                            cfg.vision_heads, cfg.embed_dim)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.text_width))
        self.transformer = Transformer(
            cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.text_mlp_width, cfg.activation,
            cfg.layer_norm_eps,
        )
        self.ln_final = nn.LayerNorm(cfg.text_width, eps=cfg.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.zeros(cfg.text_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        causal = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", causal, persistent=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor, end_index: torch.Tensor) -> torch.Tensor:
        """Text features pooled at `end_index` (an integer per row, never a float argmax).

        `ids` may be shorter than the context: attention is causal, so positions past the last
        end token cannot change the pooled feature, and the runtime need not compute them."""
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length]
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = self.ln_final(x)
        index = end_index.view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return x.gather(1, index)[:, 0] @ self.text_projection


def random_init_(model: ClipModel, seed: int = 0) -> ClipModel:
    """Fill every parameter with CLIP-like scales (what OpenAI's `initialize_parameters` does),
    and a ResNet's batch-norm statistics with values that make folding them matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=gen))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=gen))
        for name, param in model.named_parameters():
            if name == "logit_scale":
                continue
            norm_scale = ".bn" in name or name.startswith("visual.bn") or "downsample.1" in name
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight",
                              "ln_final.weight")) or (norm_scale and name.endswith("weight")):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            elif param.ndim == 1:
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
            else:
                if name.endswith("proj") or name == "text_projection":
                    fan_in = param.shape[0]  # used as x @ proj
                elif param.ndim == 2:
                    fan_in = param.shape[-1]
                else:
                    fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
    return model
