"""Referring-expression data in the `refer` layout (RefCOCO, RefCOCO+, RefCOCOg; SPEC.md §8).

`ROOT/<dataset>/refs(unc).p` (or `refs(umd).p` for RefCOCOg) is a pickle of plain dicts and lists;
`ROOT/<dataset>/instances.json` holds COCO-style images, annotations and categories. The pickle is
read by an unpickler that refuses every global, so a hostile file cannot run code. Every defect is
one ZsrisError line naming the file, never a traceback.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MaskError, ZsrisError
from .mask_io import decode_rles, segmentation_rle

REFS_FILES = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}


@dataclass(frozen=True)
class Sample:
    """One sentence of one ref: the unit of evaluation."""

    ref_id: int
    sent_id: int
    image_id: int
    ann_id: int
    sentence: str
    kind: str = ""  # an expression type when the data tags it (zsris-rt synth does), else ""

    @property
    def key(self) -> tuple[int, int]:
        return self.ref_id, self.sent_id


@dataclass(frozen=True)
class ImageInfo:
    id: int
    file_name: str
    height: int
    width: int


class _NoGlobals(pickle.Unpickler):
    """The real refs files hold only builtin containers, strings and numbers: any global (a class,
    a function such as os.system) can only come from a damaged or hostile file."""

    def find_class(self, module: str, name: str) -> Any:
        raise ZsrisError(f"refuses to load {module}.{name}: a refs file holds plain data only")


def load_refs(path: Path) -> list[dict[str, Any]]:
    """The refs of a pickle made by Python 2 or 3, without running anything it names."""
    try:
        data = _NoGlobals(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except ZsrisError as exc:
        raise ZsrisError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ZsrisError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # a corrupt pickle fails in many ways, all of them bad input
        raise ZsrisError(f"{path}: not a readable refs pickle ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ZsrisError(f"{path}: expected a list of refs (dicts), got {type(data).__name__}")
    return data


def _ints(record: dict[str, Any], keys: tuple[str, ...], what: str) -> tuple[int, ...]:
    values = []
    for key in keys:
        value = record.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ZsrisError(f"{what}: {key!r} must be an integer, got {value!r}")
        values.append(value)
    return tuple(values)


def _degenerate(seg: Any) -> bool:
    """Polygons of fewer than 3 points each enclose nothing (COCO has a few): an empty mask."""
    return isinstance(seg, list) and all(isinstance(p, list) and len(p) < 6 for p in seg)


class ReferDataset:
    """One dataset of a refer root: its refs, images and annotations, and masks on demand."""

    def __init__(self, root: str | Path, dataset: str) -> None:
        if dataset not in REFS_FILES:
            raise ZsrisError(f"unknown dataset {dataset!r}: use one of {', '.join(REFS_FILES)}")
        root = Path(root)
        if not root.is_dir():
            raise ZsrisError(f"data root not found: {root}")
        folder = root / dataset
        if not folder.is_dir():
            raise ZsrisError(f"dataset folder not found: {folder}")
        refs_path, instances_path = folder / REFS_FILES[dataset], folder / "instances.json"
        for path in (refs_path, instances_path):
            if not path.is_file():
                raise ZsrisError(f"{dataset}: {path.name} not found in {folder}")
        self.dataset = dataset
        self.instances_path = instances_path
        self.refs = load_refs(refs_path)
        self.refs_path = refs_path
        self.images, self.annotations = self._load_instances(instances_path)
        self.image_annotations: dict[int, list[int]] = {}
        for ann_id, ann in self.annotations.items():
            self.image_annotations.setdefault(ann["image_id"], []).append(ann_id)

    @staticmethod
    def _load_instances(path: Path) -> tuple[dict[int, ImageInfo], dict[int, dict[str, Any]]]:
        try:
            data = json.loads(path.read_bytes())
        except ValueError as exc:  # also UnicodeDecodeError
            raise ZsrisError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
        if not isinstance(data, dict) or not all(
                isinstance(data.get(key), list) for key in ("images", "annotations")):
            raise ZsrisError(f'{path}: expected a COCO document with "images" and "annotations"')
        images = {}
        for i, image in enumerate(data["images"]):
            what = f"{path}: images[{i}]"
            if not isinstance(image, dict) or not isinstance(image.get("file_name"), str):
                raise ZsrisError(f'{what}: needs "id", "file_name", "height" and "width"')
            image_id, height, width = _ints(image, ("id", "height", "width"), what)
            images[image_id] = ImageInfo(image_id, image["file_name"], height, width)
        annotations = {}
        for i, ann in enumerate(data["annotations"]):
            what = f"{path}: annotations[{i}]"
            if not isinstance(ann, dict) or "segmentation" not in ann:
                raise ZsrisError(f'{what}: needs "id", "image_id" and "segmentation"')
            annotations[_ints(ann, ("id", "image_id"), what)[0]] = ann
        return images, annotations

    def splits(self) -> list[str]:
        return sorted({str(ref.get("split")) for ref in self.refs})

    def samples(self, split: str) -> list[Sample]:
        """Every sentence of every ref in `split`, in file order."""
        if split not in self.splits():
            raise ZsrisError(f"no split {split!r} in {self.refs_path} (splits present: "
                             f"{', '.join(self.splits()) or 'none'})")
        samples = []
        for ref in self.refs:
            if ref.get("split") != split:
                continue
            what = f"{self.refs_path}: ref {ref.get('ref_id')!r}"
            ref_id, image_id, ann_id = _ints(ref, ("ref_id", "image_id", "ann_id"), what)
            if image_id not in self.images:
                raise ZsrisError(f"{what}: image {image_id} is not in {self.instances_path}")
            if ann_id not in self.annotations:
                raise ZsrisError(f"{what}: annotation {ann_id} is not in {self.instances_path}")
            sentences = ref.get("sentences")
            if not isinstance(sentences, list):
                raise ZsrisError(f"{what}: 'sentences' must be a list")
            for sentence in sentences:
                if not isinstance(sentence, dict) or not isinstance(sentence.get("sent"), str):
                    raise ZsrisError(f"{what}: each sentence needs 'sent_id' and 'sent'")
                (sent_id,) = _ints(sentence, ("sent_id",), what)
                kind = sentence.get("kind")
                samples.append(Sample(ref_id, sent_id, image_id, ann_id, sentence["sent"],
                                      kind if isinstance(kind, str) else ""))
        return samples

    def mask(self, ann_id: int) -> np.ndarray:
        """H×W bool mask of an annotation at its image's size (polygons merged, RLE as is)."""
        ann = self.annotations[ann_id]
        info = self.images.get(ann["image_id"])
        if info is None:
            raise ZsrisError(f"{self.instances_path}: annotation {ann_id} is of image "
                             f"{ann['image_id']}, which is not listed")
        size = (info.height, info.width)
        seg = ann["segmentation"]
        if _degenerate(seg):
            return np.zeros(size, dtype=bool)
        try:
            return decode_rles([segmentation_rle(seg, size, "segmentation")], size)[0]
        except MaskError as exc:
            raise ZsrisError(f"{self.instances_path}: annotation {ann_id}: {exc}") from None

    def instance_masks(self, image_id: int) -> tuple[list[int], np.ndarray]:
        """Ids and K×H×W masks of every annotation of an image, in file order."""
        info = self.images[image_id]
        ann_ids = self.image_annotations.get(image_id, [])
        masks = np.zeros((len(ann_ids), info.height, info.width), dtype=bool)
        for k, ann_id in enumerate(ann_ids):
            masks[k] = self.mask(ann_id)
        return ann_ids, masks
