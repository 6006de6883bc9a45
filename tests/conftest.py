"""Shared fixtures: one tiny random CLIP, exported once per session by the real exporter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def simple_tokenizer():
    """OpenAI's SimpleTokenizer, loaded by file path (importing `clip` pulls in torchvision)."""
    import importlib.metadata
    import importlib.util

    files = importlib.metadata.files("openai-clip") or []
    path = next(Path(str(f.locate())) for f in files if f.name == "simple_tokenizer.py")
    spec = importlib.util.spec_from_file_location("openai_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsris_rt.export.random_checkpoint import write_random_clip

    return write_random_clip(tmp_path_factory.mktemp("ckpt") / "tiny-clip", "tiny", seed=1)


@pytest.fixture(scope="session")
def pack_dir(clip_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from zsris_rt.export.cli import main

    out = tmp_path_factory.mktemp("packs") / "tiny"
    assert main(["clip", str(clip_folder), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def segmenter(pack_dir: Path):
    from zsris_rt import Segmenter

    return Segmenter.from_pack(pack_dir)


@pytest.fixture(scope="session")
def reference(clip_folder: Path):
    from zsris_rt.export.checkpoints import load_clip
    from zsris_rt.export.reference import GlobalLocalReference

    return GlobalLocalReference(load_clip(clip_folder).model)


def random_scene(rng: np.random.Generator, h: int, w: int, k: int) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """A smooth random image and K random blob masks (ellipses), none empty."""
    import cv2

    noise = rng.integers(0, 256, (max(h // 8, 1), max(w // 8, 1), 3), dtype=np.uint8)
    image = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    masks = np.zeros((k, h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(k):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 2 + 1), rng.uniform(1, w / 2 + 1)
        masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if not masks[i].any():
            masks[i, int(cy) % h, int(cx) % w] = True
    return image, masks


@pytest.fixture(scope="session")
def sam_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random SAM and SAM 2 (HF folders), weights at realistic scales."""
    from zsris_rt.export.random_checkpoint import write_random_sam

    root = tmp_path_factory.mktemp("sam")
    return {family: write_random_sam(root / family, family, "tiny", seed=3)
            for family in ("sam", "sam2")}


@pytest.fixture(scope="session")
def proposer_packs(pack_dir: Path, sam_folders: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CLIP pack with each proposer added by the real exporter."""
    import shutil

    from zsris_rt.export.cli import main

    packs = {}
    for family, folder in sam_folders.items():
        pack = tmp_path_factory.mktemp("packs") / f"tiny-{family}"
        shutil.copytree(pack_dir, pack)
        assert main(["sam", str(folder), "--pack", str(pack)]) == 0
        packs[family] = pack
    return packs


def native_maskops() -> ModuleType:
    """The C++ mask ops, or a skip that says why: without a compiler at install time the NumPy
    twins run instead, and only the C++-specific checks have nothing to test."""
    return pytest.importorskip(
        "zsris_rt._maskops", exc_type=ImportError,
        reason="C++ extension not built (no compiler at install time); the NumPy twins run "
               "instead")


@pytest.fixture(scope="module")
def native() -> ModuleType:
    return native_maskops()


def native_or_twin(which: str, name: str, twin: Callable[..., Any]) -> Callable[..., Any]:
    """Op `name` of the C++ extension when `which` is "c++" (a skip when it is not built), else
    its NumPy twin: for fixtures parametrized over both, so every check runs on each."""
    return getattr(native_maskops(), name) if which == "c++" else twin


def varied_masks(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    """K random H×W masks of every kind: empty, full, a filled or noisy rectangle anywhere (on
    the borders too, or empty), a copy of an earlier mask or its complement."""
    masks = np.zeros((k, h, w), dtype=bool)
    for i, mask in enumerate(masks):
        kind = rng.integers(0, 6)
        if kind == 0:
            continue
        if kind == 1:
            mask.fill(True)
        elif kind >= 4 and i:
            earlier = masks[rng.integers(0, i)]
            mask[:] = earlier if kind == 4 else ~earlier
        else:
            y0, y1 = np.sort(rng.integers(0, h + 1, 2))
            x0, x1 = np.sort(rng.integers(0, w + 1, 2))
            density = 1.0 if kind == 2 else rng.uniform(0.1, 0.9)
            mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < density
    return masks
