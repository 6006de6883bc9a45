"""The service's work, free of any web or ROS framework: a loaded Segmenter shared by a bounded
pool of worker threads behind a bounded queue, and the scenes kept between requests.

Every operation is one function run on a worker (`submit`): decoding the upload happens there too,
so the event loop (or a ROS executor) only moves bytes. A request that finds the queue full is
refused at once (`Busy`), never parked without bound.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from .. import __version__
from ..errors import TextError, ZsrisError
from ..image import decode_upload
from ..mask_io import masks_from_bytes, to_coco_rle
from ..pack import GeneratorDefaults
from ..proposer.modes import MODES as PROPOSER_MODES
from ..result_json import result_to_dict
from ..results import Scene
from ..segmenter import Segmenter
from .metrics import Metrics
from .scenes import SceneStore

T = TypeVar("T")
# The proposer's options a request may set (segment-anything's generator's, zsris-rt's own).
PROPOSER_OPTIONS = tuple(asdict(GeneratorDefaults()))
MAX_TEXTS = 64  # expressions per request
MAX_TEXT_CHARS = 1000


class Busy(ZsrisError):
    """Every worker is busy and the queue is full: try again later."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ServiceConfig:
    workers: int = 1  # inference threads sharing the loaded sessions
    max_queue: int = 8  # requests waiting for a worker; more are refused with Busy (503)
    max_scenes: int = 32
    max_scene_mb: int = 2048  # all scenes together
    scene_ttl_s: float = 600.0  # a scene not used for this long is dropped


def proposer_options(fields: dict[str, str]) -> dict[str, Any]:
    """The proposer options among request fields (strings), as numbers; the generator checks
    their ranges. An unknown `proposer_mode` or a value that is not a number is refused."""
    options: dict[str, Any] = {name: _number(name, fields[name]) for name in PROPOSER_OPTIONS
                               if name in fields}
    if "proposer_mode" in fields:
        mode = fields["proposer_mode"].strip()
        if mode not in PROPOSER_MODES:
            raise ZsrisError(f"proposer_mode must be one of {', '.join(PROPOSER_MODES)}, "
                             f"got {mode!r}")
        options["proposer_mode"] = mode
    return options


def _number(name: str, text: str) -> int | float:
    """"8" → 8, "0.7" → 0.7; the generator refuses a float where it needs an integer."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ZsrisError(f"{name} must be a finite number, got {text!r}")
    return value


def weight(name: str, value: Any) -> float | None:
    """α or β from a request: absent (None) or a number; the segmenter checks the range."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ZsrisError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ZsrisError(f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # NaN fails this too
        raise ZsrisError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def checked_texts(texts: Sequence[Any]) -> list[str]:
    if not texts:
        raise TextError("no expression given (one or more `text`)")
    if len(texts) > MAX_TEXTS:
        raise TextError(f"{len(texts)} expressions in one request; at most {MAX_TEXTS}")
    for text in texts:
        if not isinstance(text, str):
            raise TextError(f"each expression must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise TextError(f"an expression of {len(text)} characters; at most "
                            f"{MAX_TEXT_CHARS}")
    return list(texts)


class ServiceCore:
    def __init__(self, segmenter: Segmenter, config: ServiceConfig = ServiceConfig(),
                 metrics: Metrics | None = None) -> None:
        if config.workers < 1 or config.max_queue < 0:
            raise ValueError("need at least one worker and a queue of zero or more")
        self.segmenter = segmenter
        self.config = config
        self.metrics = metrics or Metrics()
        self.scenes = SceneStore(config.max_scenes, config.max_scene_mb << 20,
                                 config.scene_ttl_s)
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="zsris-worker")
        self._slots = threading.BoundedSemaphore(config.workers + config.max_queue)
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self.started = time.time()

    # --------------------------------------------------------------------- the queue

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on a worker; Busy at once when the workers and the queue are all taken."""
        if not self._slots.acquire(blocking=False):
            self.metrics.rejected.inc()
            raise Busy(f"the server is busy ({self.config.workers} worker(s), "
                       f"{self.config.max_queue} waiting): retry shortly", retry_after_s=1)
        self._count(waiting=+1)

        def run() -> T:
            self._count(waiting=-1, running=+1)
            try:
                return work()
            finally:
                self._count(running=-1)
                self._slots.release()

        try:
            return self._pool.submit(run)
        except RuntimeError:  # the pool is shutting down
            self._count(waiting=-1)
            self._slots.release()
            raise Busy("the server is shutting down", retry_after_s=5) from None

    def _count(self, waiting: int = 0, running: int = 0) -> None:
        with self._count_lock:
            self._waiting += waiting
            self._running += running
            self.metrics.queued.set(self._waiting)
            self.metrics.running.set(self._running)

    def close(self) -> None:
        """Finish the work already accepted, then stop the workers."""
        self._pool.shutdown(wait=True)

    # --------------------------------------------------------------------- the work

    def decode(self, image: bytes, where: str = "image") -> np.ndarray:
        """An upload's image, its size checked from its header before anything is decoded."""
        return decode_upload(image, where)

    def masks(self, data: bytes | None, image: np.ndarray) -> np.ndarray | None:
        return None if data is None else masks_from_bytes(data, image.shape[:2], "masks")

    def encode(self, image: np.ndarray, masks: np.ndarray | None,
               options: dict[str, Any]) -> dict[str, Any]:
        """Encode a scene and keep it: {"scene_id", "masks", "image_size", "timings_ms", ...}."""
        scene = self._scene(image, masks, options)
        stored = self.scenes.add(scene)
        self._scene_gauges()
        return {"scene_id": stored.id, "masks": scene.num_masks,
                "image_size": list(scene.image_size),
                "timings_ms": {k: float(v) for k, v in scene.timings.items()},
                **self._proposer_facts(scene)}

    def query(self, scene_id: str, texts: Sequence[Any], alpha: float | None = None,
              beta: float | None = None) -> dict[str, Any]:
        texts = checked_texts(texts)
        for text in texts:
            self.segmenter.check_text(text)
        stored = self.scenes.get(scene_id)
        records = self._records(stored.scene, texts, alpha, beta)
        self.scenes.touch(stored)
        self._scene_gauges()
        return {"scene_id": scene_id, "results": records}

    def segment(self, image: np.ndarray, texts: Sequence[Any], masks: np.ndarray | None,
                options: dict[str, Any], alpha: float | None = None,
                beta: float | None = None, candidates: bool = False) -> dict[str, Any]:
        """One image, its expressions; nothing is kept. With `candidates`, the scene's K masks
        too, once (each result's `scores` are in their order)."""
        texts = checked_texts(texts)
        for text in texts:  # a bad expression is refused before the image is paid for
            self.segmenter.check_text(text)
        scene = self._scene(image, masks, options)
        out = {"image_size": list(scene.image_size), "num_masks": scene.num_masks,
               "masks_from": "proposer" if masks is None else "request",
               **self._proposer_facts(scene),
               "results": self._records(scene, texts, alpha, beta)}
        if candidates:
            out["candidates"] = self._candidates(scene)
        return out

    def delete(self, scene_id: str) -> None:
        self.scenes.delete(scene_id)
        self._scene_gauges()

    def health(self) -> dict[str, Any]:
        seg = self.segmenter
        held, nbytes = self.scenes.stats()
        return {"status": "ok", "version": __version__, "pack": str(seg.pack.root),
                "backend": seg.backend.name,
                "precision": seg.backend.describe().get("precision", "fp32"),
                "proposer": seg.proposer is not None,
                "proposer_mode": seg.proposer_mode.name, "spacy_model": seg.spacy_model,
                "spatial": seg.spatial,
                "workers": self.config.workers, "max_queue": self.config.max_queue,
                "scenes": held, "scene_bytes": nbytes,
                "uptime_s": round(time.time() - self.started, 1)}

    def _scene(self, image: np.ndarray, masks: np.ndarray | None,
               options: dict[str, Any]) -> Scene:
        if masks is not None and options:
            raise ZsrisError("proposer options (" + ", ".join(options) + ") do not apply "
                             "with masks")
        if masks is None and self.segmenter.proposer is None:
            raise ZsrisError(f"pack {self.segmenter.pack.root} has no proposer: send masks")
        options = dict(options)
        mode = options.pop("proposer_mode", None)
        try:
            scene = self.segmenter.encode_image(image, masks, mode, **options)
        except TypeError as exc:  # an option the generator does not know
            raise ZsrisError(str(exc)) from None
        self.metrics.observe_stages(scene.timings)
        return scene

    def _records(self, scene: Scene, texts: list[str], alpha: float | None,
                 beta: float | None) -> list[dict[str, Any]]:
        seg = self.segmenter
        records = []
        for text in texts:
            result = seg.query(scene, text, alpha, beta)
            self.metrics.observe_stages({k: v for k, v in result.timings.items()
                                         if k not in scene.timings})
            records.append(result_to_dict(result, seg.backend.name, seg.spacy_model,
                                          scene.proposals))
        return records

    @staticmethod
    def _candidates(scene: Scene) -> list[dict[str, Any]]:
        """The scene's K masks in index order: RLE, box, area (and the proposal's facts)."""
        p = scene.proposals
        out = []
        for k in range(scene.num_masks):
            record: dict[str, Any] = {"index": k, "rle": to_coco_rle(scene.masks[k]),
                                      "box": [int(v) for v in scene.boxes[k]],
                                      "area": int(scene.masks[k].sum())}
            if p is not None:
                record["predicted_iou"] = float(p.iou[k])
                record["stability"] = float(p.stability[k])
            out.append(record)
        return out

    @staticmethod
    def _proposer_facts(scene: Scene) -> dict[str, Any]:
        p = scene.proposals
        return {} if p is None else {"proposer": {**p.mode, "prompts": p.prompts,
                                                  "grid_points": p.grid_points}}

    def _scene_gauges(self) -> None:
        held, nbytes = self.scenes.stats()
        self.metrics.scenes.set(held)
        self.metrics.scene_bytes.set(nbytes)
