"""Proposal masks in and out: validation, loading from files and COCO RLE.

Masks given by a caller skip the proposer, so everything here treats them as untrusted input:
every defect is a one-line MaskError, never a traceback or a silently wrong mask.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from .errors import MaskError
from .maskops import rle_decode as decode_counts
from .maskops import rle_encode as encode_counts

# Most candidate masks a file may hold (K); beyond it a file is a mistake or an attack.
MAX_MASKS = 4096
_NAMED_AT_MOST = 5  # indices an error message names before it says "and N more"


def _hw(size: tuple[int, int] | list[int]) -> str:
    return f"{size[0]}×{size[1]}"


def validate_masks(masks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Return `masks` as a C-contiguous K×H×W bool array, or raise MaskError saying what is wrong.

    A bare H×W array is one mask; integer and float arrays are accepted when they hold only 0 and 1,
    so that 0/255 images or soft scores are refused instead of being thresholded by guesswork.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        shape = "×".join(str(n) for n in masks.shape) or "scalar"
        raise MaskError(f"masks must be H×W or K×H×W, got {masks.ndim} dimensions ({shape})")
    kind = masks.dtype
    if not (
        kind == np.bool_ or np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)
    ):
        raise MaskError(f"masks must be bool, integer or float, not {kind}")
    if masks.shape[0] == 0:
        raise MaskError("no masks given (K = 0)")
    if masks.shape[0] > MAX_MASKS:
        raise MaskError(f"{masks.shape[0]} masks given; at most {MAX_MASKS} are scored")
    if tuple(masks.shape[1:]) != tuple(image_size):
        raise MaskError(
            f"masks are {_hw(masks.shape[1:])} (H×W) but the image is {_hw(image_size)}"
        )
    if kind != np.bool_:
        bad = (masks != 0) & (masks != 1)
        if bad.any():
            k, y, x = np.unravel_index(int(bad.argmax()), masks.shape)
            raise MaskError(
                f"mask values must be 0 or 1 (or bool): "
                f"mask {k} has {masks[k, y, x]} at x={x}, y={y}"
            )
        masks = masks != 0
    empty = np.flatnonzero(~masks.any(axis=(1, 2)))
    if empty.size == 1:
        raise MaskError(f"mask {empty[0]} is empty (all false)")
    if empty.size:
        named = ", ".join(str(k) for k in empty[:_NAMED_AT_MOST])
        more = empty.size - _NAMED_AT_MOST
        tail = f" and {more} more" if more > 0 else ""
        raise MaskError(f"masks {named}{tail} are empty (all false)")
    return np.ascontiguousarray(masks)


def to_coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of one H×W mask as a JSON-ready dict {"size": [h, w], "counts": str}."""
    mask = np.asarray(mask, dtype=bool)
    return {"size": [int(n) for n in mask.shape], "counts": encode_counts(mask[None])[0]}


def from_coco_rle(rle: dict[str, Any]) -> np.ndarray:
    """H×W bool mask of a COCO RLE dict (compressed string or uncompressed list counts)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError('an RLE must be a dict with "size" and "counts"')
    size = _rle_size(rle, "RLE")
    return decode_rles([_to_compressed(rle, size, "RLE")], size)[0]


def _rle_size(rle: dict[str, Any], what: str) -> tuple[int, int]:
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(n, int) and n > 0 for n in size)
    ):
        raise MaskError(f'{what}: RLE "size" must be [height, width], got {size!r}')
    return size[0], size[1]


def _to_compressed(rle: dict[str, Any], size: tuple[int, int], what: str) -> dict[str, Any]:
    """Compressed form of an RLE; uncompressed (list) counts are converted by pycocotools."""
    counts = rle["counts"]
    if isinstance(counts, str):
        return {"size": list(size), "counts": counts.encode("ascii", "replace")}
    if isinstance(counts, bytes):
        return {"size": list(size), "counts": counts}
    if isinstance(counts, list):
        try:
            return coco_mask.frPyObjects({"size": list(size), "counts": counts}, *size)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MaskError(f"{what}: invalid uncompressed RLE counts ({_one_line(exc)})") from None
    raise MaskError(f'{what}: RLE "counts" must be a string or a list, not {type(counts).__name__}')


def decode_rles(rles: list[dict[str, Any]], size: tuple[int, int]) -> np.ndarray:
    """K×H×W bool masks of compressed RLEs that all have `size`. Counts that are malformed or do
    not cover H·W exactly are refused (pycocotools would leave pixels uninitialised)."""
    return decode_counts([rle["counts"] for rle in rles], size)


def _polygon_rle(polygons: list[Any], size: tuple[int, int], what: str) -> dict[str, Any]:
    """Union of a segmentation's polygons as one compressed RLE.

    Parts of fewer than 3 points enclose nothing and are dropped: COCO has a few, and pycocotools
    would read a 4-number part as a box.
    """
    parts = []
    for poly in polygons:
        if not isinstance(poly, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly
        ):
            raise MaskError(
                f"{what}: a polygon must be a flat list of numbers [x0, y0, x1, y1, ...]"
            )
        if len(poly) % 2:
            raise MaskError(f"{what}: polygon has an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:
            parts.append(poly)
    if not parts:
        raise MaskError(f"{what}: no polygon with at least 3 points")
    return coco_mask.merge(coco_mask.frPyObjects(parts, *size))


def segmentation_rle(seg: Any, size: tuple[int, int], what: str) -> dict[str, Any]:
    """Compressed RLE of a COCO segmentation (RLE dict, compressed or not, or polygons) for an
    image of `size` (H, W); a MaskError names `what`."""
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        rle_size = _rle_size(seg, what)
        if rle_size != tuple(size):
            raise MaskError(f"{what}: RLE is {_hw(rle_size)} (H×W) but the image is {_hw(size)}")
        return _to_compressed(seg, rle_size, what)
    if isinstance(seg, list):
        return _polygon_rle(seg, size, what)
    raise MaskError(f"{what}: segmentation must be an RLE dict or a list of polygons")


def _coco_segmentations(data: Any) -> list[Any]:
    """The segmentations of a COCO-style document, refusing annotations of several images."""
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise MaskError(
            "JSON masks must be a list of annotations or segmentations, "
            'or a dict with "annotations"'
        )
    image_ids = list(
        dict.fromkeys(str(a["image_id"]) for a in data if isinstance(a, dict) and "image_id" in a)
    )
    if len(image_ids) > 1:
        named = ", ".join(image_ids[:_NAMED_AT_MOST])
        more = ", ..." if len(image_ids) > _NAMED_AT_MOST else ""
        raise MaskError(
            f"annotations are from {len(image_ids)} images (image_id {named}{more}): "
            "give the annotations of one image"
        )
    segs = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and "counts" not in item:
            if "segmentation" not in item:
                raise MaskError(f'annotation {i} has no "segmentation"')
            item = item["segmentation"]
        segs.append(item)
    return segs


def _load_json(raw: bytes, image_size: tuple[int, int]) -> np.ndarray:
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # also UnicodeDecodeError and JSONDecodeError
        raise MaskError(f"not valid JSON ({_one_line(exc)})") from None
    size = (int(image_size[0]), int(image_size[1]))
    segs = _coco_segmentations(data)
    return decode_rles(
        [segmentation_rle(seg, size, f"mask {i}") for i, seg in enumerate(segs)], size
    )


def _load_numpy(raw: bytes, image_size: tuple[int, int]) -> np.ndarray:
    """Array of an .npy, or of an .npz under "masks" or as its only member.

    np.load sniffs the format, so a file with the other of the two suffixes still loads. An .npz
    member that would inflate beyond MAX_MASKS masks of the image is refused before inflating.
    """
    data = np.load(io.BytesIO(raw), allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data as npz:
        keys = list(npz.files)
        name = "masks" if "masks" in keys else keys[0] if len(keys) == 1 else None
        if name is not None:
            inflated = npz.zip.getinfo(f"{name}.npy").file_size
            limit = MAX_MASKS * int(image_size[0]) * int(image_size[1]) + (1 << 20)
            if inflated > limit:
                raise MaskError(f'"{name}" inflates to {inflated} bytes, more than '
                                f"{MAX_MASKS} masks of the image")
            return npz[name]
    found = ", ".join(keys) or "none"
    raise MaskError(f'expected an array named "masks" or a single array, found {found}')


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def masks_from_bytes(raw: bytes, image_size: tuple[int, int], where: str = "masks") -> np.ndarray:
    """Proposal masks from the bytes of an .npz, .npy or COCO-style JSON document (told apart by
    their content, never by a name), validated for the image."""
    return _read_masks(raw, image_size, where, raw.lstrip()[:1] in (b"[", b"{"),
                       ": not an .npz, .npy or COCO JSON document")


def load_masks(path: str | Path, image_size: tuple[int, int]) -> np.ndarray:
    """Read proposal masks from .npz, .npy or COCO-style .json and validate them for the image."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".json"):
        raise MaskError(
            f"{path}: unknown mask file type {suffix or '(none)'}: use .npz, .npy or .json"
        )
    if not path.exists():
        raise MaskError(f"mask file not found: {path}")
    if not path.is_file():
        raise MaskError(f"mask path is not a file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MaskError(f"{path}: cannot read masks ({type(exc).__name__}: "
                        f"{_one_line(exc)})") from None
    return _read_masks(raw, image_size, str(path), suffix == ".json", "")


def _read_masks(raw: bytes, image_size: tuple[int, int], where: str, as_json: bool,
                hint: str) -> np.ndarray:
    """The masks of a JSON or NumPy document, validated; every defect one MaskError naming
    `where` (`hint` follows "cannot read masks" when the document cannot be read at all)."""
    try:
        masks = _load_json(raw, image_size) if as_json else _load_numpy(raw, image_size)
        return validate_masks(masks, image_size)
    except MaskError as exc:
        raise MaskError(f"{where}: {exc}") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise MaskError(f"{where}: cannot read masks{hint} ({type(exc).__name__}: "
                        f"{_one_line(exc)})") from None
