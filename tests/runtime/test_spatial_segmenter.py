"""`Segmenter(spatial=True)` on the example scenes with their true masks: the expected object is
found from the masks by plain NumPy here (centroids, areas), never by the code under test; an
expression without spatial words gets the paper's answer exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from zsris_rt import Segmenter

from .conftest import EXAMPLES, ROOT

SCENES = json.loads((EXAMPLES / "scenes.json").read_text())


@pytest.fixture(scope="module")
def segmenters() -> tuple[Segmenter, Segmenter]:
    return Segmenter.from_pack(threads=1), Segmenter.from_pack(threads=1, spatial=True)


def scene_of(number: int) -> tuple[dict, np.ndarray]:
    entry = SCENES[number]
    return entry, np.load(EXAMPLES / entry["masks"])["masks"]


def centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def test_no_spatial_word_gives_the_papers_answer(segmenters) -> None:
    paper, spatial = segmenters
    entry, masks = scene_of(1)
    a, b = paper.encode_image(EXAMPLES / entry["image"], masks), \
        spatial.encode_image(EXAMPLES / entry["image"], masks)
    for text in ("the big yellow star", "the blue circle", "the small star"):
        want, got = paper.query(a, text), spatial.query(b, text)
        assert got.index == want.index and got.spatial is None
        np.testing.assert_array_equal(got.scores, want.scores)


def test_the_leftmost_and_rightmost_star(segmenters) -> None:
    _, spatial = segmenters
    entry, masks = scene_of(1)
    stars = [i for i, o in enumerate(entry["objects"]) if o["kind"] == "star"]
    xs = {i: centroid_x(masks[i]) for i in stars}
    scene = spatial.encode_image(EXAMPLES / entry["image"], masks)
    left = spatial.query(scene, "the leftmost star")
    right = spatial.query(scene, "the star on the right")
    assert left.index == min(xs, key=xs.get) and right.index == max(xs, key=xs.get)
    assert left.spatial["target"] == "star" and left.spatial["applied"] == ["position x left"]
    assert left.spatial["paper_index"] == int(np.argmax(left.scores))
    assert left.spatial["changed"] == (left.index != left.spatial["paper_index"])
    second = spatial.query(scene, "the second star from the left")
    assert second.index == sorted(xs, key=xs.get)[1]


def test_the_biggest_star(segmenters) -> None:
    _, spatial = segmenters
    entry, masks = scene_of(1)
    stars = [i for i, o in enumerate(entry["objects"]) if o["kind"] == "star"]
    areas = {i: int(masks[i].sum()) for i in stars}
    scene = spatial.encode_image(EXAMPLES / entry["image"], masks)
    assert spatial.query(scene, "the biggest star").index == max(areas, key=areas.get)


def test_the_json_says_what_the_parse_found() -> None:
    entry, masks = scene_of(1)
    argv = [str(EXAMPLES / entry["image"]), "the leftmost star", "the big yellow star",
            "--masks", str(EXAMPLES / entry["masks"]), "--spatial", "--json", "--threads", "1"]
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", *argv],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)["results"]
    assert first["spatial"]["applied"] == ["position x left"] and "spatial" not in second
    stars = [i for i, o in enumerate(entry["objects"]) if o["kind"] == "star"]
    assert first["index"] == min(stars, key=lambda i: centroid_x(masks[i]))


def test_bench_passes_spatial_to_the_runtime_side_only() -> None:
    from zsris_rt.bench.runtime_side import _load
    from zsris_rt.commands.bench import build_parser, config_from

    cfg = config_from(build_parser().parse_args(["--smoke", "--spatial", "--no-reference"]))
    assert cfg.spatial is True
    seg, _ = _load({"pack": str(ROOT / "engines" / "demo"), "threads": 1, "spatial": True},
                   preload=False)
    assert seg.spatial is True
    plain, _ = _load({"pack": str(ROOT / "engines" / "demo"), "threads": 1}, preload=False)
    assert plain.spatial is False
