"""`zsris-rt synth`: small synthetic datasets in the `refer` layout, to try and test `zsris-rt eval`
without RefCOCO or COCO at hand.

Each image holds 2–5 coloured shapes on a plain or lightly noisy background. Every shape is one
annotation (its visible pixels after occlusion) and one ref whose 1–3 sentences name it without
ambiguity ("the big red circle", "red circle", "the small blue square on the left"). Annotations
alternate between polygons and compressed RLE so that both decoding paths run. The same seed gives
the same bytes.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from .errors import ZsrisError
from .refer_data import REFS_FILES

KINDS = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB; the background is grey, never one of these
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 210, 30)}
SIZES = {"big": 0.2, "small": 0.1}  # radius as a fraction of the image's shorter side
SPLITS = {"refcoco": ("train", "val", "testA", "testB"),
          "refcoco+": ("train", "val", "testA", "testB"),
          "refcocog": ("train", "val", "test")}
MIN_VISIBLE = 0.5  # of a shape's own pixels, left after occlusion
PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class Shape:
    """What an expression can say about one object; a later kind or attribute goes here."""

    kind: str
    colour: str
    size: str
    centre: tuple[int, int]  # (x, y) pixels
    radius: int

    def draw(self, height: int, width: int) -> np.ndarray:
        """H×W bool pixels of the shape alone, no anti-aliasing (every pixel is its colour)."""
        canvas = np.zeros((height, width), dtype=np.uint8)
        (x, y), r = self.centre, self.radius
        if self.kind == "circle":
            cv2.circle(canvas, (x, y), r, 1, -1, cv2.LINE_8)
        elif self.kind == "square":
            half = round(r * 0.85)  # about the circle's area
            cv2.rectangle(canvas, (x - half, y - half), (x + half, y + half), 1, -1, cv2.LINE_8)
        else:
            corners = np.array([[x, y - r], [x - r, y + r * 3 // 4], [x + r, y + r * 3 // 4]])
            cv2.fillPoly(canvas, [corners.astype(np.int32)], 1, cv2.LINE_8)
        return canvas.astype(bool)


@dataclass
class SceneObject:
    shape: Shape
    mask: np.ndarray  # H×W bool, exactly what the annotation's segmentation decodes to
    segmentation: Any  # COCO polygons or compressed RLE

    @property
    def centre_x(self) -> float:
        return float(np.nonzero(self.mask)[1].mean())


def _place(rng: np.random.Generator, height: int, width: int) -> list[Shape]:
    """2–5 shapes, no two of the same colour and kind, each at least half visible; if no try
    achieves that, the last try's shapes that are not are left out."""
    count = int(rng.integers(2, 6))
    looks = rng.choice(len(COLOURS) * len(KINDS), size=count, replace=False)
    colours = list(COLOURS)
    shapes: list[Shape] = []
    for _ in range(PLACEMENT_TRIES):
        shapes = []
        for look in looks:
            size = str(rng.choice(list(SIZES)))
            r = max(3, round(SIZES[size] * min(height, width) * rng.uniform(0.9, 1.1)))
            centre = (int(rng.integers(r, width - r)), int(rng.integers(r, height - r)))
            shapes.append(Shape(KINDS[look % len(KINDS)], colours[look // len(KINDS)], size,
                                centre, r))
        if all(v >= MIN_VISIBLE for v in _visible_fractions(shapes, height, width)):
            return shapes
    keep = _visible_fractions(shapes, height, width)
    return [s for s, v in zip(shapes, keep, strict=True) if v >= MIN_VISIBLE]


def _visible(shapes: list[Shape], height: int, width: int) -> list[np.ndarray]:
    """Pixels of each shape not covered by a later one (later shapes are drawn on top)."""
    full = [s.draw(height, width) for s in shapes]
    covered = np.zeros((height, width), dtype=bool)
    visible = []
    for mask in reversed(full):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def _visible_fractions(shapes: list[Shape], height: int, width: int) -> list[float]:
    full = [s.draw(height, width).sum() for s in shapes]
    return [v.sum() / max(f, 1) for v, f in zip(_visible(shapes, height, width), full,
                                                 strict=True)]


def _polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Outer contours through pixel centres: pycocotools fills them inside the mask. None when the
    polygons would not decode to a non-empty subset of the mask (holes, slivers): use RLE."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polygons = [(c.reshape(-1, 2) + 0.5).ravel().tolist() for c in contours if len(c) >= 3]
    if not polygons:
        return None
    decoded = _decode(polygons, mask.shape)
    return polygons if decoded.any() and not (decoded & ~mask).any() else None


def _decode(segmentation: Any, size: tuple[int, ...]) -> np.ndarray:
    h, w = size
    rle = segmentation if isinstance(segmentation, dict) else \
        coco_mask.merge(coco_mask.frPyObjects(segmentation, h, w))
    return coco_mask.decode(rle).astype(bool)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _objects(shapes: list[Shape], height: int, width: int, first_ann: int) -> list[SceneObject]:
    objects = []
    for k, (shape, visible) in enumerate(zip(shapes, _visible(shapes, height, width),
                                             strict=True)):
        polygons = _polygons(visible) if (first_ann + k) % 2 == 0 else None
        segmentation = polygons if polygons is not None else _rle(visible)
        objects.append(SceneObject(shape, _decode(segmentation, (height, width)), segmentation))
    return objects


def describe(obj: SceneObject, scene: list[SceneObject], position: bool) -> list[str]:
    """True sentences that single `obj` out in `scene`. (colour, kind) is unique per image, so
    each is unambiguous; position words only where the dataset allows them (not RefCOCO+)."""
    s = obj.shape
    sentences = [f"the {s.size} {s.colour} {s.kind}", f"{s.colour} {s.kind}"]
    if sum(o.shape.kind == s.kind for o in scene) == 1:
        sentences.append(f"the {s.kind}")
    xs = [o.centre_x for o in scene]
    if position and obj.centre_x == min(xs):
        sentences.append(f"the {s.size} {s.colour} {s.kind} on the left")
    elif position and obj.centre_x == max(xs):
        sentences.append(f"the {s.size} {s.colour} {s.kind} on the right")
    return sentences


def _image(rng: np.random.Generator, objects: list[SceneObject], height: int,
           width: int) -> np.ndarray:
    grey = int(rng.integers(190, 240))
    image = np.full((height, width, 3), grey, dtype=np.int16)
    if rng.random() < 0.5:
        image += rng.integers(-8, 9, size=image.shape, dtype=np.int16)
    for obj in objects:
        image[obj.mask] = COLOURS[obj.shape.colour]
    return image.astype(np.uint8)


def write_synthetic_refer(root: str | Path, dataset: str = "refcoco", images: int = 8,
                          seed: int = 0, size: tuple[int, int] = (320, 240)) -> Path:
    """Write `images` images to ROOT/images and their refs and instances to ROOT/<dataset>;
    return ROOT/<dataset>. Image i goes to split i mod (number of splits)."""
    if dataset not in SPLITS:
        raise ZsrisError(f"unknown dataset {dataset!r}: use one of {', '.join(SPLITS)}")
    width, height = size
    if images < 1 or width < 32 or height < 32:
        raise ZsrisError(f"need at least 1 image of at least 32×32 pixels, got {images} of "
                         f"{width}×{height}")
    root = Path(root)
    folder, image_folder = root / dataset, root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    image_folder.mkdir(parents=True, exist_ok=True)
    splits = SPLITS[dataset]
    doc: dict[str, Any] = {"images": [], "annotations": [], "categories": [
        {"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(KINDS)]}
    refs: list[dict[str, Any]] = []
    for index in range(images):
        rng = np.random.default_rng([seed, index])
        image_id, file_name = index + 1, f"synth_s{seed}_{index:05d}.png"
        objects = _objects(_place(rng, height, width), height, width, len(doc["annotations"]))
        cv2.imwrite(str(image_folder / file_name), _image(rng, objects, height, width)[:, :, ::-1])
        doc["images"].append({"id": image_id, "file_name": file_name, "height": height,
                              "width": width})
        for obj in objects:
            ann_id = 1000 + len(doc["annotations"])
            x0, y0, w, h = cv2.boundingRect(obj.mask.astype(np.uint8))
            category = KINDS.index(obj.shape.kind) + 1
            doc["annotations"].append({
                "id": ann_id, "image_id": image_id, "category_id": category,
                "segmentation": obj.segmentation, "bbox": [x0, y0, w, h],
                "area": int(obj.mask.sum()), "iscrowd": 0})
            candidates = describe(obj, objects, position=dataset != "refcoco+")
            count = int(rng.integers(1, min(3, len(candidates)) + 1))
            chosen = sorted(rng.choice(len(candidates), size=count, replace=False))
            first_sent = sum(len(r["sentences"]) for r in refs)
            sentences = [{"sent_id": first_sent + n, "sent": candidates[c], "raw": candidates[c],
                          "tokens": candidates[c].split()} for n, c in enumerate(chosen)]
            refs.append({"ref_id": len(refs), "ann_id": ann_id, "image_id": image_id,
                         "split": splits[index % len(splits)], "category_id": category,
                         "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})
    (folder / "instances.json").write_text(json.dumps(doc), encoding="utf-8")
    (folder / REFS_FILES[dataset]).write_bytes(pickle.dumps(refs, protocol=2))
    return folder


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 320x240, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsris-rt synth",
        description="Write a small synthetic dataset in the refer layout (shapes and colours), "
                    "to try `zsris-rt eval` without RefCOCO.")
    parser.add_argument("--out", type=Path, required=True, help="data root to write")
    parser.add_argument("--dataset", default="refcoco", choices=tuple(SPLITS),
                        help="layout to mimic (default refcoco)")
    parser.add_argument("--images", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=_size, default=(320, 240),
                        help="image size WxH (default 320x240)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = write_synthetic_refer(args.out, args.dataset, args.images, args.seed, args.size)
    except ZsrisError as exc:
        print(f"zsris-rt synth: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"zsris-rt synth: error: cannot write {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    print(f"wrote {args.images} images to {args.out / 'images'} and refs to {folder}")
    print(f"try: zsris-rt eval --pack PACK --data {args.out} --dataset {args.dataset} "
          f"--split val --images {args.out / 'images'} --out eval-{args.dataset} --proposals gt")
    return 0
