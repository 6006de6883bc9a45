"""What the ROS 2 node does between its messages, free of rclpy: keep the latest frame, encode it
once through the service core for every expression asked about it, and turn the answers into the
node's outputs (a mono8 mask, detections, the JSON of the records).

`FrameSegmenter.new_frame` only stores the frame (the executor thread stays free); the first
`submit`/`answer` about a frame encodes it on one of the core's workers and keeps its scene id, so
that every later expression about the same frame is only a query. A new frame drops the old scene.
A full queue (`Busy`) is reported and the request dropped; nothing waits without bound.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ZsrisError
from ..mask_io import from_coco_rle
from ..service.core import Busy, ServiceCore, checked_texts
from ..service.scenes import UnknownScene
from .conversions import detections_from_results, mask_to_mono8_fields

log = logging.getLogger("zsris_rt.ros2")


class NoFrame(ZsrisError):
    """An expression arrived before any image."""


@dataclass
class Frame:
    stamp: Any  # the image message's header stamp (whatever the node passes), given back as is
    image: np.ndarray  # RGB uint8 H×W×3
    frame_id: str = ""
    serial: int = 0  # 1, 2, ... in arrival order
    scene_id: str | None = None  # set once the frame is encoded
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class Answer:
    """The records of one request about one frame, and the node's outputs made from them."""

    stamp: Any
    frame_id: str
    serial: int
    scene_id: str
    encoded: bool  # this request paid for the frame's encoding
    encode: dict[str, Any] | None  # ServiceCore.encode's reply when `encoded`
    results: list[dict[str, Any]]

    def mask_fields(self, which: int = 0) -> tuple[str, int, int, int, bytes]:
        """The mono8 fields of result `which` (default: the first expression's)."""
        return mask_to_mono8_fields(from_coco_rle(self.results[which]["rle"]))

    def detections(self) -> list[dict[str, Any]]:
        return detections_from_results(self.results)

    def to_json(self) -> str:
        return json.dumps({"frame": self.serial, "frame_id": self.frame_id,
                           "scene_id": self.scene_id, "results": self.results})


class FrameSegmenter:
    """The latest frame and its scene in `core`'s store. Thread-safe: `new_frame` from the
    image callback, `submit`/`answer` from any other, the work on the core's workers."""

    def __init__(self, core: ServiceCore, options: dict[str, Any] | None = None,
                 alpha: float | None = None, beta: float | None = None) -> None:
        self.core = core
        self.options = dict(options or {})
        self.alpha, self.beta = alpha, beta
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._serial = 0
        self.encodes = 0  # scenes encoded so far
        self.dropped = 0  # requests refused because the core was busy

    @property
    def latest(self) -> Frame | None:
        with self._lock:
            return self._frame

    def new_frame(self, image: np.ndarray, stamp: Any = None, frame_id: str = "") -> Frame:
        """Keep `image` (RGB uint8 H×W×3) as the latest frame; the previous frame's scene, if
        any, is dropped from the store. Nothing is encoded until an expression is asked."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ZsrisError(f"a frame must be RGB uint8 H×W×3, got {image.dtype} "
                             f"{image.shape}")
        with self._lock:
            self._serial += 1
            old, self._frame = self._frame, Frame(stamp, image, frame_id, self._serial)
            frame = self._frame
        # Drop the old frame's scene unless a worker is on it (the worker then drops it itself
        # when it sees the newer frame): the image callback never waits for inference.
        if old is not None and old.lock.acquire(blocking=False):
            try:
                if old.scene_id is not None:
                    self._forget(old.scene_id)
                    old.scene_id = None
            finally:
                old.lock.release()
        return frame

    def submit(self, expressions: Sequence[str],
               done: Callable[[Future[Answer]], None] | None = None) -> Future[Answer] | None:
        """Ask `expressions` about the latest frame on one of the core's workers. None when the
        core is busy (logged; the request is dropped); NoFrame before any image."""
        frame = self.latest
        if frame is None:
            raise NoFrame("no image received yet")
        texts = list(expressions)
        try:
            future = self.core.submit(lambda: self._answer(frame, texts))
        except Busy as exc:
            with self._lock:
                self.dropped += 1
            log.warning("dropped %d expression(s) about frame %d: %s", len(texts),
                        frame.serial, exc)
            return None
        if done is not None:
            future.add_done_callback(done)
        return future

    def answer(self, expressions: Sequence[str], timeout_s: float) -> Answer:
        """`submit` and wait at most `timeout_s`: Busy when the core is busy, ZsrisError on a
        timeout (the work goes on, its answer is dropped), the work's own error otherwise."""
        frame = self.latest
        if frame is None:
            raise NoFrame("no image received yet")
        texts = list(expressions)
        future = self.core.submit(lambda: self._answer(frame, texts))
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise ZsrisError(f"no answer within {timeout_s:g} s") from None

    # ---------------------------------------------------------------- on a worker

    def _answer(self, frame: Frame, texts: list[str]) -> Answer:
        texts = checked_texts(texts)
        for text in texts:  # a bad expression is refused before the frame is paid for
            self.core.segmenter.check_text(text)
        with frame.lock:  # one encoding per frame, however many requests ask about it
            reply = None
            if frame.scene_id is None:
                reply = self._encode(frame)
            scene_id = frame.scene_id
            assert scene_id is not None
            try:
                records = self.core.query(scene_id, texts, self.alpha, self.beta)["results"]
            except UnknownScene:  # evicted or expired meanwhile: encode it again, once
                reply = self._encode(frame)
                scene_id = frame.scene_id
                assert scene_id is not None
                records = self.core.query(scene_id, texts, self.alpha, self.beta)["results"]
            if self.latest is not frame:  # a newer frame came meanwhile: drop this one's scene
                self._forget(scene_id)
                frame.scene_id = None
            return Answer(frame.stamp, frame.frame_id, frame.serial, scene_id,
                          reply is not None, reply, records)

    def _encode(self, frame: Frame) -> dict[str, Any]:
        reply = self.core.encode(frame.image, None, self.options)
        with self._lock:
            self.encodes += 1
        frame.scene_id = reply["scene_id"]
        return reply

    def _forget(self, scene_id: str) -> None:
        try:
            self.core.delete(scene_id)
        except UnknownScene:
            pass
