"""`zsris-rt bench`: the smoke mode end to end (what CI runs; not timed) with both proposer modes
and the main job, the FLOPs count on graphs of known arithmetic, the percentile, the plot without
matplotlib, the fast-mode projection's input, and bad options."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from zsris_rt.bench.flops import count_pack_flops, graph_flops
from zsris_rt.bench.report import render, write_plot
from zsris_rt.bench.runner import fast_prompt_share
from zsris_rt.bench.stats import percentile
from zsris_rt.commands.main import main
from zsris_rt.export.bench_workers import StageClock

RUNTIME_STAGES = {"decode", "preprocess", "trunk", "mask_grid", "masked_head", "crops",
                  "crop_encoder", "text", "score"}
REFERENCE_STAGES = {"decode", "preprocess", "global", "local", "text", "score"}
PROPOSER_STAGES = {"decode", "prop_encoder", "prop_decoder", "prop_filter", "prop_nms"}
MAIN_JOB_STAGES = {"decode", "prop_encoder", "prop_decoder", "preprocess", "trunk", "masked_head",
                   "crops", "crop_encoder", "text", "score"}
FAST_LABEL = "fast (proposer fast + CLIP top-4)"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One `zsris-rt bench --smoke` run, with matplotlib made unimportable."""
    out = tmp_path_factory.mktemp("bench")
    paths = SimpleNamespace(json=out / "bench.json", markdown=out / "bench.md",
                            plot=out / "bench.png")
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` → ImportError
        code = main(["bench", "--smoke", "--modes", "top1,int8+top1", "--work", str(out / "work"),
                     "--json", str(paths.json),
                     "--markdown", str(paths.markdown), "--plot", str(paths.plot)])
    return SimpleNamespace(code=code, stderr=stderr.getvalue(), **vars(paths),
                           report=json.loads(paths.json.read_text()) if code == 0 else None)


def test_smoke_times_the_fast_modes(smoke: SimpleNamespace) -> None:
    """Each mode ran in a torch-free process of its own at every K, encoding the crops it
    should; int8 ran the pack's int8 graphs, made on first use."""
    assert smoke.code == 0, smoke.stderr
    report = smoke.report
    assert report["config"]["modes"] == ["exact", "top1", "int8+top1"]
    assert sorted(report["quantize"]["graphs"]) == ["clip_masked_head", "clip_trunk"]
    exact = report["runtime"]["clip"]["ks"]["2"]
    assert exact["local_computed"] == 2
    for name, precision in (("top1", "fp32"), ("int8+top1", "int8")):
        process = report["modes"][name]
        assert not process["torch_in_sys_modules"]
        assert process["backend"]["precision"] == precision
        assert process["ks"]["2"]["local_computed"] == 1
        assert process["expressions"] == {}
    # The crop encoder's key (trunk + head on the crops, counted together in a one-tower pack).
    assert set(report["flops"]["crop_encoder"]) - {"parameters"} == {"1", "2"}
    markdown = smoke.markdown.read_text()
    assert "### Fast modes over K" in markdown and "| int8+top1 | 2 | 1 |" in markdown


def test_smoke_times_each_proposer_mode_and_the_main_job(smoke: SimpleNamespace) -> None:
    """Both proposer modes ran, each recording the prompts it decoded (fast never more than
    exact); the reference ran exact only; the main job ran per mode, torch-free, on its own
    proposals with its own peak memory."""
    assert smoke.code == 0, smoke.stderr
    report = smoke.report
    assert report["config"]["proposer_modes"] == ["exact", "fast"]
    rt, runs = report["runtime"], report["config"]["proposer_runs"]
    prompts = {}
    for mode in ("exact", "fast"):
        process = rt[f"proposer_{mode}"]
        propose = process["propose"]
        assert process["proposer_mode_settings"]["name"] == mode
        assert len(propose["prompts"]) == len(propose["grid_points"]) == runs
        assert all(0 < p <= g for p, g in zip(propose["prompts"], propose["grid_points"],
                                              strict=True))
        prompts[mode] = propose["prompts"]
    assert prompts["exact"] == rt["proposer_exact"]["propose"]["grid_points"]
    assert all(f <= e for f, e in zip(prompts["fast"], prompts["exact"], strict=True))
    assert set(report["reference"]) == {"clip", "proposer_exact"}
    jobs = report["main_job"]
    assert list(jobs) == ["exact", "fast"]
    assert (jobs["fast"]["label"], jobs["fast"]["proposer_mode"], jobs["fast"]["clip_mode"]) == \
        (FAST_LABEL, "fast", {"local_top": 4})
    assert (jobs["exact"]["proposer_mode"], jobs["exact"]["clip_mode"]) == ("exact", {})
    for job in jobs.values():
        segment = job["segment"]
        assert not job["torch_in_sys_modules"] and job["heavy_modules_loaded"] == []
        assert job["rss"]["vmhwm_mb"] > 0 and job["rss"]["vmrss_mb"] > 0
        assert 0 < job["rss_after_first_run"]["vmhwm_mb"] <= job["rss"]["vmhwm_mb"]
        assert len(segment["latencies_ms"]) == runs and segment["latency_ms"]["median"] > 0
        assert MAIN_JOB_STAGES <= set(segment["stages_ms"])
        assert segment["masks"] >= 1 and 0 <= segment["index"] < segment["masks"]
        assert 0 < segment["prompts"] <= segment["grid_points"]
    assert jobs["fast"]["segment"]["prompts"] <= jobs["exact"]["segment"]["prompts"]
    # The filters go off for the main job only when the proposer runs kept no mask at all.
    kept = [n for mode in ("exact", "fast")
            for n in rt[f"proposer_{mode}"]["propose"]["masks_kept"]]
    assert (jobs["exact"]["options"].get("pred_iou_thresh") == 0.0) == (min(kept) == 0)
    assert jobs["fast"]["segment"]["local_computed"] <= 4
    markdown = smoke.markdown.read_text()
    for needed in ("### Proposer stages, exact mode", "### Proposer stages, fast mode",
                   "### Main job end to end", f"| exact | {FAST_LABEL} |",
                   f"| main job {FAST_LABEL} |", "peak RSS MiB (VmHWM)",
                   "peak memory MiB (VmHWM)", "Random weights keep few masks"):
        assert needed in markdown, needed
    projection = report["proposer_projection"]
    if projection["available"]:
        assert 0 < projection["fast_prompt_share"] <= 1
        assert 0 < projection["projected_fast_encoder_decoder_ms"]
        assert "(projected, not measured)" in markdown
    else:
        assert "projection: not available (run benchmarks/proposer_modes.py)" in markdown


def test_projection_says_when_its_measurement_is_missing(smoke: SimpleNamespace,
                                                         tmp_path: Path) -> None:
    """Without benchmarks/proposer_modes.py's results there is no projection, and the report
    says how to get one; with them, fast's share is its prompts over exact's."""
    assert fast_prompt_share(tmp_path / "absent.json") is None
    report = dict(smoke.report, proposer_projection={
        "available": False, "why": "run benchmarks/proposer_modes.py"})
    assert "projection: not available (run benchmarks/proposer_modes.py)" in render(report)
    results = tmp_path / "proposer-modes.json"
    variant = {"overrides": {}, "precision": "fp32"}
    results.write_text(json.dumps({"sets": {"held-out": {"variants": {
        "exact": dict(variant, mode={"name": "exact"}, prompts_per_image=256.0),
        "grid 8×8": dict(variant, mode={"name": "fast"}, overrides={"points_per_side": 8},
                         prompts_per_image=30.0),
        "fast": dict(variant, mode={"name": "fast"}, prompts_per_image=64.0)}}}}))
    assert fast_prompt_share(results)["fast_prompt_share"] == 0.25


def _series(process: dict) -> list[dict]:
    if "propose" in process:
        return [process["propose"]]
    if "segment" in process:
        return [process["segment"]]
    return [*process["ks"].values(), *process["expressions"].values()]


def test_smoke_runs_every_stage_on_both_sides(smoke: SimpleNamespace) -> None:
    assert smoke.code == 0, smoke.stderr
    report = smoke.report
    rt, ref = report["runtime"], report["reference"]
    assert set(rt["clip"]["ks"]) == set(ref["clip"]["ks"]) == {"2"}
    assert set(rt["clip"]["expressions"]) == set(ref["clip"]["expressions"]) == {"1", "2"}
    assert set(rt["clip"]["ks"]["2"]["stages_ms"]) == RUNTIME_STAGES
    assert set(ref["clip"]["ks"]["2"]["stages_ms"]) == REFERENCE_STAGES
    for mode in ("exact", "fast"):
        assert set(rt[f"proposer_{mode}"]["propose"]["stages_ms"]) == PROPOSER_STAGES
    assert set(ref["proposer_exact"]["propose"]["stages_ms"]) == {"decode", "prop_encoder",
                                                                  "prop_rest"}
    for process in (rt["clip"], ref["clip"], rt["proposer_exact"], rt["proposer_fast"],
                    ref["proposer_exact"], *report["main_job"].values()):
        for series in _series(process):
            assert series["latencies_ms"] and min(series["latencies_ms"]) > 0
            for run, total in zip(series["stage_runs"], series["latencies_ms"], strict=True):
                assert min(run.values()) > 0, run
                assert sum(run.values()) <= total * 1.001
    assert rt["clip"]["ks"]["2"]["index"] == ref["clip"]["ks"]["2"]["index"]


def test_smoke_runtime_process_never_loaded_torch(smoke: SimpleNamespace) -> None:
    report = smoke.report
    for part in ("clip", "proposer_exact", "proposer_fast"):
        assert report["runtime"][part]["torch_in_sys_modules"] is False
        assert report["runtime"][part]["heavy_modules_loaded"] == []
    for part in ("clip", "proposer_exact"):
        assert report["reference"][part]["torch_in_sys_modules"] is True  # the check can fail


def test_smoke_counts_flops_and_floors(smoke: SimpleNamespace) -> None:
    report = smoke.report
    assert report["matmul"]["rate_gflops"] > 0
    graphs = {"clip_trunk", "clip_masked_head", "crop_encoder", "clip_text", "prop_encoder",
              "prop_decoder"}
    assert set(report["flops"]) - {"process_wall_s"} == graphs
    for graph in graphs:
        counts = [v for k, v in report["flops"][graph].items() if k != "parameters"]
        assert counts and all(c["flops"] > 0 and c["unknown_nodes"] == 0 for c in counts)


def test_smoke_writes_the_markdown_report(smoke: SimpleNamespace) -> None:
    text = smoke.markdown.read_text()
    for needed in ("random weights", smoke.report["machine"]["cpu"], "### End to end over K",
                   "### Stages at K = 2", "### Proposer stages", "### Over expressions per scene",
                   "### Processes", "masked head", "crop encoder", "floor ms",
                   "reference / runtime"):
        assert needed in text


def test_plot_without_matplotlib_is_one_line_and_no_png(smoke: SimpleNamespace) -> None:
    assert smoke.code == 0
    assert not smoke.plot.exists()
    lines = [line for line in smoke.stderr.splitlines() if "matplotlib" in line]
    assert len(lines) == 1 and "no plot" in lines[0]


def test_plot_with_matplotlib_writes_a_png(smoke: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert write_plot(smoke.report, path) == f"wrote {path}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [
    ["--ks", "0"], ["--ks", "8,x"], ["--runs", "0"], ["--warmup", "-1"], ["--threads", "0"],
    ["--expressions", "1000"], ["--points-per-side", "0"], ["--bogus"],
    ["--geometry", "ViT-Z/9"], ["--pack", "/no/such/pack"],
    ["--json", "/no/such/folder/out.json"], ["--image", "/no/such/image.jpg"],
    ["--clip-checkpoint", "/some/checkpoint"], ["--proposer-mode", "quick"],
    ["--proposer-mode", ","],
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # --smoke: should a check let the options through, the run costs seconds, not minutes.
    assert main(["bench", "--smoke", "--work", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zsris-rt bench: error: "), err
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_pack_excludes_random_pack_options(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["bench", "--pack", str(tmp_path), "--geometry", "tiny"]) == 2
    assert "random packs only" in capsys.readouterr().err


# --------------------------------------------------------------------- FLOPs on known graphs
def _known_graph():
    """MatMul [b,3,4]·[4,5], Gemm [6,7]·[8,7]ᵀ + bias, Conv 1×3×10×10 * 4×3×3×3 (valid)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("B", (4, 5)), ("W", (8, 7)), ("C", (8,)),
                                   ("K", (4, 3, 3, 3)))]
    nodes = [helper.make_node("MatMul", ["A", "B"], ["Y1"]),
             helper.make_node("Gemm", ["X", "W", "C"], ["Y2"], transB=1),
             helper.make_node("Conv", ["I", "K"], ["Y3"])]
    graph = helper.make_graph(
        nodes, "known",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", 3, 4]),
         helper.make_tensor_value_info("X", TensorProto.FLOAT, [6, 7]),
         helper.make_tensor_value_info("I", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in ("Y1", "Y2", "Y3")],
        weights)
    return onnx, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_graph_flops_are_twice_the_multiply_adds(batch: int, tmp_path: Path) -> None:
    _, model = _known_graph()
    matmul = batch * 3 * 5 * 4  # outputs × inner dimension
    gemm = 6 * 8 * 7
    conv = (4 * 8 * 8) * (3 * 3 * 3)  # 4 channels of 8×8 outputs, each a 3×3×3 window
    counted = graph_flops(model, {"batch": batch}, tmp_path / "scratch.onnx")
    assert counted == {"flops": 2 * (matmul + gemm + conv), "nodes": 3, "unknown_nodes": 0}


def test_count_pack_flops_reads_the_graphs_of_a_pack(tmp_path: Path) -> None:
    onnx, model = _known_graph()
    onnx.save(model, str(tmp_path / "known.onnx"))
    out = count_pack_flops({"pack": str(tmp_path), "result": str(tmp_path / "r.result.json"),
                            "counts": {"known": {"one": {"batch": 1}, "two": {"batch": 2}}}})
    assert out["known"]["parameters"] == 4 * 5 + 8 * 7 + 8 + 4 * 3 * 3 * 3
    assert out["known"]["two"]["flops"] - out["known"]["one"]["flops"] == 2 * 3 * 5 * 4


# ------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_percentile_is_numpys_linear_percentile(n: int) -> None:
    values = list(np.random.default_rng(n).exponential(10.0, n))
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)),
                                                      rel=1e-12, abs=1e-12)


def test_stage_clock_memoises_only_the_marked_methods() -> None:
    """The reference's image features are reused within a scene; its text features never."""
    calls: list[tuple[str, int]] = []

    class Model:
        def image(self, x: int) -> int:
            calls.append(("image", x))
            return 2 * x

        def text(self, x: int) -> int:
            calls.append(("text", x))
            return x + 1

    model, clock = Model(), StageClock()
    clock.wrap(model, "image", "encode", memo=True)
    clock.wrap(model, "text", "text")
    clock.memoise = True
    assert [model.image(1), model.image(5), model.text(1), model.text(2)] == [2, 2, 2, 3]
    assert calls == [("image", 1), ("text", 1), ("text", 2)]
    assert set(clock.take()) == {"encode", "text"}
    assert model.image(5) == 10  # take() forgets the memoised value


def test_a_backend_that_cannot_run_here_is_one_line(tmp_path, capfd) -> None:
    """`--backend cuda` without onnxruntime-gpu: the worker says why in one line, exit 2."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    code = main(["bench", "--smoke", "--backend", "cuda", "--no-reference",
                 "--proposer-runs", "0", "--work", str(tmp_path)])
    err = capfd.readouterr().err
    assert code == 2
    assert "zsris-rt bench, runtime_clip: backend cuda: this onnxruntime" in err
    assert "Traceback" not in err
