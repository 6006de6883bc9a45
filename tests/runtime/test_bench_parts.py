"""The torch-free parts of zsris_rt.bench: statistics (stats), fast modes (modes), the machine
readings (machine), timed runs (timing), the progress log (log), the error type (errors),
random-pack bookkeeping (packs), the workload (scene), the runner's helpers (runner), worker
processes (workers), FLOP counting (flops) and the report (report). The workers that need torch
(zsris_rt.export.bench_workers) are not run here; zsris_rt.bench.runtime_side runs in the
worker processes of test_other_commands.py's bench smoke."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from zsris_rt.bench import (
    flops,
    log,
    machine,
    modes,
    packs,
    report,
    runner,
    scene,
    stats,
    timing,
    workers,
)
from zsris_rt.bench.errors import BenchError
from zsris_rt.commands.bench import int_list, proposer_mode_list
from zsris_rt.errors import ZsrisError

from .conftest import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def test_percentile_and_summary_by_hand():
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(values, 0) == 1.0 and stats.percentile(values, 100) == 4.0
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 90) == pytest.approx(3.7)  # 1 + 2.7 steps of 1
    assert stats.summary(values, (90,)) == {"median": 2.5, "p90": pytest.approx(3.7),
                                            "min": 1.0, "max": 4.0, "n": 4}


def test_fast_modes_parse():
    assert modes.parse_mode("exact") == modes.Mode("exact")
    mode = modes.parse_mode("int8+top8")
    assert (mode.precision, mode.local_top, mode.local_bound) == ("int8", 8, False)
    assert mode.options() == {"precision": "int8", "local_top": 8, "local_bound": False}
    assert mode.local_crops(5) == 5 and mode.local_crops(100) == 8
    assert modes.parse_mode("bound").local_crops(10) is None
    assert [m.name for m in modes.mode_list("top4,exact,bound")] == ["exact", "top4", "bound"]
    for bad in ("top0", "int4", "top"):
        with pytest.raises(argparse.ArgumentTypeError):
            modes.parse_mode(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="named twice"):
        modes.mode_list("top4,top4")
    assert int_list("32, 8,8") == [8, 32]
    assert proposer_mode_list("fast,exact") == ["exact", "fast"]
    with pytest.raises(argparse.ArgumentTypeError):
        int_list("0,2")


def test_machine_readings(tier_alone):
    if tier_alone:  # the full suite loads torch and friends on purpose; the tier alone, none
        assert machine.heavy_modules_loaded() == []
    rss = machine.peak_rss()
    assert rss["vmhwm_mb"] >= rss["vmrss_mb"] > 0
    busy, own = machine.cpu_seconds()
    assert busy > 0 and own > 0
    share = machine.CpuShare().result()
    assert share["other_processes_cpu_share"] >= 0
    assert machine.versions(("numpy", "no-such-dist")) == {"numpy": np.__version__,
                                                           "no-such-dist": None}
    facts = machine.machine(("numpy",))
    assert facts["cores"] >= 1 and facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(facts["source"]) == {"root", "commit", "modified"}
    waited: dict = {}
    machine.wait_for_quiet(0, waited)
    assert waited == {}


def test_timed_runs_drop_the_warmup():
    counter = {"before": 0, "run": 0}

    def before():
        counter["before"] += 1

    def run():
        counter["run"] += 1
        return counter["run"]

    times, results, extra = timing.timed_runs(run, before, warmup=2, repeats=3)
    assert counter == {"before": 5, "run": 5} and results == [3, 4, 5] and len(times) == 3
    assert extra["first_call_ms"] >= 0 and "other_processes_cpu_share" in extra
    stages = timing.stage_summaries([{"a": 1.0}, {"a": 3.0, "b": 2.0}])
    assert stages["a"]["median"] == 2.0 and stages["b"]["median"] == 1.0  # missing counts 0
    record = timing.latency([10.0, 20.0], {}, [{"a": 4.0}, {"a": 5.0}])
    assert record["outside_stages_ms"]["median"] == 10.5 and record["latencies_ms"] == [10, 20]


def test_log_and_errors(capsys):
    assert log.elapsed() > 0
    log.say("hello")
    assert capsys.readouterr().err.rstrip().endswith("] hello")
    assert issubclass(BenchError, ZsrisError)


def test_random_pack_bookkeeping(tmp_path):
    target = packs.RandomPack.under(tmp_path, "ViT-B/32", "sam2-hiera-tiny", 3)
    assert target.root == tmp_path / "ViT-B-32+sam2-hiera-tiny_seed3"
    assert not target.ready()
    target.pack.mkdir(parents=True)
    (target.pack / "manifest.json").write_text(json.dumps({"proposer": {"family": "sam2"}}))
    for folder in (target.clip_checkpoint, target.proposer_checkpoint):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    assert target.ready()
    spawned = []
    assert packs.ensure_pack(target, False, lambda *a: spawned.append(a)) == {}
    packs.ensure_pack(target, True, lambda mode, spec, tag: spawned.append((mode, tag)) or {})
    assert spawned == [("export", "export")]
    assert packs.split_proposer("sam2-hiera-tiny") == ("sam2", "hiera-tiny")
    assert "ViT-B/32" in packs.CLIP_GEOMETRIES and packs.CLIP_GEOMETRIES[-1] == "tiny"


def test_workload(tmp_path):
    texts = scene.expressions(20)
    assert texts[0] == scene.DEFAULT_TEXT and len(set(texts)) == 20
    masks = scene.ellipse_masks(np.random.default_rng(0), 6, 48, 64)
    assert masks.shape == (6, 48, 64) and masks.any(axis=(1, 2)).all()
    spec = {"image": str(tmp_path / "w.jpg"), "size": [64, 48], "seed": 1,
            "masks": str(tmp_path / "m.npy"), "k": 3}
    out = scene.write_workload(spec)
    assert cv2.imread(spec["image"]).shape == (48, 64, 3) and out["size"] == [64, 48]
    assert np.load(spec["masks"]).shape == (3, 48, 64)


def test_fast_prompt_share_from_a_results_file(tmp_path):
    def variant(name, prompts, overrides=None, precision="fp32"):
        return {"mode": {"name": name}, "overrides": overrides or {}, "precision": precision,
                "prompts_per_image": prompts}

    doc = {"sets": {"held-out": {"variants": {
        "e": variant("exact", 200.0), "f": variant("fast", 50.0),
        "f8": variant("fast", 5.0, precision="int8"), "fo": variant("fast", 1.0, {"x": 1})}}}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert runner.fast_prompt_share(tmp_path / "r.json") == {
        "set": "held-out", "fast_prompts_per_image": 50.0, "exact_prompts_per_image": 200.0,
        "fast_prompt_share": 0.25}
    assert runner.fast_prompt_share(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("[]")
    assert runner.fast_prompt_share(tmp_path / "bad.json") is None
    # The committed measurement: fast decodes a quarter to a third of the grid (README).
    share = runner.fast_prompt_share(RESULTS / "proposer-modes.json")
    assert share is not None and 1 / 5 <= share["fast_prompt_share"] <= 1 / 3


def test_worker_environment_and_processes(tmp_path):
    env = workers.worker_env(3, tmp_path)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["ZSRIS_BENCH_RUNS"] == str(tmp_path)
    assert workers.resolve(workers.WORKERS["workload"]) is scene.write_workload
    result = workers.spawn_worker(workers.PACKAGE_COMMAND, "workload",
                                  {"image": str(tmp_path / "w.jpg"), "size": [32, 24],
                                   "seed": 0}, "w", tmp_path, 1)
    assert result["size"] == [32, 24] and result["process_wall_s"] > 0
    with pytest.raises(BenchError, match="worker bad failed"):
        workers.spawn_worker(workers.PACKAGE_COMMAND, "workload", {"seed": 0}, "bad",
                             tmp_path, 1)
    parser = workers.argument_parser("x", None)
    assert parser.parse_args(["--worker", "m", "s.json"]).worker == ["m", "s.json"]


class FakeDim:
    def __init__(self, value):
        self.dim_value = value

    def HasField(self, name):  # noqa: N802 - protobuf's name
        return self.dim_value is not None


def value(name, shape):
    dims = [FakeDim(d) for d in shape]
    return types.SimpleNamespace(name=name, type=types.SimpleNamespace(
        tensor_type=types.SimpleNamespace(shape=types.SimpleNamespace(dim=dims))))


def node(op, inputs, output, **attributes):
    return types.SimpleNamespace(op_type=op, input=inputs, output=[output], attribute=[
        types.SimpleNamespace(name=k, i=v) for k, v in attributes.items()])


def test_count_flops_on_a_hand_made_graph():
    graph = types.SimpleNamespace(
        value_info=[value("y1", [2, 4]), value("y2", [4, 5]), value("y3", [1, 8, 6, 6]),
                    value("y4", [None, 3])],
        input=[value("a", [2, 3]), value("b", [3, 4]), value("x", [1, 3, 8, 8])],
        output=[], initializer=[types.SimpleNamespace(name="w", dims=[8, 3, 3, 3]),
                                types.SimpleNamespace(name="g", dims=[2, 4])],
        node=[node("MatMul", ["a", "b"], "y1"),  # 2·(2·4)·3 = 48
              node("Gemm", ["g", "c"], "y2", transA=1),  # 2·(4·5)·2 = 80 (A is 2×4, used ᵀ)
              node("Conv", ["x", "w"], "y3"),  # 2·(8·6·6)·(3·3·3) = 15552
              node("MatMul", ["a", "q"], "y4"),  # unknown shapes: counted apart
              node("Relu", ["y1"], "y5")])
    graph.value_info.append(value("c", [2, 5]))
    counted = flops.count_flops(types.SimpleNamespace(graph=graph))
    assert counted == {"flops": 48 + 80 + 15552, "nodes": 4, "unknown_nodes": 1}


def test_report_formatting_by_hand():
    assert [report.ms(v) for v in (None, 1234.5, 12.34, 0.1234)] == ["–", "1234", "12.3",
                                                                      "0.12"]
    assert report.ratio(None) == "–" and report.ratio(1.234) == "1.23×"
    assert report.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    record = {"latency_ms": {"median": 9.0}, "stage_runs": [{"a": 1.0, "b": 2.0}, {"a": 3.0}]}
    assert report.stage_stats(record, ("a", "b"))["median"] == 3.0  # runs sum to 3 and 3
    assert report.stage_stats(record, ("z",)) is None
    assert report.stage_stats(record, report.END_TO_END) == {"median": 9.0}


def test_report_renders_a_committed_run():
    data = json.loads((RESULTS / "bench-proposer-modes-vit-b32.json").read_text())
    markdown = report.render(data)
    lines = markdown.splitlines()
    assert lines[0] == "## zsris-rt bench: CLIP ViT-B/32 + sam2-hiera-tiny, random weights"
    for k, run in data["runtime"]["clip"]["ks"].items():
        median = run["latency_ms"]["median"]
        assert f"### Stages at K = {k} (ms; floor = the stage's FLOPs at the matmul rate)" in lines
        row = next(line for line in lines if line.startswith(f"| {k} | "))
        assert row.split(" | ")[1] == f"{median:.0f}"  # above 100 ms: whole milliseconds
    assert "torch" in markdown and markdown.endswith("\n")


def test_plot_needs_matplotlib_or_says_so(tmp_path, monkeypatch):
    data = json.loads((RESULTS / "bench-proposer-modes-vit-b32.json").read_text())
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    said = report.write_plot(data, tmp_path / "p.png")
    assert said.startswith("no plot: matplotlib is not installed") and not (tmp_path /
                                                                              "p.png").exists()


def test_bench_config_defaults_are_a_real_workload():
    cfg = runner.Config()
    assert cfg.ks == [8, 32, 100] and cfg.modes == ["exact"] and cfg.backend == "cpu"
    assert runner.MAX_EXPRESSIONS == len(set(scene.expressions(10_000)))
    assert Path(runner.DEFAULT_WORK).name == "bench"
