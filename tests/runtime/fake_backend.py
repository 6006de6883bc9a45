"""A fake `Backend` (zsris_rt.backends.base) for the torch-free tier: canned outputs per graph,
and a record of every call (graph, input names, shapes and dtypes, the release flag).

`FakeBackend` takes one handler per graph: inputs (name → array) → outputs, in the graph's order.
Like a real engine it refuses a batch above its `max_batch` (the caller must chunk) and a graph
it does not hold. Two canned worlds sit on top:

* `ClipWorld`: the CLIP graphs, with the features of each mask chosen by the test. Its scenes
  are 224×224 images cut into the 7×7 cells of the grid (32 px each); mask k is cell k (row
  major), painted a colour that encodes k. The trunk marks the tokens of the whole scene with -1
  and those of a crop with the k its uniform colour encodes; the masked head answers f^G[k] for
  a scene's tokens under the grid of cell k, and f^L[k] for the tokens of crop k under an
  all-ones grid. The text tower answers `text(ids)` (a fixed vector unless the test says
  otherwise).
* `ProposerWorld`: the proposer's graphs on square scenes holding axis-aligned boxes: a point
  prompt inside box j decodes to box j (logits ±10 at low resolution) with predicted IoU
  `ious[j]`; a prompt on the background to the whole image with IoU 0.05 (dropped by any
  usual `pred_iou_thresh`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from zsris_rt.backends.base import Backend
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import ClipSettings, GeneratorDefaults, Manifest, Pack, ProposerSettings

Handler = Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]]

# The inputs whose leading axis is a batch (the rest go whole to every call).
BATCHED = {"clip_trunk": ("image",), "clip_masked_head": ("tokens", "grid_masks"),
           "clip_text": ("ids", "end_index"), "prop_decoder": ("points", "labels")}


@dataclass(frozen=True)
class Call:
    graph: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    release: bool

    def rows(self, name: str) -> int:
        return self.shapes[name][0]


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, handlers: dict[str, Handler], limits: dict[str, int] | None = None,
                 failures: dict[str, BaseException] | None = None) -> None:
        self.handlers = dict(handlers)
        self.limits = dict(limits or {})
        self.failures = dict(failures or {})
        self.calls: list[Call] = []
        self.prepared: list[str] = []
        self.inputs: list[dict[str, np.ndarray]] = []  # copies, for tests that look inside

    def prepare(self, graph: str) -> None:
        if graph not in self.handlers:
            raise ZsrisError(f"fake backend: no graph {graph}")
        self.prepared.append(graph)

    def max_batch(self, graph: str) -> int | None:
        return self.limits.get(graph)

    def run(self, graph: str, inputs: dict[str, np.ndarray], *,
            release: bool = False) -> list[np.ndarray]:
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        self.calls.append(Call(graph, {n: a.shape for n, a in arrays.items()},
                               {n: str(a.dtype) for n, a in arrays.items()}, release))
        self.inputs.append({n: a.copy() for n, a in arrays.items()})
        if graph in self.failures:
            raise self.failures[graph]
        if graph not in self.handlers:
            raise AssertionError(f"the fake backend holds no graph {graph!r}")
        limit = self.limits.get(graph)
        for name in BATCHED.get(graph, ()):
            if limit is not None and name in arrays and arrays[name].shape[0] > limit:
                raise AssertionError(f"{graph}: {name} has {arrays[name].shape[0]} rows, above "
                                     f"the max batch {limit}")
        return [np.asarray(out) for out in self.handlers[graph](arrays)]

    def details(self) -> dict[str, object]:
        return {"fake": True}

    def calls_to(self, graph: str) -> list[Call]:
        return [c for c in self.calls if c.graph == graph]

    def graphs(self) -> list[str]:
        return [c.graph for c in self.calls]

    def inputs_to(self, graph: str) -> list[dict[str, np.ndarray]]:
        return [i for c, i in zip(self.calls, self.inputs, strict=True) if c.graph == graph]

    def forget(self) -> None:
        self.calls.clear()
        self.inputs.clear()


# ---------------------------------------------------------------------------------------------
# The CLIP world

CELL = 32  # pixels of one grid cell at 224 px
SIDE = 7  # cells a side: the grid of a 224 px, patch 32 CLIP
SCENE_MARK = -1.0


def cell_colour(k: int) -> int:
    """The red value of cell k (green and blue are 100): distinct for k < 49."""
    return 4 * k + 2


def cell_masks(cells: Sequence[int]) -> np.ndarray:
    """K×224×224 masks, mask i being grid cell cells[i] (row major)."""
    masks = np.zeros((len(cells), SIDE * CELL, SIDE * CELL), dtype=bool)
    for i, k in enumerate(cells):
        r, c = divmod(k, SIDE)
        masks[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = True
    return masks


def cell_scene() -> np.ndarray:
    """224×224 RGB: every cell painted its colour."""
    image = np.full((SIDE * CELL, SIDE * CELL, 3), 100, dtype=np.uint8)
    for k in range(SIDE * SIDE):
        r, c = divmod(k, SIDE)
        image[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL, 0] = cell_colour(k)
    return image


@dataclass
class ClipWorld:
    """f^G and f^L per cell (49×E each; rows of cells no mask uses may be anything)."""

    settings: ClipSettings
    global_features: np.ndarray
    local_features: np.ndarray
    text: Callable[[np.ndarray], np.ndarray]

    def handlers(self) -> dict[str, Handler]:
        return {"clip_trunk": self.trunk, "clip_masked_head": self.head,
                "clip_text": self.text_tower}

    def _cell_of_crop(self, crop: np.ndarray) -> float:
        """The cell a crop shows (its uniform colour), or SCENE_MARK for the whole scene."""
        red = crop[0]
        if float(red.max() - red.min()) > 1e-3:
            return SCENE_MARK
        value = (float(red.mean()) * self.settings.std[0] + self.settings.mean[0]) * 255.0
        k = (value - 2.0) / 4.0
        assert abs(k - round(k)) < 0.05, k
        return float(round(k))

    def trunk(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        images = inputs["image"]
        s = self.settings
        assert images.shape[1:] == (3, s.image_size, s.image_size), images.shape
        tokens = np.zeros((len(images), s.tokens, s.width), dtype=np.float32)
        tokens[:, 0, 0] = [self._cell_of_crop(image) for image in images]
        return [tokens]

    def head(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        tokens, grids = inputs["tokens"], inputs["grid_masks"]
        assert len(tokens) in (1, len(grids)), (tokens.shape, grids.shape)
        rows = []
        for m, grid in enumerate(grids):
            mark = float(tokens[m if len(tokens) > 1 else 0, 0, 0])
            if mark == SCENE_MARK:
                rows.append(self.global_features[int(np.argmax(grid))])
            else:
                assert np.all(grid == 1.0), "a crop's grid must be all ones"
                rows.append(self.local_features[int(mark)])
        return [np.asarray(rows, dtype=np.float32).reshape(len(grids), -1)]

    def text_tower(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids, end = inputs["ids"], inputs["end_index"]
        assert ids.shape[0] == end.shape[0]
        return [np.stack([self.text(row[:e + 1]) for row, e in zip(ids, end, strict=True)])
                .astype(np.float32)]


# ---------------------------------------------------------------------------------------------
# The proposer world

@dataclass
class ProposerWorld:
    """Square `size`×`size` scenes holding `boxes` ([x0, y0, x1, y1) in image pixels)."""

    settings: ProposerSettings
    size: int
    boxes: list[tuple[int, int, int, int]]
    ious: list[float] = field(default_factory=list)
    channels: int = 8

    def handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {"prop_encoder": self.encoder, "prop_decoder": self.decoder}
        if self.settings.decoder_state:
            handlers["prop_decoder_image"] = self.decoder_image
        return handlers

    def encoder(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        s = self.settings.input_size
        assert inputs["image"].shape == (1, 3, s, s), inputs["image"].shape
        grid = s // 16
        return [np.zeros((1, self.channels, grid, grid), dtype=np.float32)
                for _ in self.settings.embeddings]

    def decoder_image(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert set(inputs) == set(self.settings.embeddings), sorted(inputs)
        return [np.zeros((16, self.channels), dtype=np.float32)
                for _ in self.settings.decoder_state]

    def decoder(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        expected = set(self.settings.decoder_state or self.settings.embeddings)
        assert expected <= set(inputs), (sorted(expected), sorted(inputs))
        points, labels = inputs["points"], inputs["labels"]
        assert points.shape[:2] == labels.shape and points.shape[2] == 2
        low, s = self.settings.low_res_size, self.settings.input_size
        # Low-res cell centres in image pixels (the image fills the input: square, "longest").
        centres = (np.arange(low) + 0.5) * self.size / low
        logits = np.full((len(points), 3, low, low), -10.0, dtype=np.float32)
        iou = np.full((len(points), 3), 0.05, dtype=np.float32)
        for n, prompt in enumerate(points[:, 0]):
            x, y = prompt * self.size / s  # input frame → image pixels
            hit = next((j for j, (x0, y0, x1, y1) in enumerate(self.boxes)
                        if x0 <= x < x1 and y0 <= y < y1), None)
            if hit is None:
                logits[n, 0] = 10.0
                continue
            x0, y0, x1, y1 = self.boxes[hit]
            inside = ((centres[:, None] >= y0) & (centres[:, None] < y1) &
                      (centres[None, :] >= x0) & (centres[None, :] < x1))
            logits[n, 0] = np.where(inside, 10.0, -10.0)
            iou[n, 0] = self.ious[hit] if self.ious else 0.95
        return [logits, iou]


# ---------------------------------------------------------------------------------------------
# Packs for the fakes: the demo pack's settings and tokenizer, the graphs' signatures declared
# here (so nothing depends on the demo manifest's details), no graph file ever read.

def fake_pack(demo: Pack, *, alpha: float = 0.5, beta: float = 0.5,
              local_norm_bound: float | None = None,
              proposer: ProposerSettings | None = None) -> Pack:
    clip = replace(demo.clip, alpha=alpha, beta=beta, local_norm_bound=local_norm_bound)
    g, t, w = clip.grid, clip.tokens, clip.width
    graphs = {
        "clip_trunk": {"inputs": [{"name": "image", "shape": ["batch", 3, 224, 224]}]},
        "clip_masked_head": {"inputs": [{"name": "tokens", "shape": ["batch", t, w]},
                                        {"name": "grid_masks", "shape": ["masks", g, g]}]},
        "clip_text": {"inputs": [{"name": "ids", "shape": ["batch", "length"]},
                                 {"name": "end_index", "shape": ["batch"]}]},
    }
    manifest = Manifest(clip=clip, proposer=proposer, files={}, graphs=graphs)
    return Pack(root=demo.root, manifest=manifest)


def proposer_settings(*, decoder_state: bool = False, points_per_side: int = 4,
                      points_per_batch: int = 64, input_size: int = 64,
                      low_res_size: int = 16) -> ProposerSettings:
    return ProposerSettings(
        family="sam", input_size=input_size, low_res_size=low_res_size, resize="longest",
        resize_filter="bilinear", embeddings=("image_embeddings",),
        decoder_state=("dec_a", "dec_b") if decoder_state else (),
        generator=GeneratorDefaults(points_per_side=points_per_side,
                                    points_per_batch=points_per_batch))
