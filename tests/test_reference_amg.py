"""The reference automatic mask generator (export/reference_amg.py) is itself right.

Each step is checked against segment-anything 1.0's own code (`utils/amg.py`, `Sam`,
`ResizeLongestSide`), NMS against a brute-force O(K²) search, and the whole generator against the
official `SamAutomaticMaskGenerator.generate` driving the same transformers model through a
stand-in predictor. segment-anything's package `__init__` imports torchvision, which is broken
here: its modules are loaded under a bare parent package, and the two torchvision names the
generator imports are served by stubs (the NMS stub is the brute force below).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import random_scene
from zsris_rt.export import reference_amg as ref
from zsris_rt.export.random_checkpoint import random_sam
from zsris_rt.pack import ProposerSettings

SETTINGS = {
    "sam": ProposerSettings(family="sam", input_size=256, low_res_size=64, resize="longest",
                            resize_filter="bicubic", embeddings=("image_embeddings",)),
    "sam2": ProposerSettings(family="sam2", input_size=256, low_res_size=64, resize="square",
                             resize_filter="bilinear",
                             embeddings=("high_res_feats_0", "high_res_feats_1",
                                         "image_embeddings")),
}
# Random tiny models mostly predict masks scattered over the whole image, whose boxes all overlap;
# these seeds, images and thresholds leave several masks after NMS (see `test_generate_*`).
SEEDS = {"sam": 1, "sam2": 1}
THRESHOLDS = {"sam": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
              "sam2": dict(pred_iou_thresh=0.5, stability_score_thresh=0.8)}
FIELDS = ("masks", "iou", "stability", "boxes", "points")


def halves(height: int, width: int) -> np.ndarray:
    """Black left half, white right half."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, width // 2:] = 255
    return image


def sample_image(family: str) -> np.ndarray:
    """A non-square image per family: portrait for SAM (right padding), landscape for SAM 2."""
    if family == "sam":
        return random_scene(np.random.default_rng(0), 200, 130, 1)[0]
    return halves(150, 200)


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """All pairwise IoUs of inclusive boxes as torchvision computes them: float32, no +1."""
    b = boxes.astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.maximum(np.float32(0), np.minimum(b[:, None, 2], b[None, :, 2])
                   - np.maximum(b[:, None, 0], b[None, :, 0]))
    h = np.maximum(np.float32(0), np.minimum(b[:, None, 3], b[None, :, 3])
                   - np.maximum(b[:, None, 1], b[None, :, 1]))
    inter = w * h
    with np.errstate(invalid="ignore"):
        return inter / (area[:, None] + area[None, :] - inter)


def nms_bruteforce(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Greedy NMS spelled out: a box is kept unless a kept box's IoU with it, in float64, is above
    the threshold; boxes are visited by score, ties in index order."""
    iou = pairwise_iou(boxes)
    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda k: -float(scores[k])):  # sorted() is stable
        if not any(float(iou[k, i]) > thresh for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def _batched_nms_stub(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                      iou_threshold: float) -> torch.Tensor:
    assert not idxs.any(), "one category only"
    return torch.from_numpy(nms_bruteforce(boxes.numpy(), scores.numpy(), iou_threshold))


def _unavailable(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("not reached with one crop and the stand-in predictor")


@pytest.fixture(scope="module")
def official() -> Iterator[SimpleNamespace]:
    """segment-anything 1.0's modules, imported without its package `__init__`."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("segment-anything is not installed (pip install segment-anything==1.0)")
    stubs = {"torchvision": {}, "torchvision.ops": {},
             "torchvision.ops.boxes": dict(batched_nms=_batched_nms_stub, box_area=_unavailable),
             "torchvision.transforms": {},
             "torchvision.transforms.functional": dict(resize=_unavailable,
                                                       to_pil_image=_unavailable)}
    with pytest.MonkeyPatch.context() as patch:
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        patch.setitem(sys.modules, "segment_anything", package)
        loaded = set(sys.modules)
        amg = importlib.import_module("segment_anything.utils.amg")
        modeling = importlib.import_module("segment_anything.modeling")
        pulled = {m for m in set(sys.modules) - loaded if m.split(".")[0] == "torchvision"}
        assert not pulled, f"segment-anything's amg/modeling imported {sorted(pulled)}"
        for name, attributes in stubs.items():
            stub = types.ModuleType(name)
            stub.__dict__.update(attributes)
            patch.setitem(sys.modules, name, stub)
        yield SimpleNamespace(
            amg=amg, Sam=modeling.Sam,
            ResizeLongestSide=importlib.import_module(
                "segment_anything.utils.transforms").ResizeLongestSide,
            Generator=importlib.import_module(
                "segment_anything.automatic_mask_generator").SamAutomaticMaskGenerator)
        for name in [m for m in sys.modules if m.startswith("segment_anything.")]:
            del sys.modules[name]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny models' ops are too small to gain from threads, and lose 10× on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {family: random_sam(family, "tiny", seed=SEEDS[family]) for family in SETTINGS}


# ---- steps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 8, 32])
def test_point_grid_is_official(official: SimpleNamespace, n: int) -> None:
    expected = official.amg.build_point_grid(n) * np.array([[200, 150]])
    assert np.array_equal(ref.point_grid(n, 150, 200).numpy(), expected)


@pytest.mark.parametrize("hw", [(150, 200), (200, 130), (256, 256), (37, 300), (1000, 999)])
def test_input_frame_is_official(official: SimpleNamespace, hw: tuple[int, int]) -> None:
    """SAM: `ResizeLongestSide` shape and `apply_coords`; SAM 2: its `transform_coords`."""
    h, w = hw
    points = ref.point_grid(8, h, w)
    resize = official.ResizeLongestSide(256)
    assert ref.input_shape(h, w, SETTINGS["sam"]) == resize.get_preprocess_shape(h, w, 256)
    expected = torch.as_tensor(resize.apply_coords(points.numpy(), (h, w))).to(torch.float32)
    assert torch.equal(ref.to_encoder_frame(points, h, w, SETTINGS["sam"]), expected)
    # sam2/utils/transforms.py, SAM2Transforms.transform_coords(normalize=True), after the
    # generator's `torch.as_tensor(points, dtype=torch.float32)` (its module imports torchvision).
    coords = points.to(torch.float32).clone()
    coords[..., 0] = coords[..., 0] / w
    coords[..., 1] = coords[..., 1] / h
    assert torch.equal(ref.to_encoder_frame(points, h, w, SETTINGS["sam2"]), coords * 256)
    assert ref.input_shape(h, w, SETTINGS["sam2"]) == (256, 256)


@pytest.mark.parametrize("family", ["sam", "sam2"])
@pytest.mark.parametrize("hw", [(150, 200), (200, 130), (300, 300)])
def test_preprocess_normalises_resizes_and_pads(family: str, hw: tuple[int, int]) -> None:
    """Resizing is linear, so normalising before or after it agrees up to rounding."""
    settings = SETTINGS[family]
    image = random_scene(np.random.default_rng(1), *hw, 1)[0]
    pixel = ref.preprocess(image, settings)
    assert pixel.shape == (1, 3, 256, 256) and pixel.dtype == torch.float32
    new_h, new_w = ref.input_shape(*hw, settings)
    raw = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float64) / 255
    resized = F.interpolate(raw, (new_h, new_w), mode=settings.resize_filter,
                            align_corners=False, antialias=True)
    mean = torch.tensor(settings.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(settings.std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = ((resized - mean) / std).to(torch.float32)
    torch.testing.assert_close(pixel[..., :new_h, :new_w], expected, rtol=0, atol=1e-5)
    assert not pixel[..., new_h:, :].any() and not pixel[..., :, new_w:].any()


@pytest.mark.parametrize("family", ["sam", "sam2"])
@pytest.mark.parametrize("hw", [(150, 200), (200, 130), (256, 256), (37, 300)])
def test_postprocess_is_official(official: SimpleNamespace, family: str,
                                 hw: tuple[int, int]) -> None:
    logits = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 10
    got = ref.postprocess_logits(logits, *hw, SETTINGS[family])
    if family == "sam":
        sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=256))
        shape = ref.input_shape(*hw, SETTINGS[family])
        expected = official.Sam.postprocess_masks(sam, logits, shape, hw)
    else:  # sam2/utils/transforms.py postprocess_masks, hole filling off (the predictor default)
        expected = F.interpolate(logits, hw, mode="bilinear", align_corners=False)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("threshold, offset", [(0.0, 1.0), (0.25, 0.5), (0.0, 0.0)])
def test_stability_is_official(official: SimpleNamespace, threshold: float, offset: float) -> None:
    """Logits on a quarter grid hit the cuts exactly; an all-negative mask gives 0/0 = NaN."""
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.integers(-8, 9, (6, 3, 20, 30)) / 4).to(torch.float32)
    logits[0, 0] = -5
    got = ref.stability_score(logits, threshold, offset)
    expected = official.amg.calculate_stability_score(logits, threshold, offset)
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert got[0, 0].isnan()


def test_mask_to_box_is_official(official: SimpleNamespace) -> None:
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((40, 17, 23)) < np.linspace(0, 0.05, 40)[:, None, None])
    masks[0] = False
    masks[1] = True
    masks[2:6] = False
    for k, (y, x) in enumerate([(0, 0), (16, 22), (0, 22), (16, 0)], start=2):
        masks[k, y, x] = True
    got = ref.mask_to_box(masks)
    assert got.dtype == torch.int64
    assert torch.equal(got, official.amg.batched_mask_to_box(masks))
    assert torch.equal(got[1], torch.tensor([0, 0, 22, 16]))


def test_nms_matches_bruteforce_with_overlaps_and_ties() -> None:
    rng = np.random.default_rng(0)
    k = 300
    x0 = rng.integers(0, 12, k)
    y0 = rng.integers(0, 12, k)
    boxes = np.stack([x0, y0, x0 + rng.integers(0, 8, k), y0 + rng.integers(0, 8, k)], 1)
    scores = np.where(rng.random(k) < 0.7, rng.choice([0.25, 0.5, 0.75], k),
                      rng.random(k)).astype(np.float32)
    assert len(nms_bruteforce(boxes, scores, 1.0)) == k  # nothing is above 1
    iou = pairwise_iou(boxes)
    some = np.unique(iou[(iou > 0) & (iou < 1)])[::50]
    # IoUs met exactly, and thresholds just under a float32 IoU (equal once rounded to float32).
    thresholds = [0.0, 0.3, 0.5, 0.7, 0.9, 1.0, *map(float, some),
                  *(float(v) - 1e-12 for v in some)]
    suppressed_any = False
    for thresh in thresholds:
        expected = nms_bruteforce(boxes, scores, thresh)
        got = ref.box_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thresh)
        assert got.dtype == torch.int64
        assert np.array_equal(got.numpy(), expected), thresh
        suppressed_any |= len(expected) < k
    assert suppressed_any and len(some) > 3


def test_nms_keeps_score_ties_in_index_order() -> None:
    boxes = torch.tensor([[10 * i, 0, 10 * i + 5, 5] for i in range(6)])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.5, 0.1])
    assert ref.box_nms(boxes, scores, 0.7).tolist() == [1, 3, 0, 2, 4, 5]
    # The same box twice: the earlier of two equal scores survives.
    assert ref.box_nms(torch.tensor([[0, 0, 4, 4]] * 3), torch.tensor([0.2, 0.5, 0.5]),
                       0.7).tolist() == [1]


# ---- the whole generator ------------------------------------------------------------------------


class _Predictor:
    """segment-anything's `SamPredictor` interface around a transformers model, so the official
    generator's own control flow runs on it. The image goes through the project's preprocessing
    (tested above); everything after the decoder is the official code's."""

    def __init__(self, model: torch.nn.Module, settings: ProposerSettings,
                 official: SimpleNamespace) -> None:
        self.net = model
        self.settings = settings
        self.official = official
        self.model = SimpleNamespace(mask_threshold=settings.mask_threshold)
        self.device = torch.device("cpu")
        self.transform = (official.ResizeLongestSide(settings.input_size)
                          if settings.resize == "longest" else SimpleNamespace(
                              apply_coords=self._sam2_coords))

    def _sam2_coords(self, coords: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """SAM 2's generator: points to float32, then `transform_coords(normalize=True)`."""
        h, w = size
        unit = coords.astype(np.float32) / np.array([w, h], dtype=np.float32)
        return unit * np.float32(self.settings.input_size)

    def set_image(self, image: np.ndarray) -> None:
        self.size = image.shape[:2]
        self.embeddings = self.net.get_image_embeddings(ref.preprocess(image, self.settings))

    def reset_image(self) -> None:
        self.embeddings = None

    def predict_torch(self, point_coords: torch.Tensor, point_labels: torch.Tensor,
                      multimask_output: bool, return_logits: bool) -> tuple[torch.Tensor, ...]:
        assert multimask_output and return_logits
        out = self.net(image_embeddings=self.embeddings,
                       input_points=point_coords.to(torch.float32)[None],
                       input_labels=point_labels.to(torch.int64)[None], multimask_output=True)
        low = out.pred_masks[0]
        if self.settings.resize == "longest":
            sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=self.settings.input_size))
            masks = self.official.Sam.postprocess_masks(
                sam, low, ref.input_shape(*self.size, self.settings), self.size)
        else:  # SAM 2's postprocess_masks
            masks = F.interpolate(low, self.size, mode="bilinear", align_corners=False)
        return masks, out.iou_scores[0], low


@pytest.mark.parametrize("family, thresholds", [
    ("sam", THRESHOLDS["sam"]),
    ("sam2", THRESHOLDS["sam2"]),
    ("sam2", dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9)),
])
def test_generate_is_the_official_generator(official: SimpleNamespace, models: dict,
                                            family: str, thresholds: dict,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Official `generate()` minus its empty masks (kept there when the stability filter is off)
    equals the reference, mask for mask, in order."""
    # The official masks → RLE → masks round trip is lossless and takes seconds on scattered
    # masks; carry the masks through instead.
    module = sys.modules[official.Generator.__module__]
    monkeypatch.setattr(module, "mask_to_rle_pytorch",
                        lambda masks: [{"mask": m.numpy(), "counts": [0, int(m.sum())]}
                                       for m in masks])
    monkeypatch.setattr(module, "rle_to_mask", lambda rle: rle["mask"])
    settings, image = SETTINGS[family], sample_image(family)
    generator = official.Generator(
        SimpleNamespace(image_encoder=SimpleNamespace(img_size=settings.input_size)),
        points_per_side=8, points_per_batch=64, **thresholds)
    generator.predictor = _Predictor(models[family], settings, official)
    records = [r for r in generator.generate(image) if r["area"] > 0]
    got = ref.reference_generate(models[family], settings, image, points_per_side=8,
                                 points_per_batch=64, **thresholds)
    print(f"{family} {thresholds}: {len(got)} masks")
    assert len(got) == len(records) > 0
    assert np.array_equal(got.masks.numpy(), np.stack([r["segmentation"] for r in records]))
    assert got.iou.tolist() == [r["predicted_iou"] for r in records]
    assert got.stability.tolist() == [r["stability_score"] for r in records]
    x0, y0, x1, y1 = got.boxes.unbind(1)
    xywh = torch.stack([x0, y0, x1 - 1 - x0, y1 - 1 - y0], 1)  # official w, h are x1 - x0 inclusive
    assert xywh.tolist() == [r["bbox"] for r in records]
    assert np.array_equal(got.points.numpy(),
                          np.float32([r["point_coords"][0] for r in records]))


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_generate_properties(models: dict, family: str) -> None:
    settings, image = SETTINGS[family], sample_image(family)
    height, width = image.shape[:2]
    got = ref.reference_generate(models[family], settings, image, points_per_side=8,
                                 **THRESHOLDS[family])
    unsuppressed = ref.reference_generate(models[family], settings, image, points_per_side=8,
                                          box_nms_thresh=1.0, **THRESHOLDS[family])
    print(f"{family} {THRESHOLDS[family]}: {len(got)} masks of {len(unsuppressed)} before NMS")
    assert 3 <= len(got) < len(unsuppressed)
    assert got.masks.shape == (len(got), height, width) and got.masks.dtype == torch.bool
    assert got.iou.dtype == got.stability.dtype == got.points.dtype == torch.float32
    assert got.boxes.dtype == torch.int64
    for mask, box in zip(got.masks.numpy(), got.boxes.tolist(), strict=True):
        ys, xs = np.nonzero(mask)
        assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert (got.iou[:-1] >= got.iou[1:]).all()
    overlap = np.nan_to_num(pairwise_iou((got.boxes - torch.tensor([0, 0, 1, 1])).numpy()))
    np.fill_diagonal(overlap, 0)
    assert overlap.astype(np.float64).max() <= settings.generator.box_nms_thresh
    grid = ref.point_grid(8, height, width).to(torch.float32)
    assert (got.points[:, None] == grid[None]).all(-1).any(-1).all()

    capped = ref.reference_generate(models[family], settings, image, points_per_side=8,
                                    max_masks=2, **THRESHOLDS[family])
    assert all(torch.equal(getattr(capped, f), getattr(got, f)[:2]) for f in FIELDS)


class _ChunkInvariant:
    """The model with every prompt decoded once, in one batch, and chunks served from that. The
    batched decoder's logits move by ~1e-4 with the chunk size (float rounding), which flips
    near-threshold pixels; serving fixed rows makes every logit independent of chunking, so only
    the generator's chunk bookkeeping is compared."""

    def __init__(self, model: torch.nn.Module, prompts: torch.Tensor) -> None:
        self.model = model
        self.prompts = prompts  # N×2, the encoder-frame grid
        self.decoded: Any = None

    def get_image_embeddings(self, pixel: torch.Tensor) -> Any:
        return self.model.get_image_embeddings(pixel)

    def __call__(self, *, input_points: torch.Tensor, input_labels: torch.Tensor,
                 **kwargs: Any) -> SimpleNamespace:
        if self.decoded is None:
            n = len(self.prompts)
            self.decoded = self.model(input_points=self.prompts[None, :, None],
                                      input_labels=torch.ones(1, n, 1, dtype=torch.int64),
                                      **kwargs)
        rows = (input_points[0, :, 0, None] == self.prompts[None]).all(-1).int().argmax(1)
        assert torch.equal(self.prompts[rows], input_points[0, :, 0])
        return SimpleNamespace(pred_masks=self.decoded.pred_masks[:, rows],
                               iou_scores=self.decoded.iou_scores[:, rows])


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_chunk_size_does_not_change_the_result(models: dict, family: str) -> None:
    settings, image = SETTINGS[family], sample_image(family)
    height, width = image.shape[:2]
    prompts = ref.to_encoder_frame(ref.point_grid(8, height, width), height, width, settings)
    model = _ChunkInvariant(models[family], prompts)
    by_7, by_64 = (ref.reference_generate(model, settings, image, points_per_side=8,
                                          points_per_batch=n, **THRESHOLDS[family])
                   for n in (7, 64))
    assert len(by_64) >= 3
    assert all(torch.equal(getattr(by_7, f), getattr(by_64, f)) for f in FIELDS)


def test_overrides_are_generator_fields_only(models: dict) -> None:
    image = sample_image("sam")
    with pytest.raises(TypeError):
        ref.reference_generate(models["sam"], SETTINGS["sam"], image, points_per_sid=8)
    none = ref.reference_generate(models["sam"], SETTINGS["sam"], image, points_per_side=2,
                                  max_masks=0)
    assert none.masks.shape == (0, 200, 130) and none.boxes.shape == (0, 4)
