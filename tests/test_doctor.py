"""`zsris-rt doctor`: it reports what really runs and fails (exit 1) on what is broken."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from zsris_rt import diagnosis, maskops
from zsris_rt.commands.main import main as cli_main


def run_doctor(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(["doctor", *args])
    return code, capsys.readouterr().out


def test_healthy_pack_loads_on_cpu(capsys, pack_dir):
    code, out = run_doctor(capsys, "--pack", str(pack_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["problems"] == []
    assert report["pack"]["ok"] and report["pack"]["files"] == 4  # 3 CLIP graphs + tokenizer
    assert report["onnxruntime"]["loaded_providers"]["CPUExecutionProvider"] == "loads"
    assert report["maskops"]["implementation"] == maskops.implementation()


def test_human_report_names_the_mask_ops(capsys):
    code, out = run_doctor(capsys)
    assert code == 0 and out.rstrip().endswith("ok: nothing missing")
    assert f"implementation: {maskops.implementation()}" in out


def test_without_pack_the_default_pack_is_checked(capsys, monkeypatch, tmp_path):
    from zsris_rt import pack

    monkeypatch.delenv("ZSRIS_PACK", raising=False)
    code, out = run_doctor(capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["pack"]["ok"]
    assert report["pack"]["path"] == str(pack.DEMO_PACK)
    monkeypatch.setattr(pack, "DEMO_PACK", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    code, out = run_doctor(capsys, "--json")
    assert code == 0 and json.loads(out).get("pack") is None


def test_forced_numpy_mask_ops_are_reported():
    env = dict(os.environ, ZSRIS_MASKOPS="numpy")
    done = subprocess.run([sys.executable, "-m", "zsris_rt.commands", "doctor", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    implementation = json.loads(done.stdout)["maskops"]["implementation"]
    assert implementation == "numpy (forced by ZSRIS_MASKOPS=numpy)"


def test_altered_pack_is_a_problem(capsys, pack_dir, tmp_path):
    altered = tmp_path / "pack"
    shutil.copytree(pack_dir, altered)
    with open(altered / "clip_text.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    code, out = run_doctor(capsys, "--pack", str(altered))
    assert code == 1
    assert "PROBLEM: pack" in out and "clip_text.onnx does not match its sha256" in out
    assert "loaded_providers: not tried" in out  # graphs of a bad pack are not loaded


def test_missing_package_is_a_problem(monkeypatch):
    real = diagnosis._version
    monkeypatch.setattr(diagnosis, "_version", lambda name: None if name == "pycocotools"
                        else real(name))
    report = diagnosis.diagnose()
    assert report["packages"]["pycocotools"] is None
    assert report["problems"] == ["package pycocotools is not installed"]


def test_main_help_lists_doctor(capsys):
    try:
        cli_main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "zsris-rt doctor" in capsys.readouterr().out


def test_tensorrt_and_the_backend_auto_picks_here(capsys, pack_dir):
    """This machine has neither TensorRT nor a GPU: doctor says so and `auto` falls to the CPU,
    naming why it passed over each better backend."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    code, out = run_doctor(capsys, "--pack", str(pack_dir), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["tensorrt"]["usable"].startswith("no: tensorrt is not installed")
    assert report["backends"]["auto_picks"] == "cpu"
    assert set(report["backends"]["passed_over"]) == {"trt", "cuda"}
    assert report["engines"].startswith("none in ")


def test_cached_engines_are_listed_and_auto_picks_trt(capsys, monkeypatch, tmp_path, pack_dir):
    """With (fake) TensorRT and every engine of the pack built, doctor lists the engines and
    `--backend auto` would take TensorRT."""
    from fake_tensorrt import install

    from zsris_rt.backends.tensorrt import TrtBackend
    from zsris_rt.pack import load_pack

    install(monkeypatch, "10.3.0")
    monkeypatch.setenv("ZSRIS_ENGINE_CACHE", str(tmp_path))
    trt = TrtBackend(load_pack(pack_dir), precision="fp32")
    for graph in ("clip_trunk", "clip_masked_head", "clip_text"):
        trt.prepare(graph)
    code, out = run_doctor(capsys, "--pack", str(pack_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["tensorrt"]["usable"] == "yes"
    assert report["tensorrt"]["tensorrt"] == "10.3.0"
    assert len(report["engines"]) == 3 and all("fp32 (TensorRT 10.3.0" in e
                                                for e in report["engines"])
    assert report["backends"] == {"auto_picks": "trt", "passed_over": {}}
