"""The demo pack's CLIP training and its cut-down CLIP vocabulary.

The compact tokenizer is held to OpenAI's own SimpleTokenizer; the captions are re-checked from
pixels and masks; the training's masked global path is held to the PyTorch reference of SPEC §2;
the loss to a loop written out here; and two short runs with one seed must give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zsris_rt.synthetic_refer import COLOURS, KINDS, draw_scene, write_synthetic_refer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def compact():
    from zsris_rt.export.compact_vocab import compact_clip_tokenizer
    from zsris_rt.export.demo_clip import WORDS

    return compact_clip_tokenizer(WORDS)


def synth_sentences(tmp_path: Path) -> list[str]:
    import pickle

    folder = write_synthetic_refer(tmp_path / "synth", "refcocog", images=12, seed=3)
    refs = pickle.loads((folder / "refs(umd).p").read_bytes())
    folder = write_synthetic_refer(tmp_path / "synth", "refcoco", images=12, seed=4)
    refs += pickle.loads((folder / "refs(unc).p").read_bytes())
    return [s["sent"] for r in refs for s in r["sentences"]]


def test_compact_vocabulary_cuts_known_words_exactly_as_openai(compact, simple_tokenizer,
                                                               tmp_path):
    sentences = synth_sentences(tmp_path) + ["the background", "a small yellow star at the top"]
    for text in sentences:
        expected = [simple_tokenizer.decoder[i] for i in simple_tokenizer.encode(text)]
        got = compact.encode(text).tokens
        assert got == ["<|startoftext|>", *expected, "<|endoftext|>"], text


def test_compact_vocabulary_is_small_and_never_unknown(compact):
    size = compact.get_vocab_size()
    assert 512 < size < 1000
    assert compact.token_to_id("<|endoftext|>") == size - 1
    assert compact.token_to_id("<|startoftext|>") == size - 2
    for text in ("the purple mug", "ÜBER-größe 42 ☕", "zzzz"):
        enc = compact.encode(text)
        assert all(0 <= i < size for i in enc.ids)
        # the byte-level pieces spell the text back
        spelt = compact.decode(enc.ids).replace("</w>", "").replace(" ", "")
        assert spelt == text.lower().replace(" ", "")


def _described(words: list[str], objects, pixels) -> list:
    """Objects whose pixels, kind and size fit a noun phrase's words (checked independently of
    the generator: colour from the pixels, kind from the annotation, size from the area)."""
    kind = next(k for k in KINDS if k in words)
    found = []
    for obj in objects:
        colours = {c for c in COLOURS if (pixels[obj.mask] == COLOURS[c]).all()}
        if obj.shape.kind != kind or any(c in words and c not in colours for c in COLOURS):
            continue
        if any(size in words and obj.shape.size != size for size in ("big", "small")):
            continue
        found.append(obj)
    return found


def test_captions_are_true_of_their_object_checked_from_pixels():
    from zsris_rt.export.demo_clip import PLACES, caption_for

    rng = np.random.default_rng(5)
    checked = set()
    for _ in range(40):
        scene = draw_scene(rng)
        h, w = scene.pixels.shape[:2]
        for obj in scene.objects:
            for spatial in (True, False):
                words = caption_for(rng, obj, scene.objects, (h, w), spatial).text.split()
                cut = next(i for i, word in enumerate(words) if word in KINDS) + 1
                head, tail = words[:cut], words[cut:]
                assert obj in _described(head, [obj], scene.pixels), words
                if not spatial:
                    assert not tail and not {"big", "small"} & set(head), words
                ys, xs = np.nonzero(obj.mask)
                place = " ".join(tail)
                if place in PLACES:
                    checked.add("place")
                    assert {"on the left": xs.mean() < w / 3, "on the right": xs.mean() > 2 * w / 3,
                            "at the top": ys.mean() < h / 3,
                            "at the bottom": ys.mean() > 2 * h / 3}[place], words
                elif tail:
                    checked.add("relation")
                    relation = " ".join(tail[:2] if tail[1] == "of" else tail[:1])
                    anchors = [o for o in _described(tail, scene.objects, scene.pixels)
                               if o is not obj]
                    assert anchors, words

                    def centre(o):
                        yy, xx = np.nonzero(o.mask)
                        return xx.mean(), yy.mean()

                    (x, y) = centre(obj)
                    assert any({"left of": centre(a)[0] > x, "right of": centre(a)[0] < x,
                                "above": centre(a)[1] > y, "below": centre(a)[1] < y}[relation]
                               for a in anchors), words
    assert checked == {"place", "relation"}


def test_batch_rows_line_up_with_their_captions():
    """Feature rows are [whole-scene views of every scene, then crops of every scene]; each row's
    positive captions must name the colour its own pixels show (read from the crop), and a crop
    row none of what a crop cannot show."""
    from zsris_rt.export.clip_model import ClipConfig
    from zsris_rt.export.compact_vocab import compact_clip_tokenizer
    from zsris_rt.export.demo_clip import DEMO_CONFIG, WORDS, make_batch
    from zsris_rt.export.reference import IMAGENET_MEAN, IMAGENET_STD

    tokenizer = compact_clip_tokenizer(WORDS)
    texts: list[str] = []

    def tokenize(batch: list[str]) -> list[list[int]]:
        texts.extend(batch)
        return [e.ids for e in tokenizer.encode_batch(batch)]

    config = ClipConfig(vocab_size=tokenizer.get_vocab_size(), **DEMO_CONFIG)
    batch = make_batch(np.random.default_rng([11, 1, 0]), 4, tokenize, config, pad=0)
    crops = batch.crops.numpy() * np.array(IMAGENET_STD)[:, None, None] + \
        np.array(IMAGENET_MEAN)[:, None, None]
    pixels = np.round(crops.transpose(0, 2, 3, 1) * 255).reshape(len(crops), -1, 3)
    shown = []
    for crop in pixels:
        counts = {c: int((np.abs(crop - rgb).max(1) <= 2).sum()) for c, rgb in COLOURS.items()}
        shown.append(max(counts, key=counts.get) if max(counts.values()) > 200 else None)
    views = len(batch.grids)
    assert batch.positives.shape == (2 * views, len(texts)) and len(crops) == views
    for row in range(2 * views):
        colour = shown[row % views]
        positive = [texts[c] for c in np.flatnonzero(batch.positives[row].numpy())]
        assert positive
        for text in positive:
            words = text.split()
            head = words[:next((i for i, w in enumerate(words) if w in KINDS), len(words))]
            named = [c for c in COLOURS if c in head]
            if colour is None:  # the background's row
                assert text == "the background"
            elif named:
                assert named == [colour], (row, text, colour)
            if row >= views:
                assert not {"big", "small", "left", "right", "top", "bottom", "above",
                            "below"} & set(text.split()), text


def _row_losses(logits, positives, unknown) -> list[float]:
    """−log of the softmax mass on each row's positives, the unknown entries left out."""
    losses = []
    for row, pos_row, unknown_row in zip(logits, positives, unknown, strict=True):
        keep = [j for j in range(len(row)) if not unknown_row[j]]
        p = torch.softmax(row[keep], 0)
        losses.append(-float(torch.log(sum(p[n] for n, j in enumerate(keep) if pos_row[j]))))
    return losses


def test_multi_positive_loss_matches_a_loop():
    from zsris_rt.export.demo_clip import multi_positive_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen) * 3
    positives = torch.rand(6, 4, generator=gen) < 0.4
    positives[torch.arange(4), torch.arange(4)] = True
    positives[4:, 0] = True
    unknown = (torch.rand(6, 4, generator=gen) < 0.2) & ~positives
    views = _row_losses(logits, positives, unknown)
    texts = _row_losses(logits.T, positives.T, unknown.T)
    expected = 0.5 * (sum(views) / 6 + sum(texts) / 4)
    assert float(multi_positive_loss(logits, positives, unknown)) == pytest.approx(expected,
                                                                                  rel=1e-5)


def test_training_global_view_is_the_reference_masked_path():
    """The batch's whole-scene views through `global_features` equal the PyTorch reference of
    SPEC §2 on the same scene and masks."""
    from zsris_rt.export.clip_model import ClipConfig, ClipModel, random_init_
    from zsris_rt.export.demo_clip import DEMO_CONFIG, MASKED_BLOCKS, global_features, make_batch
    from zsris_rt.export.reference import GlobalLocalReference

    config = ClipConfig(vocab_size=600, **DEMO_CONFIG)
    model = random_init_(ClipModel(config), 3).eval()
    batch = make_batch(np.random.default_rng([9, 1, 0]), 1, lambda texts: [[1, 2]] * len(texts),
                       config, pad=0)
    scene = draw_scene(np.random.default_rng([9, 1, 0]))
    union = np.any([o.mask for o in scene.objects], axis=0)
    masks = np.stack([o.mask for o in scene.objects] + [~union])
    reference = GlobalLocalReference(model, masked_blocks=MASKED_BLOCKS)
    with torch.no_grad():
        ours = global_features(model, batch.scenes, batch.scene_index, batch.grids,
                               MASKED_BLOCKS)
        theirs = reference.global_features(reference.normalise(scene.pixels),
                                           torch.from_numpy(masks))
        crops = model.encode_image(batch.crops)
        local = reference.local_features(reference.normalise(scene.pixels),
                                         torch.from_numpy(masks))
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
    assert torch.allclose(crops, local, atol=1e-3), float((crops - local).abs().max())


def test_training_is_reproducible(tmp_path):
    from zsris_rt.export.demo_clip import train_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        facts = [train_clip(tmp_path / name, steps=3, seed=7, scenes_per_step=2)
                 for name in ("a", "b")]
    finally:
        torch.set_num_threads(threads)
    a = torch.load(tmp_path / "a" / "clip.pt")
    b = torch.load(tmp_path / "b" / "clip.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert facts[0]["final_loss"] == facts[1]["final_loss"]
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == \
        (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert a["token_embedding.weight"].shape[0] == facts[0]["vocabulary"]
