"""Calibration inputs: what each graph of a pack really receives on real images.

int8 quantisers (ONNX Runtime static QDQ, TensorRT's entropy calibrator) need example inputs per
graph; synthetic ones give wrong activation ranges (a crop of a masked object is mostly fill, a
proposer decoder sees point prompts on the image grid). So the fp32 pipeline runs on the images as
it would at query time, behind a backend wrapper that records the inputs of every call. Big
batches (K crops, K grid masks, a chunk of point prompts) are split into single rows and kept by
reservoir sampling, so every graph gets up to `per_graph` entries drawn evenly from all images,
and memory stays bounded by `per_graph` rows per graph whatever the image count. The trunk and the
masked head serve both branches (the image and its mask grids for f^G; the masked crops and
all-ones grids for f^L, the crop encoder), so their entries mix both, about one image row per K
crop rows for the trunk, as the runtime sends them.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .backends import Backend
from .backends.ort import OrtBackend
from .errors import ImageError, NoMaskError
from .image import as_rgb, read_image
from .pack import Pack

Entry = dict[str, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# Short referring expressions in the style of RefCOCO, with the colours, shapes and relations the
# demo vocabulary knows: the text tower's activation ranges depend on length and word kinds.
DEFAULT_TEXTS = (
    "the red circle", "the big blue square", "the small green star on the left",
    "yellow triangle", "the man on the right", "a dog", "the white car next to the tree",
    "the woman in the middle holding an umbrella", "the biggest object", "left one",
    "the purple shape at the top", "the orange circle below the square",
)


def list_images(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by `sources` (files, folders, or glob patterns), sorted per source and
    de-duplicated; each one is decoded once here, so an unreadable file is named up front
    rather than half-way through a long calibration."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise ImageError(f"{path}: folder holds no image files "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise ImageError(f"{source}: no such image file, folder or matching files")
        found.extend(matches)
    if not found:
        raise ImageError("no calibration images given")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    for path in unique:
        read_image(path)
    return unique


def fixed_masks(height: int, width: int) -> np.ndarray:
    """Masks for a pack without a proposer: the whole image, its four halves, two opposite
    quarters, the five cells of a 3×3 grid on a checkerboard and centred ellipses of three sizes
    (15 masks of varied area and shape; fewer when a tiny image makes some empty)."""
    masks = [np.ones((height, width), dtype=bool)]
    yy, xx = np.mgrid[0:height, 0:width]
    h2, w2 = max(height // 2, 1), max(width // 2, 1)
    for box in ((0, h2, 0, width), (h2, height, 0, width), (0, height, 0, w2),
                (0, height, w2, width), (0, h2, 0, w2), (h2, height, w2, width)):
        masks.append(_box(height, width, *box))
    for row in range(3):
        for col in range(3):
            if (row + col) % 2 == 0:
                masks.append(_box(height, width, row * height // 3, (row + 1) * height // 3,
                                  col * width // 3, (col + 1) * width // 3))
    for scale in (0.15, 0.3, 0.45):
        ry, rx = max(scale * height, 1.0), max(scale * width, 1.0)
        masks.append(((yy - height / 2) / ry) ** 2 + ((xx - width / 2) / rx) ** 2 <= 1)
    return np.stack([m for m in masks if m.any()])


def _box(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = True
    return mask


class _Reservoir:
    """A uniform sample of at most `size` entries from a stream (Vitter's algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng, self.seen = size, rng, 0
        self.entries: list[Entry] = []

    def slot(self) -> int | None:
        """Where the next stream item goes (append when == len), or None to drop it."""
        self.seen += 1
        if len(self.entries) < self.size:
            return len(self.entries)
        pick = int(self.rng.integers(0, self.seen))
        return pick if pick < self.size else None


class RecordingBackend(Backend):
    """Runs every call on `inner` and keeps a sample of the inputs, split into single rows along
    the inputs whose leading axis the manifest declares symbolic (batch, masks, prompts)."""

    def __init__(self, inner: Backend, pack: Pack, per_graph: int, seed: int = 0) -> None:
        self.inner = inner
        self.name = inner.name
        rng = np.random.default_rng(seed)
        self.batched = {graph: tuple(spec["name"] for spec in info.get("inputs", [])
                                     if spec["shape"] and isinstance(spec["shape"][0], str))
                        for graph, info in pack.manifest.graphs.items()}
        self.samples = {graph: _Reservoir(per_graph, rng) for graph in self.batched}

    def prepare(self, graph: str) -> None:
        self.inner.prepare(graph)

    def max_batch(self, graph: str) -> int | None:
        return self.inner.max_batch(graph)

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        self._record(graph, inputs)
        return self.inner.run(graph, inputs, release=release)

    def _record(self, graph: str, inputs: dict[str, np.ndarray]) -> None:
        reservoir = self.samples.get(graph)
        if reservoir is None:
            return
        rows = max((inputs[n].shape[0] for n in self.batched[graph] if n in inputs), default=1)
        # A batched input of one row among longer ones is broadcast by the graph (one image's
        # tokens under K masks): it goes whole into every entry, like the unbatched inputs.
        batched = [n for n in self.batched[graph] if n in inputs and inputs[n].shape[0] == rows]
        shared: Entry | None = None
        for row in range(rows):
            slot = reservoir.slot()
            if slot is None:
                continue
            if shared is None:  # copied once per call: callers reuse their buffers
                shared = {n: np.array(a) for n, a in inputs.items() if n not in batched}
            entry = {n: np.array(a[row:row + 1]) if n in batched else shared[n]
                     for n, a in inputs.items()}
            if slot == len(reservoir.entries):
                reservoir.entries.append(entry)
            else:
                reservoir.entries[slot] = entry


def collect_graph_inputs(pack: Pack, images: Sequence[str | Path | np.ndarray],
                         texts: Sequence[str] | None = None, per_graph: int = 64,
                         threads: int | None = None,
                         progress: Callable[[int, int], None] | None = None,
                         ) -> dict[str, list[Entry]]:
    """Run the fp32 ONNX Runtime CPU pipeline on `images` (proposer masks when the pack has a
    proposer, else `fixed_masks`) and on `texts` (default `DEFAULT_TEXTS`); return, per graph of
    the pack, up to `per_graph` recorded input dicts (name → array), each a single row of a
    batched input with the graph's other inputs as they were. `progress(done, total)` is called
    after each image."""
    from .segmenter import Segmenter

    if not images:
        raise ImageError("no calibration images given")
    if per_graph < 1:
        raise ValueError(f"per_graph must be positive, got {per_graph}")
    recorder = RecordingBackend(OrtBackend(pack, threads=threads), pack, per_graph)
    segmenter = Segmenter(pack, recorder)
    for text in texts if texts is not None else DEFAULT_TEXTS:
        segmenter.encode_text(text)
    for done, image in enumerate(images, start=1):
        rgb = as_rgb(image)
        masks = None
        if segmenter.proposer is not None:
            try:
                masks = segmenter.propose(rgb).masks
            except NoMaskError:
                masks = None
            if masks is not None and len(masks) == 0:
                masks = None
        segmenter.encode_image(rgb, fixed_masks(*rgb.shape[:2]) if masks is None else masks)
        segmenter.clear_caches()
        if progress is not None:
            progress(done, len(images))
    return {graph: recorder.samples[graph].entries for graph in pack.graph_names}
