"""Fixtures of the torch-free tier, and its guard: when the tier runs alone, a test after which
torch is in sys.modules fails (the runtime, its commands and these tests must never load it,
even where it is installed). In the full suite the other tests load torch on purpose, so the
guard stands down there; the subprocess checks of test_no_torch.py hold in both.

Nothing here or in tests/conftest.py imports torch or zsris_rt.export at module level.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "examples"


def torch_modules() -> list[str]:
    """torch and its submodules really loaded (the runtime parks None under "torch" for a moment
    while spaCy loads, so that thinc cannot import it)."""
    return sorted(m for m, module in list(sys.modules.items())
                  if (m == "torch" or m.startswith("torch.")) and module is not None)


@pytest.fixture(scope="session")
def tier_alone(request: pytest.FixtureRequest) -> bool:
    """True when every collected test belongs to this tier."""
    items = request.session.items
    alone = bool(items) and all(HERE in Path(str(item.path)).resolve().parents
                                for item in items)
    if alone:
        assert not torch_modules(), f"torch was loaded before the tier ran: {torch_modules()[:5]}"
    return alone


@pytest.fixture(autouse=True)
def no_torch_after_each_test(tier_alone: bool, request: pytest.FixtureRequest):
    yield
    if tier_alone:
        assert not torch_modules(), f"{request.node.nodeid} loaded torch: {torch_modules()[:5]}"


@pytest.fixture(scope="session")
def demo_pack():
    from zsris_rt.pack import DEMO_PACK, load_pack

    return load_pack(DEMO_PACK, verify=True)


@pytest.fixture(scope="session")
def demo_segmenter(demo_pack):
    from zsris_rt import Segmenter

    return Segmenter.from_pack(demo_pack.root)


@pytest.fixture(scope="session")
def scene_masks() -> dict[str, np.ndarray]:
    """The example scenes' true masks (K×240×320 each)."""
    return {name: np.load(EXAMPLES / f"{name}_masks.npz")["masks"]
            for name in ("scene-1", "scene-2", "scene-3")}


@pytest.fixture
def demo_copy(tmp_path: Path, demo_pack) -> Path:
    """A copy of the demo pack that a test may alter."""
    return Path(shutil.copytree(demo_pack.root, tmp_path / "pack"))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small `zsris-rt synth` dataset (8 images, two per refcoco split), made once."""
    from zsris_rt.synthetic_refer import write_synthetic_refer

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_refer(root, "refcoco", images=8, seed=3)
    return root
