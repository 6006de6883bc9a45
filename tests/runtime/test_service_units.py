"""The service's parts on their own (the whole server is tested through HTTP in test_service.py):
the scene store's bounds and expiry on a fake clock, the request-field parsing, the status of each
error, the metrics' text, and serve's refusals."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from zsris_rt.commands.serve import build_parser, check, is_loopback
from zsris_rt.errors import MaskError, TextError, ZsrisError
from zsris_rt.image import ImageTooLarge, UnsupportedImageFormat
from zsris_rt.local_features import LocalFeatures
from zsris_rt.results import Scene
from zsris_rt.service.app import status_of
from zsris_rt.service.core import Busy, checked_texts, proposer_options, weight
from zsris_rt.service.metrics import Metrics
from zsris_rt.service.scenes import SceneStore, SceneTooLarge, UnknownScene, scene_bytes


def scene(k: int = 2, side: int = 16) -> Scene:
    masks = np.zeros((k, side, side), bool)
    masks[:, : side // 2] = True
    return Scene((side, side), masks, np.zeros((k, 4), np.int64), np.ones((k, 8), np.float32),
                 LocalFeatures(k, rows=np.ones((k, 8), np.float32)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_scene_bytes_counts_each_array_once() -> None:
    s = scene(2, 16)
    assert scene_bytes(s) == 2 * 16 * 16 + 2 * 4 * 8 + 2 * 8 * 4 + 2 * 8 * 4


def test_store_evicts_least_recently_used_by_count_and_bytes() -> None:
    clock = Clock()
    one = scene_bytes(scene())
    store = SceneStore(max_scenes=3, max_bytes=10 * one, ttl_s=60, clock=clock)
    a, b, c = (store.add(scene()) for _ in range(3))
    store.get(a.id)  # a is now the most recently used
    d = store.add(scene())
    with pytest.raises(UnknownScene):
        store.get(b.id)
    assert {store.get(x.id).id for x in (a, c, d)} == {a.id, c.id, d.id}
    assert store.stats() == (3, 3 * one) and store.evicted == 1
    small = SceneStore(max_scenes=10, max_bytes=2 * one, ttl_s=60, clock=clock)
    first = small.add(scene())
    small.add(scene())
    small.add(scene())  # bytes, not count, evict now
    assert small.stats() == (2, 2 * one)
    with pytest.raises(UnknownScene):
        small.get(first.id)
    with pytest.raises(SceneTooLarge, match="MiB"):
        SceneStore(max_scenes=1, max_bytes=one - 1, ttl_s=60).add(scene())


def test_store_expires_idle_scenes_and_deletes() -> None:
    clock = Clock()
    store = SceneStore(max_scenes=5, max_bytes=1 << 20, ttl_s=10, clock=clock)
    kept, idle = store.add(scene()), store.add(scene())
    clock.now = 8
    store.get(kept.id)
    clock.now = 15  # idle unused for 15 s, kept for 7 s
    assert store.stats()[0] == 1 and store.expired == 1
    with pytest.raises(UnknownScene):
        store.get(idle.id)
    store.delete(kept.id)
    with pytest.raises(UnknownScene):
        store.delete(kept.id)
    assert store.stats() == (0, 0)


def test_request_fields_are_parsed_and_checked() -> None:
    assert proposer_options({"points_per_side": " 8 ", "pred_iou_thresh": "0.5",
                             "proposer_mode": "fast", "alpha": "0.3"}) == {
        "points_per_side": 8, "pred_iou_thresh": 0.5, "proposer_mode": "fast"}
    for bad in ({"box_nms_thresh": "abc"}, {"box_nms_thresh": "nan"},
                {"proposer_mode": "turbo"}):
        with pytest.raises(ZsrisError):
            proposer_options(bad)
    assert weight("alpha", None) is None and weight("alpha", "0.25") == 0.25
    for bad in ("1.5", "-0.1", "nan", "abc", True, [0.5]):
        with pytest.raises(ZsrisError, match="alpha"):
            weight("alpha", bad)
    assert checked_texts(["a", "b"]) == ["a", "b"]
    for bad in ([], [3], ["x" * 1001], ["a"] * 65):
        with pytest.raises(TextError):
            checked_texts(bad)


def test_each_error_has_its_status() -> None:
    assert status_of(Busy("busy", 1)) == 503
    assert status_of(UnknownScene("x")) == 404
    assert status_of(SceneTooLarge("x")) == status_of(ImageTooLarge("x")) == 413
    assert status_of(UnsupportedImageFormat("x")) == 415
    assert status_of(TextError("x")) == status_of(MaskError("x")) == 422


def test_metrics_text_is_prometheus() -> None:
    metrics = Metrics()
    metrics.requests.labels("segment", "200").inc()
    metrics.observe_stages({"trunk": 12.0, "text": 3.0})
    families = {f.name: f for f in text_string_to_metric_families(metrics.text().decode())}
    assert {"zsris_requests", "zsris_stage_seconds", "zsris_queue_depth",
            "process_resident_memory_bytes"} <= set(families)
    stages = {s.labels["stage"] for s in families["zsris_stage_seconds"].samples
              if s.name.endswith("_count")}
    assert stages == {"trunk", "text"}


def test_serve_binds_beyond_loopback_only_with_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    parse = build_parser().parse_args
    check(parse([]))
    check(parse(["--host", "0.0.0.0", "--token", "long-enough"]))
    for argv, words in ((["--host", "0.0.0.0"], "--token"), (["--token", "short"], "8"),
                        (["--workers", "0"], "--workers"), (["--port", "70000"], "port")):
        with pytest.raises(ZsrisError, match=words):
            check(parse(argv))
    assert isinstance(parse([]), argparse.Namespace)
