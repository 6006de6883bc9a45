"""`zsris-rt check`: its figures against differences made on purpose and counted here."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import random_scene
from zsris_rt import Segmenter
from zsris_rt.agreement import Query, compare_graphs, compare_queries
from zsris_rt.backends import Backend, create_backend
from zsris_rt.commands.main import main
from zsris_rt.pack import GeneratorDefaults, load_pack

TEXTS = ["the red mug", "a dog on the left", "the biggest thing"]


class Noisy(Backend):
    """The CPU backend with a known relative error added to every float output."""

    name = "noisy"

    def __init__(self, inner: Backend, scale: float) -> None:
        self.inner, self.scale = inner, scale
        self.rng = np.random.default_rng(0)

    def run(self, graph, inputs, release=False):
        outputs = self.inner.run(graph, inputs, release=release)
        return [o + self.scale * np.abs(o).max() * self.rng.standard_normal(o.shape)
                .astype(o.dtype) for o in outputs]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check")
    rng = np.random.default_rng(5)
    for i in range(2):
        image, _ = random_scene(rng, 80, 100, 1)
        cv2.imwrite(str(folder / f"image-{i}.png"), image[:, :, ::-1])
    return folder


def test_graph_figures_measure_the_difference(pack_dir):
    pack = load_pack(pack_dir)
    cpu = create_backend(pack, "cpu")
    rng = np.random.default_rng(1)
    entry = {"tokens": rng.standard_normal((3, 50, 64), dtype=np.float32),
             "grid_masks": np.ones((3, 7, 7), dtype=np.float32)}  # the crop encoder's head
    exact = compare_graphs(cpu, cpu, {"clip_masked_head": [entry]})
    exact = exact["clip_masked_head"]["outputs"][0]
    assert exact["max_abs_diff"] == 0 and exact["min_cosine"] == 1.0
    noisy = Noisy(cpu, 0.05)
    report = compare_graphs(noisy, cpu, {"clip_masked_head": [entry]})
    report = report["clip_masked_head"]["outputs"][0]
    want = cpu.run("clip_masked_head", entry)[0].astype(np.float64)
    got = Noisy(cpu, 0.05).run("clip_masked_head", entry)[0].astype(np.float64)  # same noise
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert report["max_abs_diff"] == pytest.approx(np.abs(got - want).max())
    assert report["min_cosine"] == pytest.approx(cosines.min())
    assert report["max_rel_diff"] == pytest.approx(np.abs(got - want).max() / np.abs(want).max())


def test_query_agreement_is_counted(segmenter, pack_dir):
    rng = np.random.default_rng(2)
    queries, masks = [], {}
    for _ in range(3):
        image, m = random_scene(rng, 70, 90, 5)
        queries.append(Query(image, TEXTS))
        masks[image.tobytes()] = m
    other = Segmenter.from_pack(pack_dir, alpha=0.0)
    report = compare_queries(other, segmenter, queries, lambda image: masks[image.tobytes()])
    same = [segmenter.segment(q.image, t, masks[q.image.tobytes()]).index ==
            other.segment(q.image, t, masks[q.image.tobytes()]).index
            for q in queries for t in q.texts]
    assert report["queries"] == 9 and report["argmax_agreement"] == pytest.approx(np.mean(same))
    itself = compare_queries(segmenter, segmenter, queries, lambda image: masks[image.tobytes()])
    assert itself["argmax_agreement"] == 1.0 and itself["max_score_diff_of_exact_choice"] == 0
    assert itself["chosen_mask_iou"]["mean"] == 1.0


def test_cli_report_and_exit_status(capsys, pack_dir, images):
    args = ["check", str(pack_dir), "--images", str(images), "--texts", *TEXTS, "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidate"]["backend"] == "cpu"
    assert set(report["graphs"]) == {"clip_trunk", "clip_masked_head", "clip_text"}
    assert all(o["max_abs_diff"] == 0 for g in report["graphs"].values() for o in g["outputs"])
    assert report["queries"]["queries"] == 6 and report["queries"]["argmax_agreement"] == 1.0
    pruned = main(["check", str(pack_dir), "--images", str(images), "--texts", *TEXTS,
                   "--local-top", "1", "--min-agreement", "1.0", "--json"])
    out, err = capsys.readouterr()
    agreement = json.loads(out)["queries"]["argmax_agreement"]
    assert pruned == (0 if agreement == 1.0 else 1)
    assert agreement == 1.0 or "below 100.0%" in err


def test_bad_input_is_one_line(capsys, pack_dir, images):
    assert main(["check", str(pack_dir), "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--texts" in err
    assert main(["check", str(pack_dir), "--images", str(images / "none"), "--texts", "a"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_matched_masks_counts_overlaps_at_the_threshold():
    from zsris_rt.agreement import matched_masks

    a = np.zeros((3, 10, 10), dtype=bool)
    a[0, :5], a[1, 5:], a[2, :, :1] = True, True, True
    b = np.zeros((2, 10, 10), dtype=bool)
    b[0, :5] = True  # a[0] exactly
    b[1, 5:, :9] = True  # a[1] at IoU 0.9
    assert matched_masks(a, b) == 2
    assert matched_masks(a, b, threshold=0.95) == 1
    assert matched_masks(a, b[:0]) == 0 and matched_masks(a[:0], b) == 0


def test_proposer_mode_is_compared_with_exact(proposer_packs):
    """Fast against exact on the same pack: the report's recall and prompts are recounted here
    from each side's own proposals."""
    from zsris_rt.agreement import MATCH_IOU

    pack = proposer_packs["sam2"]
    options = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    reference, candidate = Segmenter.from_pack(pack), Segmenter.from_pack(pack,
                                                                          proposer_mode="fast")
    for seg in (reference, candidate):  # compare_queries proposes with the pack's defaults
        seg.proposer.settings = replace(seg.proposer.settings,
                                        generator=GeneratorDefaults(**options))
    rng = np.random.default_rng(9)
    queries = [Query(random_scene(rng, 60, 80, 1)[0], TEXTS[:2]) for _ in range(3)]
    report = compare_queries(candidate, reference, queries)
    matched = total = 0
    prompts = []
    for query in queries:
        want, got = reference.propose(query.image), candidate.propose(query.image)
        prompts.append(got.prompts)
        total += len(want)
        for mask in want.masks:
            overlap = [(mask & m).sum() / (mask | m).sum() for m in got.masks]
            matched += max(overlap, default=0.0) >= MATCH_IOU
    proposer = report["proposer"]
    assert proposer["masks"] == {"reference": total, "matched": matched}
    assert proposer["mask_recall"] == matched / total
    assert proposer["mean_prompts_per_image"] == {"reference": 64.0,
                                                  "candidate": float(np.mean(prompts))}
    assert np.mean(prompts) < 64
