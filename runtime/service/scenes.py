"""Scenes kept between requests: a bounded LRU (by count and by bytes) with an idle expiry, so a
service that runs for weeks holds at most what it was told to."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ZsrisError
from ..results import Scene


class UnknownScene(ZsrisError):
    """No scene has this id: never made, deleted, evicted or expired."""


class SceneTooLarge(ZsrisError):
    """One scene alone is bigger than the store may hold."""


def scene_bytes(scene: Scene) -> int:
    """Bytes a scene holds: its arrays (each once, however many fields share it) and its f^L
    rows with what their pending encoder keeps."""
    arrays = [scene.masks, scene.boxes, scene.global_features]
    if scene.proposals is not None:
        p = scene.proposals
        arrays += [p.masks, p.iou, p.stability, p.boxes, p.points]
    seen: dict[int, int] = {}
    for array in arrays:
        base = array if array.base is None else array.base
        seen[id(base)] = max(seen.get(id(base), 0), int(array.nbytes))
    return sum(seen.values()) + scene.local.nbytes


@dataclass
class StoredScene:
    id: str
    scene: Scene
    nbytes: int
    last_used: float


class SceneStore:
    """Thread-safe. `add` evicts the least recently used scenes until the new one fits; `get`
    refreshes a scene; scenes idle for longer than `ttl_s` are dropped."""

    def __init__(self, max_scenes: int, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_scenes < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("the scene store needs room for one scene and a positive expiry")
        self.max_scenes, self.max_bytes, self.ttl_s = max_scenes, max_bytes, ttl_s
        self._clock = clock
        self._scenes: OrderedDict[str, StoredScene] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0
        self.expired = 0

    def add(self, scene: Scene) -> StoredScene:
        nbytes = scene_bytes(scene)
        if nbytes > self.max_bytes:
            raise SceneTooLarge(f"the scene needs {nbytes / 2**20:.1f} MiB, more than the "
                                f"{self.max_bytes / 2**20:.0f} MiB the server keeps for scenes")
        stored = StoredScene(secrets.token_hex(8), scene, nbytes, self._clock())
        with self._lock:
            self._expire()
            while self._scenes and (len(self._scenes) >= self.max_scenes or
                                    self._bytes + nbytes > self.max_bytes):
                self._drop(next(iter(self._scenes)))
                self.evicted += 1
            self._scenes[stored.id] = stored
            self._bytes += nbytes
        return stored

    def get(self, scene_id: str) -> StoredScene:
        with self._lock:
            self._expire()
            stored = self._scenes.get(scene_id)
            if stored is None:
                raise UnknownScene(f"no scene {scene_id!r} (never made, deleted, or dropped: "
                                   "scenes are kept while there is room and for a while)")
            stored.last_used = self._clock()
            self._scenes.move_to_end(scene_id)
            return stored

    def touch(self, stored: StoredScene) -> None:
        """A scene's size after a query filled in more of it."""
        with self._lock:
            if self._scenes.get(stored.id) is stored:
                grown = scene_bytes(stored.scene)
                self._bytes += grown - stored.nbytes
                stored.nbytes = grown

    def delete(self, scene_id: str) -> None:
        with self._lock:
            if scene_id not in self._scenes:
                raise UnknownScene(f"no scene {scene_id!r}")
            self._drop(scene_id)

    def stats(self) -> tuple[int, int]:
        """(scenes held, their bytes), after dropping the expired ones."""
        with self._lock:
            self._expire()
            return len(self._scenes), self._bytes

    def _expire(self) -> None:
        oldest = self._clock() - self.ttl_s
        for scene_id in [i for i, s in self._scenes.items() if s.last_used < oldest]:
            self._drop(scene_id)
            self.expired += 1

    def _drop(self, scene_id: str) -> None:
        self._bytes -= self._scenes.pop(scene_id).nbytes
