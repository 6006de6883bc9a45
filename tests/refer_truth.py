"""Refer-layout data read straight with pickle, json and pycocotools, independently of the runtime's
reader, so that tests compare the code under test against a second implementation."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


class BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name}")


@dataclass
class Truth:
    refs: list[dict[str, Any]]
    doc: dict[str, Any]
    masks: dict[int, np.ndarray]  # annotation id → H×W bool

    def samples(self, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(ref, sentence) of every sentence of the split."""
        return [(ref, sent) for ref in self.refs if ref["split"] == split
                for sent in ref["sentences"]]

    def image_annotations(self, image_id: int) -> list[dict[str, Any]]:
        return [a for a in self.doc["annotations"] if a["image_id"] == image_id]


def decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return coco_mask.decode(rle).astype(bool)


def load_truth(folder: Path, refs_file: str = "refs(unc).p") -> Truth:
    with (folder / refs_file).open("rb") as f:
        refs = BuiltinsOnly(f, encoding="latin1").load()
    doc = json.loads((folder / "instances.json").read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in doc["images"]}
    masks = {a["id"]: decode(a["segmentation"], *sizes[a["image_id"]])
             for a in doc["annotations"]}
    return Truth(refs, doc, masks)
