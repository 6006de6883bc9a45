"""SAM's prompt decoder split in two exact halves: what depends on the image only, once per image,
and what depends on the prompt, once per prompt.

transformers' `SamMaskDecoder` / `Sam2MaskDecoder` copy the image embedding for every prompt and
project all of it in every attention; of ~1.75 GMAC per prompt at SAM ViT-B / Hiera-tiny geometry,
about 0.4 GMAC reads the image alone. Here:

- `DecoderImageGraph` (once per image): the image tokens with the no-mask embedding added, their
  positional encoding, the first block's image-side projections (keys and values of
  token→image attention, queries of image→token attention), and for SAM 2 the two
  high-resolution skip maps, all laid out channels-last in the order the prompt half reads them.
- `PromptDecoderGraph` (per prompt): everything else, with the image-side tensors broadcast over
  the prompts, never copied. Where an attention's image side depends on the prompt (every block
  after the first), the projection is moved to the token side, which holds ~7 tokens instead of
  g² image tokens: scores = X·(W_k qₕ)ᵀ and output = (A·X)·W_vᵀ (the key bias is constant along
  the softmax axis, and attention rows sum to one, so both are exact rewrites). The upscalers,
  k = 2, s = 2 transposed convolutions, are per-pixel matrix products in a blocked pixel order;
  the one reordering left is on the three output logit maps.

The arithmetic differs from transformers' only in summation order (tests hold the two graphs,
composed, to transformers' own forward).
"""

from __future__ import annotations

import torch
from torch import nn

# The per-image tensors, in the order `DecoderImageGraph` returns them (SAM 2 adds the two skip
# maps); the prompt half takes them by these names.
IMAGE_STATE = ("dec_src", "dec_pos", "dec_t2i_keys", "dec_t2i_values", "dec_i2t_queries")
SKIP_MAPS = ("dec_skip_s1", "dec_skip_s0")


def _family(model: nn.Module) -> str:
    return "sam2" if type(model).__name__ == "Sam2Model" else "sam"


def _out_proj(attention: nn.Module) -> nn.Linear:
    return attention.out_proj if hasattr(attention, "out_proj") else attention.o_proj


def _head_split(attention: nn.Module) -> tuple[int, int]:
    heads = attention.num_attention_heads
    return heads, attention.internal_dim // heads


def _channels_last(image: torch.Tensor) -> torch.Tensor:
    """1×C×h×w → h·w×C."""
    return image.flatten(2).transpose(1, 2)[0]


class DecoderImageGraph(nn.Module):
    """encoder outputs → the decoder's per-image state (`IMAGE_STATE`, then SAM 2's `SKIP_MAPS`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = _family(model)

    def forward(self, *embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model, decoder = self.model, self.model.mask_decoder
        image = embeddings[-1]
        channels = image.shape[1]
        dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, channels, 1, 1)
        src = _channels_last(image + dense)
        pos = _channels_last(model.get_image_wide_positional_embeddings())
        first = decoder.transformer.layers[0]
        state = (src, pos, first.cross_attn_token_to_image.k_proj(src + pos),
                 first.cross_attn_token_to_image.v_proj(src),
                 first.cross_attn_image_to_token.q_proj(src + pos))
        if self.family == "sam":
            return state
        feat_s0, feat_s1 = embeddings[0][0], embeddings[1][0]
        side = image.shape[-1]
        # Pixel (2i + a, 2j + b) of the ×2 map → row (i·g + j)·4 + 2a + b; pixel
        # (4i + 2a₁ + a₂, 4j + 2b₁ + b₂) of the ×4 map → row ((i·g + j)·4 + 2a₁ + b₁)·4 + 2a₂ + b₂:
        # the order the blocked upscaler produces its pixels in. Each transposed convolution's
        # bias is added here, once, instead of to every prompt's upscaled map.
        skip_s1 = feat_s1.reshape(-1, side, 2, side, 2).permute(1, 3, 2, 4, 0)
        skip_s0 = feat_s0.reshape(-1, side, 2, 2, side, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
        return (*state,
                skip_s1.reshape(-1, feat_s1.shape[0]) + decoder.upscale_conv1.bias,
                skip_s0.reshape(-1, feat_s0.shape[0]) + decoder.upscale_conv2.bias)


def _per_head(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """A projection's weight c'×C → heads×d×C."""
    return weight.reshape(heads, -1, weight.shape[-1])


def _token_to_image(attention: nn.Module, queries: torch.Tensor, image: torch.Tensor,
                    values: torch.Tensor) -> torch.Tensor:
    """Token→image attention (N×T×C queries; image keys N×HW×C with the positional encoding
    added, values N×HW×C) with both image projections moved onto the tokens."""
    heads, dim = _head_split(attention)
    prompts, tokens, _ = queries.shape
    q = attention.q_proj(queries).reshape(prompts, tokens, heads, dim).transpose(1, 2)
    # scoresₕ = (X W_kₕᵀ + b_kₕ) qₕ = X (W_kₕᵀ qₕ) + const: the constant cancels in the softmax.
    folded = torch.matmul(q, _per_head(attention.k_proj.weight, heads))  # N×h×T×C
    folded = (folded * attention.scaling).reshape(prompts, heads * tokens, -1)
    weights = torch.softmax(torch.matmul(folded, image.transpose(1, 2)), dim=-1)  # N×hT×HW
    mixed = torch.matmul(weights, values).reshape(prompts, heads, tokens, -1)
    # Rows of `weights` sum to one: A (V W_vᵀ + b_v) = (A V) W_vᵀ + b_v.
    out = torch.matmul(mixed, _per_head(attention.v_proj.weight, heads).transpose(1, 2))
    out = out.transpose(1, 2) + attention.v_proj.bias.reshape(heads, dim)  # N×T×h×d
    return _out_proj(attention)(out.reshape(prompts, tokens, heads * dim))


def _block_diagonal(keys: torch.Tensor, heads: int) -> torch.Tensor:
    """N×T×(h·d) → N×(h·d)×(h·T), zero outside each head's d×T block: one plain matrix product
    with it gives every head's scores side by side, heads and tokens last."""
    prompts, tokens, _ = keys.shape
    per_head = keys.reshape(prompts, tokens, heads, -1).permute(0, 2, 3, 1)  # N×h×d×T
    eye = torch.eye(heads, dtype=keys.dtype)
    return (per_head[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(
        prompts, keys.shape[-1], heads * tokens)


def _image_to_token(attention: nn.Module, image_queries: torch.Tensor | None,
                    image: torch.Tensor | None, token_keys: torch.Tensor,
                    token_values: torch.Tensor) -> torch.Tensor:
    """Image→token attention → N×HW×C. Either the image queries are given projected
    (`image_queries`, HW×c', the first block) or the image with its positional encoding
    (`image`, N×HW×C) and the query projection is moved onto the tokens."""
    heads, dim = _head_split(attention)
    prompts, tokens, _ = token_keys.shape
    k = attention.k_proj(token_keys) * attention.scaling
    if image_queries is not None:
        scores = torch.matmul(image_queries, _block_diagonal(k, heads))
    else:
        # (X W_qₕᵀ + b_qₕ) kₕ = X (W_qₕᵀ kₕ) + b_qₕ·kₕ
        kh = k.reshape(prompts, tokens, heads, dim).transpose(1, 2)  # N×h×T×d
        folded = torch.matmul(kh, _per_head(attention.q_proj.weight, heads))  # N×h×T×C
        folded = folded.permute(0, 3, 1, 2).reshape(prompts, -1, heads * tokens)
        bias = (kh * attention.q_proj.bias.reshape(heads, 1, dim)).sum(-1)  # N×h×T
        scores = torch.matmul(image, folded) + bias.reshape(prompts, 1, heads * tokens)
    weights = torch.softmax(scores.unflatten(-1, (heads, tokens)), dim=-1).flatten(-2)
    # Σₕ Aₕ (Vₕ W_oₕᵀ + b_o / h): each head's values through its slice of the output projection
    # first; each head's weights sum to one, so the output bias rides along in the product.
    v = attention.v_proj(token_values).reshape(prompts, tokens, heads, dim).transpose(1, 2)
    out_proj = _out_proj(attention)
    per_head = out_proj.weight.reshape(-1, heads, dim).permute(1, 2, 0)  # h×d×C
    projected = torch.matmul(v, per_head) + out_proj.bias / heads  # N×h×T×C
    return torch.matmul(weights, projected.reshape(prompts, heads * tokens, -1))


class PromptDecoderGraph(nn.Module):
    """the per-image state + points N×P×2 (pixels of the S×S input frame) + labels N×P (1
    foreground, 0 background, −1 ignored) → low-res logits N×3×l×l and predicted IoU N×3."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.family = _family(model)
        self.side = int(model.prompt_encoder.image_embedding_size[0])  # g: g×g image tokens
        # Output tokens: [object score (SAM 2),] IoU, mask 0 (single-mask output), masks 1…
        self.iou_token = 1 if self.family == "sam2" else 0

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model, decoder = self.model, self.model.mask_decoder
        src, pos, t2i_keys, t2i_values, i2t_queries = args[:5]
        points, labels = args[-2:]
        prompts = points.shape[0]
        sparse, _ = model.prompt_encoder(input_points=points[None], input_labels=labels[None],
                                         input_boxes=None, input_masks=None)
        own = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if self.family == "sam2":
            own.insert(0, decoder.obj_score_token.weight)
        fixed = torch.cat(own, dim=0)
        point_embeddings = torch.cat([fixed[None].expand(prompts, -1, -1), sparse[0]], dim=1)
        # Only the IoU token and the multimask tokens (1…) are read after the transformer.
        mask_0 = self.iou_token + 1
        wanted = [self.iou_token, *range(mask_0 + 1, mask_0 + decoder.num_mask_tokens)]
        queries, keys = self._transformer(point_embeddings, src, pos, t2i_keys, t2i_values,
                                          i2t_queries, wanted)
        skips = args[5:7] if self.family == "sam2" else (None, None)
        upscaled = self._upscale(keys, *skips)
        hyper = torch.stack([decoder.output_hypernetworks_mlps[i](queries[:, i])
                             for i in range(1, decoder.num_mask_tokens)], dim=2)
        masks = torch.matmul(upscaled, hyper)  # N × (HW·16) × 3, blocked pixel order
        side = self.side
        masks = masks.reshape(prompts, side, side, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        masks = masks.reshape(prompts, -1, 4 * side, 4 * side)
        iou = decoder.iou_prediction_head(queries[:, 0])[:, 1:]
        return masks, iou

    def _transformer(self, tokens: torch.Tensor, src: torch.Tensor, pos: torch.Tensor,
                     t2i_keys: torch.Tensor, t2i_values: torch.Tensor, i2t_queries: torch.Tensor,
                     wanted: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`SamTwoWayTransformer.forward` with the image side shared by all prompts until the
        first image→token update makes it per prompt; the final token→image attention only for
        the `wanted` tokens (each token's attention is its own), which it returns in order."""
        transformer = self.model.mask_decoder.transformer
        queries, keys = tokens, None
        for index, layer in enumerate(transformer.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(query=queries[None], key=queries[None],
                                          value=queries[None])[0][0]
            else:
                query = (queries + tokens)[None]
                queries = queries + layer.self_attn(query=query, key=query,
                                                    value=queries[None])[0][0]
            queries = layer.layer_norm1(queries)
            if index == 0:
                queries = queries + self._first_token_to_image(
                    layer.cross_attn_token_to_image, queries + tokens, t2i_keys, t2i_values)
            else:
                image = keys + pos
                queries = queries + _token_to_image(layer.cross_attn_token_to_image,
                                                    queries + tokens, image, keys)
            queries = layer.layer_norm2(queries)
            queries = layer.layer_norm3(queries + layer.mlp(queries))
            if index == 0:
                update = _image_to_token(layer.cross_attn_image_to_token, i2t_queries, None,
                                         queries + tokens, queries)
                keys = layer.layer_norm4(src + update)
            else:
                update = _image_to_token(layer.cross_attn_image_to_token, None, image,
                                         queries + tokens, queries)
                keys = layer.layer_norm4(keys + update)
        queries, tokens = queries[:, wanted], tokens[:, wanted]
        queries = queries + _token_to_image(transformer.final_attn_token_to_image,
                                            queries + tokens, keys + pos, keys)
        return transformer.layer_norm_final_attn(queries), keys

    @staticmethod
    def _first_token_to_image(attention: nn.Module, queries: torch.Tensor, keys: torch.Tensor,
                              values: torch.Tensor) -> torch.Tensor:
        """Token→image attention on the per-image projected keys and values (HW×c')."""
        heads, dim = _head_split(attention)
        prompts, tokens, _ = queries.shape
        q = attention.q_proj(queries).reshape(prompts, tokens, heads, dim).transpose(1, 2)
        k = keys.reshape(-1, heads, dim).permute(1, 2, 0)  # h×d×HW
        v = values.reshape(-1, heads, dim).transpose(0, 1)  # h×HW×d
        weights = torch.softmax(torch.matmul(q, k) * attention.scaling, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(prompts, tokens, heads * dim)
        return _out_proj(attention)(out)

    def _upscale(self, keys: torch.Tensor, skip_s1: torch.Tensor | None,
                 skip_s0: torch.Tensor | None) -> torch.Tensor:
        """The two k = 2, s = 2 transposed convolutions as per-pixel matrix products:
        N×HW×C → N×(HW·4)×C/4 → N×(HW·16)×C/8, children of a pixel next to each other."""
        decoder = self.model.mask_decoder
        prompts = keys.shape[0]
        up = torch.matmul(keys, _as_pixel_matrix(decoder.upscale_conv1))
        up = up.reshape(prompts, -1, decoder.upscale_conv1.out_channels)
        # SAM 2's skip maps carry the biases (DecoderImageGraph); SAM's are added here.
        up = up + (decoder.upscale_conv1.bias if skip_s1 is None else skip_s1)
        norm = decoder.upscale_layer_norm
        up = decoder.activation(nn.functional.layer_norm(up, norm.normalized_shape, norm.weight,
                                                         norm.bias, norm.eps))
        up = torch.matmul(up, _as_pixel_matrix(decoder.upscale_conv2))
        up = up.reshape(prompts, -1, decoder.upscale_conv2.out_channels)
        return decoder.activation(up + (decoder.upscale_conv2.bias if skip_s0 is None
                                        else skip_s0))


def _as_pixel_matrix(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A k = 2, s = 2 transposed convolution's weight C_in×C_out×2×2 → C_in×(4·C_out), columns
    ordered (a, b, c_out) for output pixel (2i + a, 2j + b)."""
    assert conv.kernel_size == (2, 2) and conv.stride == (2, 2) and conv.padding == (0, 0)
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)
