"""The PyTorch reference (export/reference.py) is itself right.

Everything here is checked against an independent implementation of CLIP: transformers'
`CLIPModel`, on the same random weights, which our checkpoint converter (`load_clip`) reads from a
saved Hugging Face folder. The Global-Local steps of SPEC.md §2–3 (token zeroing, masked crop) are
rebuilt in this file from HF modules, so a mistake in the reference, in `ClipModel` or in the key
conversion shows up as a difference. The tokenizer is checked against OpenAI's own SimpleTokenizer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsris_rt.export.checkpoints import load_clip
from zsris_rt.export.reference import GlobalLocalReference

START, END, PAD = 49406, 49407, 0
CONTEXT = 77
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
RTOL = 2e-5  # of the largest magnitude of the expected features


def assert_close(got: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> float:
    """Max abs difference, checked against `rtol` × the expected values' scale."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = float(expected.abs().max())
    diff = float((got - expected).abs().max())
    assert diff <= rtol * max(scale, 1e-6), f"max abs diff {diff:.3e} (scale {scale:.3e})"
    return diff


def pooled(output: object) -> torch.Tensor:
    """transformers 4.x returns a tensor from get_*_features, 5.x a model output."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[attr-defined]


def hf_layer(layer: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Call one HF CLIPEncoderLayer without a mask (5.x returns a tensor, 4.x a tuple)."""
    out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


def bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    """(HF CLIPModel, our ClipModel loaded from its saved folder), with every LayerNorm and bias
    moved away from its init value so that a swapped or dropped key cannot pass unnoticed."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                           num_attention_heads=2, patch_size=32, image_size=224),
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=START, eos_token_id=END, pad_token_id=PAD),
        projection_dim=48,
    )
    torch.manual_seed(1234)
    hf = CLIPModel(config).eval()
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=gen))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
            elif name.endswith("class_embedding"):
                param.copy_(torch.randn(param.shape, generator=gen))
    folder = tmp_path_factory.mktemp("hf-clip") / "clip"
    hf.save_pretrained(str(folder))
    loaded = load_clip(folder)
    assert loaded.source_format == "hf"
    ours = loaded.model
    assert ours.config.vision_layers == 4 and ours.config.text_layers == 2
    assert ours.config.vision_heads == 2 and ours.config.activation == "quick_gelu"
    return hf, ours


@pytest.fixture(scope="module")
def hf_model(models):
    return models[0]


@pytest.fixture(scope="module")
def ref(models) -> GlobalLocalReference:
    return GlobalLocalReference(models[1])


def hf_image_features(hf, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pooled(hf.get_image_features(pixel_values=images))


def hf_global_feature(hf, xn: torch.Tensor, mask: torch.Tensor, k: int = 3) -> torch.Tensor:
    """SPEC §2 for one mask, from HF modules: embeddings + pre_layrnorm, blocks 0..L−k−1, then
    patch tokens × bilinear(mask, g×g) before each of the last k blocks, post_layernorm(CLS) @ P."""
    vm = hf.vision_model
    size = hf.config.vision_config.image_size
    g = size // hf.config.vision_config.patch_size
    with torch.no_grad():
        x224 = bilinear(xn, (size, size))
        grid = bilinear(mask.float()[None, None], (g, g))[0, 0]  # g×g soft
        weights = torch.cat([torch.ones(1), grid.reshape(-1)]).view(1, -1, 1)  # CLS kept
        h = vm.pre_layrnorm(vm.embeddings(x224))
        layers = list(vm.encoder.layers)
        for layer in layers[: len(layers) - k]:
            h = hf_layer(layer, h)
        for layer in layers[len(layers) - k:]:
            h = hf_layer(layer, h * weights)
        return hf.visual_projection(vm.post_layernorm(h[:, 0]))[0]


def hf_local_feature(hf, xn: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """SPEC §3 for one mask: fill outside with the ImageNet mean (as normalised values), crop
    the tight box, squash to 224² and take the HF image embedding."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    filled = xn * m + (1 - m) * IMAGENET_MEAN
    crop = bilinear(filled[:, :, y0:y1, x0:x1], (224, 224))
    return hf_image_features(hf, crop)[0]


def degenerate_masks(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One pixel (inside, at a corner), one border each, the full image, a random blob."""
    masks = np.zeros((9, h, w), dtype=bool)
    masks[0, h // 2, w // 3] = True
    masks[1, h - 1, w - 1] = True
    masks[2, 0, :] = True
    masks[3, -1, w // 4:] = True
    masks[4, : h // 2, 0] = True
    masks[5, :, -1] = True
    masks[6] = True
    yy, xx = np.mgrid[0:h, 0:w]
    masks[7] = ((yy - h * 0.4) / (h * 0.3)) ** 2 + ((xx - w * 0.6) / (w * 0.25)) ** 2 <= 1
    masks[8] = rng.random((h, w)) < 0.4
    return masks


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def normalise(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - IMAGENET_MEAN) / IMAGENET_STD


# --------------------------------------------------------------------------- image tower


def test_image_features_match_transformers(models):
    hf, ours = models
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = ours.encode_image(x)
    expected = hf_image_features(hf, x)
    assert_close(got, expected)
    # The features depend on the input (a constant output would also "match" a constant).
    assert float((expected[0] - expected[1]).abs().max()) > 1e-2


def test_text_features_match_transformers(models):
    hf, ours = models
    gen = torch.Generator().manual_seed(1)
    lengths = [0, 1, 4, 17, 40, CONTEXT - 2]  # tokens between start and end
    ids = torch.full((len(lengths), CONTEXT), PAD, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 0] = START
        ids[row, 1:n + 1] = torch.randint(1, START, (n,), generator=gen)
        ids[row, n + 1] = END
    end_index = torch.tensor([n + 1 for n in lengths])
    assert int(end_index[-1]) == CONTEXT - 1
    with torch.no_grad():
        got = ours.encode_text(ids, end_index)
        expected = pooled(hf.get_text_features(input_ids=ids))
    assert_close(got, expected)
    assert float((expected[1] - expected[2]).abs().max()) > 1e-2


def test_reference_text_features_match_transformers(models, ref):
    hf, _ = models
    ids = torch.zeros(1, CONTEXT, dtype=torch.long)
    ids[0, :5] = torch.tensor([START, 320, 1929, 539, END])
    with torch.no_grad():
        expected = pooled(hf.get_text_features(input_ids=ids))
    assert_close(ref.text_features(ids, torch.tensor([4])), expected)


# --------------------------------------------------------------------------- SPEC §1–3


def test_normalise_uses_imagenet_constants(ref):
    image = random_image(np.random.default_rng(3), 5, 7)
    got = ref.normalise(image)
    assert got.shape == (1, 3, 5, 7)
    r = image[2, 3, 0] / 255.0
    assert float(got[0, 0, 2, 3]) == pytest.approx((r - 0.485) / 0.229, abs=1e-5)
    assert_close(got, normalise(image), rtol=1e-6)


@pytest.mark.parametrize("h,w", [(37, 53), (240, 180)])
def test_global_features_match_independent_token_zeroing(hf_model, ref, h, w):
    rng = np.random.default_rng(h * w)
    image = random_image(rng, h, w)
    masks = degenerate_masks(h, w, rng)
    xn = normalise(image)
    got = ref.global_features(xn, torch.from_numpy(masks))
    expected = torch.stack([hf_global_feature(hf_model, xn, torch.from_numpy(m)) for m in masks])
    assert_close(got, expected)
    # The mask matters: the full-image mask and a one-pixel mask give different features.
    assert float((expected[6] - expected[0]).abs().max()) > 1e-3


def test_global_feature_soft_grid_is_not_binarised(hf_model, ref):
    """A mask whose g×g grid is fractional: binarising it would change f^G."""
    h = w = 70
    mask = np.zeros((1, h, w), dtype=bool)
    mask[0, 5:33, 7:41] = True
    grid = bilinear(torch.from_numpy(mask).float()[:, None], (7, 7))
    assert ((grid > 0.01) & (grid < 0.99)).any()
    xn = normalise(random_image(np.random.default_rng(5), h, w))
    got = ref.global_features(xn, torch.from_numpy(mask))[0]
    assert_close(got, hf_global_feature(hf_model, xn, torch.from_numpy(mask[0])))


def test_global_feature_of_full_mask_is_plain_image_embedding(hf_model, ref):
    h, w = 61, 97
    image = random_image(np.random.default_rng(7), h, w)
    xn = normalise(image)
    full = torch.ones(1, h, w, dtype=torch.bool)
    got = ref.global_features(xn, full)[0]
    squashed = bilinear(xn, (224, 224))
    assert_close(got, hf_image_features(hf_model, squashed)[0])


@pytest.mark.parametrize("h,w", [(37, 53), (240, 180)])
def test_local_features_match_independent_crop(hf_model, ref, h, w):
    rng = np.random.default_rng(h + w)
    image = random_image(rng, h, w)
    masks = degenerate_masks(h, w, rng)
    xn = normalise(image)
    got = ref.local_features(xn, torch.from_numpy(masks))
    expected = torch.stack([hf_local_feature(hf_model, xn, m) for m in masks])
    assert_close(got, expected)
    assert float((expected[6] - expected[7]).abs().max()) > 1e-3


def test_run_fuses_and_scores_like_the_spec(models, ref):
    """§4–6 end to end on HF features: f = αf^G + (1−α)f^L, t = βt_s + (1−β)t_np, 100·cos."""
    hf, _ = models
    h, w = 45, 64
    rng = np.random.default_rng(11)
    image = random_image(rng, h, w)
    masks = degenerate_masks(h, w, rng)
    sentence = torch.zeros(1, CONTEXT, dtype=torch.long)
    sentence[0, :6] = torch.tensor([START, 320, 1929, 539, 518, END])
    phrase = torch.zeros(1, CONTEXT, dtype=torch.long)
    phrase[0, :3] = torch.tensor([START, 1929, END])
    out = ref.run(image, masks, (sentence, torch.tensor([5])), (phrase, torch.tensor([2])))

    xn = normalise(image)
    fg = torch.stack([hf_global_feature(hf, xn, torch.from_numpy(m)) for m in masks])
    fl = torch.stack([hf_local_feature(hf, xn, m) for m in masks])
    with torch.no_grad():
        ts = pooled(hf.get_text_features(input_ids=sentence))[0]
        tp = pooled(hf.get_text_features(input_ids=phrase))[0]
    f = 0.95 * fg + 0.05 * fl
    t = 0.5 * ts + 0.5 * tp
    scores = 100.0 * (f @ t) / (f.norm(dim=-1) * t.norm())
    assert_close(out.global_features, fg)
    assert_close(out.local_features, fl)
    assert_close(out.text_feature, t)
    diff = float((out.scores - scores).abs().max())
    assert diff < 1e-3, diff
    assert out.index == int(torch.argmax(scores))


# --------------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def pack_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from zsris_rt.export.tokenizer_build import build_clip_tokenizer
    from zsris_rt.tokenizer import ClipTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_clip_tokenizer().save(str(path))
    return ClipTokenizer(path)


TRICKY = [
    "",
    "a photo of a dog",
    "&amp;",
    "fish &amp;amp; chips &lt;3",
    "ＦＵＬＬ－ｗｉｄｔｈ ｌｅｔｔｅｒｓ １２３",
    "the man\u2019s \u201cred\u201d hat",
    "man's hat, don't, they're, I'll, we've, I'm, he'd",
    "THE MAN'S HAT",
    "dog \U0001f436 thumbs \U0001f44d\U0001f3fd flag \U0001f1ef\U0001f1f5",
    "猫の写真 一只狗 고양이",
    "digits 1234567 2nd 3.14 1,000",
    "  extra \t\t whitespace \n\n here  ",
    "caf\u00c3\u00a9 mojibake",
    "e\u0301cole de\u0301composed",
    "İstanbul straße ǅ ﬁ Ⅻ",
    "zero\u200bwidth",
    "<|endoftext|> in the text",
    "non\u00a0breaking space",
    "punctuation!!! ??? ... (left) [right] {middle} --- ***",
    "the second guy from the left wearing a blue-ish shirt",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_matches_openai_simple_tokenizer(simple_tokenizer, pack_tokenizer, text):
    expected = [START] + simple_tokenizer.encode(text) + [END]
    assert len(expected) <= CONTEXT
    batch = pack_tokenizer.encode([text])
    ids = batch.ids[0]
    assert ids.dtype == np.int64 and ids.shape == (CONTEXT,)
    assert ids[: len(expected)].tolist() == expected
    assert (ids[len(expected):] == PAD).all()
    assert batch.end_index[0] == len(expected) - 1
    assert batch.truncated == [False]


def test_tokenizer_lowercases_like_python_final_sigma(simple_tokenizer, pack_tokenizer):
    """OpenAI lowercases with Python's str.lower, which writes a word-final capital sigma as
    "ς" (U+03C2), not "σ": "ΟΔΟΣ" → "οδος". The pack tokenizer must give the same ids."""
    text = "ΟΔΟΣ ΣΙΣΥΦΟΣ"
    expected = [START] + simple_tokenizer.encode(text) + [END]
    assert pack_tokenizer.encode([text]).ids[0, : len(expected)].tolist() == expected


def test_tokenizer_batch_rows_are_independent(simple_tokenizer, pack_tokenizer):
    batch = pack_tokenizer.encode(TRICKY)
    for row, text in enumerate(TRICKY):
        expected = [START] + simple_tokenizer.encode(text) + [END]
        assert batch.ids[row, : len(expected)].tolist() == expected
        assert int(batch.end_index[row]) == len(expected) - 1


@pytest.mark.parametrize("words,truncated", [(75, False), (76, True), (300, True)])
def test_long_text_is_truncated_keeping_the_end_token(simple_tokenizer, pack_tokenizer, words,
                                                      truncated):
    text = " ".join(["a", "photo", "of", "the", "dog"] * (words // 5 + 1))
    expected = simple_tokenizer.encode(text)
    text = simple_tokenizer.decode(expected[:words])  # exactly `words` tokens
    expected = simple_tokenizer.encode(text)
    assert len(expected) == words
    batch = pack_tokenizer.encode([text])
    ids = batch.ids[0].tolist()
    assert len(ids) == CONTEXT
    assert ids[0] == START
    assert ids[1:CONTEXT - 1] == expected[: CONTEXT - 2]
    assert ids[CONTEXT - 1] == END
    assert int(batch.end_index[0]) == CONTEXT - 1
    assert batch.truncated == [truncated]


def test_end_index_is_integer_position_of_end_token(pack_tokenizer):
    """SPEC §5.4: the end index comes from integers. In fp16 the start and end tokens are one
    number, so a float argmax of the ids could not find the end token."""
    assert np.float16(START) == np.float16(END)
    texts = ["", "a", "a red car on the left", "x " * 200, "猫 \U0001f436"]
    batch = pack_tokenizer.encode(texts)
    assert batch.end_index.dtype.kind == "i"
    for row in range(len(texts)):
        positions = np.flatnonzero(batch.ids[row] == END)
        assert positions.size == 1
        assert int(batch.end_index[row]) == int(positions[0])


def test_tokenizer_to_text_features_end_to_end(models, pack_tokenizer):
    """Pack tokenizer ids and integer end index → our text tower == HF's (which finds the end
    token in the ids by itself)."""
    hf, ours = models
    batch = pack_tokenizer.encode(["the man\u2019s hat", "a dog", "x " * 200])
    ids = torch.from_numpy(batch.ids)
    with torch.no_grad():
        got = ours.encode_text(ids, torch.from_numpy(batch.end_index))
        expected = pooled(hf.get_text_features(input_ids=ids))
    assert_close(got, expected)
