"""oIoU and mIoU on data in the refer layout (RefCOCO, RefCOCO+, RefCOCOg), as
SPEC.md §8 defines them.

Each image is encoded once and every sentence of every ref on it is scored against that scene.
IoU is taken at the original resolution. Images for which the proposer keeps no mask are skipped
by the official protocol; the strict figures count their sentences as IoU 0 (union = the
ground-truth area). One CSV row per sentence is flushed after each image, so an interrupted run
resumes where it stopped (`--resume`); the summary is written atomically at the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NoMaskError, TextError, ZsrisError
from .image import read_image
from .progress import Progress
from .refer_data import ReferDataset, Sample

if TYPE_CHECKING:
    from .segmenter import Segmenter

THRESHOLDS = (0.5, 0.7, 0.9)  # cumulative precision P@X: share of samples with IoU ≥ X
CSV_NAME, SUMMARY_NAME, SETTINGS_NAME = "samples.csv", "summary.json", "settings.json"


@dataclass(frozen=True)
class Row:
    """One sentence's outcome: a line of samples.csv. Skipped rows have I = 0, U = gt area."""

    ref_id: int
    sent_id: int
    image_id: int
    ann_id: int
    sentence: str
    iou: float
    intersection: int
    union: int
    index: int | None  # the chosen mask among the scene's, None when skipped
    num_masks: int
    score: float | None
    skipped: bool
    kind: str  # the sentence's expression type when the data tags it, else ""

    @property
    def key(self) -> tuple[int, int]:
        return self.ref_id, self.sent_id

    def values(self) -> list[object]:
        return ["" if v is None else int(v) if isinstance(v, bool) else v for v in astuple(self)]

    @classmethod
    def parse(cls, values: list[str]) -> Row:
        """A CSV line back into a Row; ValueError when it is not one."""
        if len(values) != len(FIELDS):
            raise ValueError(f"{len(values)} fields, expected {len(FIELDS)}")
        ref_id, sent_id, image_id, ann_id, sentence, iou, inter, union, index, k, score, \
            skipped, kind = values
        if skipped not in ("0", "1"):
            raise ValueError(f"skipped must be 0 or 1, got {skipped!r}")
        return cls(int(ref_id), int(sent_id), int(image_id), int(ann_id), sentence, float(iou),
                   int(inter), int(union), int(index) if index else None, int(k),
                   float(score) if score else None, skipped == "1", kind)


FIELDS = tuple(f.name for f in fields(Row))


def metrics(rows: list[Row]) -> dict[str, Any]:
    """oIoU = ΣI/ΣU and mIoU = mean IoU, both ×100, with P@X; None where there is no sample."""
    ious = np.array([r.iou for r in rows], dtype=np.float64)
    union = sum(r.union for r in rows)
    report: dict[str, Any] = {
        "samples": len(rows),
        "oIoU": 100.0 * sum(r.intersection for r in rows) / union if union else None,
        "mIoU": 100.0 * float(ious.mean()) if rows else None}
    for threshold in THRESHOLDS:
        report[f"P@{threshold}"] = 100.0 * float((ious >= threshold).mean()) if rows else None
    return report


def _csv_line(row: Row) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row.values())
    return buffer.getvalue()


def read_rows(path: Path) -> tuple[list[Row], int]:
    """The rows of an earlier run's CSV and the byte length of its complete lines. A last line
    cut short by an interrupt (no newline) is dropped, so that sample is done again."""
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    lines = complete.decode("utf-8", errors="replace").splitlines()
    if not lines:
        return [], 0
    if tuple(next(csv.reader(lines[:1]))) != FIELDS:
        raise ZsrisError(f"{path} is not a samples file of zsris-rt eval (header differs): "
                         "use another --out")
    rows = []
    for number, values in enumerate(csv.reader(lines[1:]), start=2):
        try:
            rows.append(Row.parse(values))
        except ValueError as exc:
            raise ZsrisError(f"{path}: line {number} is corrupt ({exc})") from None
    return rows, len(complete)


def previous_rows(path: Path, resume: bool, known: set[tuple[int, int]],
              where: str) -> tuple[list[Row], int]:
    """Rows already done and the bytes of the CSV to keep. Without --resume an earlier run's rows
    are never overwritten."""
    if not path.exists():
        return [], 0
    if not path.is_file():
        raise ZsrisError(f"{path} is not a file")
    rows, length = read_rows(path)
    if rows and not resume:
        raise ZsrisError(f"{path} already holds {len(rows)} samples: pass --resume to continue "
                         "that run, or give another --out")
    strangers = [r for r in rows if r.key not in known]
    if strangers:
        raise ZsrisError(f"{path} holds {len(strangers)} samples that are not of {where} "
                         f"(e.g. ref {strangers[0].ref_id}, sentence {strangers[0].sent_id}): "
                         "use another --out")
    return rows, length if rows else 0


class Evaluator:
    """Per-image work: ground truth, proposals, one scene, one query per sentence."""

    def __init__(self, seg: Segmenter, data: ReferDataset, images: Path, gt_proposals: bool,
                 overrides: dict[str, Any]) -> None:
        self.seg, self.data, self.images = seg, data, images
        self.gt_proposals, self.overrides = gt_proposals, overrides
        self.image_ms: list[float] = []
        self.sentence_ms: list[float] = []
        self.local_computed: list[int] = []  # f^L rows each query needed (pruning saves these)
        self.prompts: list[int] = []  # point prompts the proposer decoded, per image

    def image(self, image_id: int, samples: list[Sample]) -> list[Row]:
        info = self.data.images[image_id]
        start = time.perf_counter()
        path = self.images / info.file_name
        image = read_image(path)
        if image.shape[:2] != (info.height, info.width):
            raise ZsrisError(f"{path} is {image.shape[1]}×{image.shape[0]} but "
                             f"{self.data.instances_path} says {info.width}×{info.height}")
        scene, masks = None, None
        if self.gt_proposals:
            masks = self.data.instance_masks(image_id)[1]
            masks = masks[masks.any(axis=(1, 2))]  # the scene refuses empty masks
        if masks is None or len(masks):
            with contextlib.suppress(NoMaskError):  # the official protocol skips the image
                scene = self.seg.encode_image(image, masks, **self.overrides)
        self.image_ms.append((time.perf_counter() - start) * 1e3)
        if scene is not None and scene.proposals is not None:
            self.prompts.append(scene.proposals.prompts)
        truths = {ann_id: self.data.mask(ann_id) for ann_id in {s.ann_id for s in samples}}
        rows = []
        for s in samples:
            truth = truths[s.ann_id]
            ids = (s.ref_id, s.sent_id, s.image_id, s.ann_id, " ".join(s.sentence.split()))
            if scene is None:
                rows.append(Row(*ids, 0.0, 0, int(truth.sum()), None, 0, None, True, s.kind))
                continue
            start = time.perf_counter()
            try:
                result = self.seg.query(scene, s.sentence)
            except TextError as exc:
                raise TextError(f"ref {s.ref_id}, sentence {s.sent_id}: {exc}") from None
            inter = int(np.count_nonzero(result.mask & truth))
            union = int(np.count_nonzero(result.mask | truth))
            self.sentence_ms.append((time.perf_counter() - start) * 1e3)
            if result.local_computed is not None:
                self.local_computed.append(result.local_computed)
            rows.append(Row(*ids, inter / union if union else 0.0, inter, union, result.index,
                            scene.num_masks, result.score, False, s.kind))
        return rows


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def same_settings(folder: Path, settings: dict[str, Any], resuming: bool) -> None:
    """Record what the rows depend on when a run starts; a resumed run must match it, or its
    rows and the earlier ones would mix two experiments in one figure."""
    from .atomic_files import write_files_atomically

    path = folder / SETTINGS_NAME
    settings = json.loads(json.dumps(settings))  # as it reads back: lists, floats
    if not resuming:
        folder.mkdir(parents=True, exist_ok=True)
        write_files_atomically({path: (json.dumps(settings, indent=2) + "\n").encode("utf-8")})
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else settings
    except ValueError:
        raise ZsrisError(f"{path} is corrupt: give another --out") from None
    changed = [f"{name} {earlier.get(name)!r} then, {value!r} now"
               for name, value in settings.items() if earlier.get(name) != value]
    if changed:
        raise ZsrisError(f"{folder / CSV_NAME} was made with other settings "
                         f"({'; '.join(changed)}): resume with the same ones or use another --out")


def append_rows(path: Path, keep: int, todo: list[Sample], evaluator: Evaluator,
                 label: str) -> list[Row]:
    """Evaluate `todo` image by image, appending each image's rows to the first `keep` bytes of
    the CSV (a fresh header when 0) and flushing after each image."""
    groups: dict[int, list[Sample]] = {}
    for s in todo:
        groups.setdefault(s.image_id, []).append(s)
    done: list[Row] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8", newline="") as f:
            f.truncate(keep)
            if not keep:
                f.write(",".join(FIELDS) + "\n")
            with Progress(len(todo), label, "sentences") as bar:
                for image_id, samples in groups.items():
                    rows = evaluator.image(image_id, samples)
                    f.write("".join(_csv_line(r) for r in rows))
                    f.flush()
                    done += rows
                    bar.update(len(samples))
    except OSError as exc:
        raise ZsrisError(f"cannot write {path}: {exc.strerror or exc}") from None
    return done


