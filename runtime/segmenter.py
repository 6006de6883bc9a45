"""The split predictor: encode an image once (`Scene`), then query it with any number of
expressions. Per image: the proposer (when no masks are given), then one trunk call and one
masked-head call for f^G of all K masks, and the crop encoder for f^L — the same two graphs on the
K masked crops (the trunk on the crops, then the head with all-ones grids: one vision tower in
the pack); per new expression: one text call for s' and its noun phrase together. With
`local_top` or `local_bound` the crop encoder is deferred to the queries, which encode only the
masks they need (runtime/local_pruning.py)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import EllipsisType

import numpy as np

from .backends import Backend, create_backend
from .backends.base import run_in_chunks
from .bilinear import resize_bilinear
from .errors import MaskError, NoMaskError, ZsrisError
from .image import as_rgb, normalise
from .local_features import LocalFeatures
from .local_pruning import choose, validate_local_bound, validate_local_top
from .mask_io import validate_masks
from .maskops import mask_grid, masked_crops, tight_boxes
from .pack import CLIP_GRAPHS, ClipSettings, Pack, default_pack, load_pack
from .proposer import ImageEmbedding, Proposer
from .proposer.modes import ProposerMode
from .proposer.modes import proposer_mode as proposer_mode_of
from .results import Proposals, Result, Scene
from .scoring import fuse_and_score
from .text import ExpressionParser, Phrases
from .tokenizer import ClipTokenizer

TEXT_CACHE_SIZE = 256
EMBEDDING_CACHE_SIZE = 2  # proposer encodings kept, by image content
# Masked crops are written into a buffer kept per thread for up to this many masks (77 MB at
# 224 px): a fresh 5-80 MB array per image costs its page faults every time.
CROP_BUFFER_MASKS = 128
LOCAL_STAGES = ("crops", "crop_encoder")  # the stages a pruning query may run lazily


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


def _weight(name: str, value: float | None, default: float) -> float:
    """α or β as given, else the default; a mixing weight outside [0, 1] is a caller error."""
    weight = default if value is None else float(value)
    if not 0.0 <= weight <= 1.0:
        raise ZsrisError(f"{name} must lie in [0, 1], got {weight}")
    return weight


class Segmenter:
    """`local_top=M` scores only the M masks best by global score (approximate); `local_bound`
    prunes only masks that provably cannot win (exact; needs the pack's `local_norm_bound`).
    Either defers f^L from `encode_image` to the queries (runtime/local_pruning.py)."""

    def __init__(self, pack: Pack, backend: Backend, alpha: float | None = None,
                 beta: float | None = None, spacy_model: str | None = None,
                 local_top: int | None = None, local_bound: bool = False,
                 proposer_mode: str | ProposerMode = "exact", preload: bool = True,
                 spatial: bool = False) -> None:
        self.pack = pack
        # Spatial words (left, second from the top, beneath the X, the biggest) chosen with the
        # masks' geometry (runtime/spatial/); off: the paper's choice, always.
        self.spatial = bool(spatial)
        self.proposer_mode = proposer_mode_of(proposer_mode)
        self.settings: ClipSettings = pack.clip
        self.backend = backend
        self.alpha = _weight("alpha", alpha, self.settings.alpha)
        self.beta = _weight("beta", beta, self.settings.beta)
        self.local_top = validate_local_top(local_top)
        self.local_bound = validate_local_bound(local_bound, self.settings.local_norm_bound)
        self.parser = ExpressionParser(spacy_model or self.settings.spacy_model)
        s = self.settings
        self.tokenizer = ClipTokenizer(pack.path("tokenizer.json"), s.context_length,
                                       s.start_token, s.end_token, s.pad_token)
        self._text_cache: OrderedDict[str, tuple[Phrases, np.ndarray, np.ndarray, bool]] = \
            OrderedDict()
        self._embedding_cache: OrderedDict[bytes, ImageEmbedding] = OrderedDict()
        self._crop_buffers = threading.local()
        # One Segmenter may serve several threads (zsris-rt serve): the caches and the spaCy
        # parse are guarded; the graphs themselves run concurrently.
        self._cache_lock = threading.Lock()
        self._text_lock = threading.Lock()
        self.proposer = Proposer(pack.proposer, backend) if pack.proposer else None
        if preload:
            for graph in CLIP_GRAPHS:
                backend.prepare(graph)
            if self.proposer is not None:
                self.proposer.prepare()
        else:  # one small graph, so that a backend that cannot start fails now
            backend.prepare("prop_decoder" if self.proposer is not None else "clip_text")

    def clear_caches(self) -> None:
        """Forget cached text features, parses and image encodings (for cold-start timing)."""
        self._text_cache.clear()
        self._embedding_cache.clear()
        self.parser.clear_cache()

    @classmethod
    def from_pack(cls, path: str | os.PathLike[str] | None = None, backend: str = "cpu",
                  alpha: float | None = None, beta: float | None = None,
                  spacy_model: str | None = None, threads: int | None = None,
                  verify: bool = True, precision: str = "fp32", local_top: int | None = None,
                  local_bound: bool = False,
                  engine_cache: str | os.PathLike[str] | None = None,
                  proposer_mode: str | ProposerMode = "exact",
                  preload: bool = True, spatial: bool = False) -> Segmenter:
        """Load and verify a pack (default: the demo pack, see `default_pack`), and bind it to a
        backend ("cpu", "cuda", "ort-trt", "trt" or "auto"; see `create_backend`) at `precision`
        ("fp32"; "int8": the pack's int8 graphs or TensorRT int8 engines; "fp16": TensorRT).
        `engine_cache`: TensorRT's engine folder. `local_top`/`local_bound`: see the class.
        `proposer_mode`: "exact" (segment-anything's generator) or "fast" (runtime/
        proposer_modes.py), the default of `propose` and `encode_image`. `preload=False` loads
        each graph when it first runs instead of now (but one small graph, to check the backend
        starts): a one-shot job then never holds the CLIP weights and the proposer encoder's
        working memory at once (its peak memory falls by the smaller of the two), while a warm
        segmenter's first query is not slowed by loading. `spatial=True` reads positions,
        ordinals, relations and superlative sizes in the expressions (runtime/spatial/); an
        expression without them gets the paper's choice exactly."""
        pack = load_pack(default_pack() if path is None else Path(path), verify=verify)
        validate_local_top(local_top)  # refuse bad options before building a backend
        validate_local_bound(local_bound, pack.clip.local_norm_bound)
        proposer_mode_of(proposer_mode)
        return cls(pack, create_backend(pack, backend, threads=threads, precision=precision,
                                        engine_cache=engine_cache),
                   alpha, beta, spacy_model, local_top, local_bound, proposer_mode, preload,
                   spatial)

    @property
    def spacy_model(self) -> str:
        return self.parser.spacy_model

    def propose(self, image: np.ndarray | str | os.PathLike[str],
                mode: str | ProposerMode | None = None, **overrides: object) -> Proposals:
        """Candidate masks for the image, segment-anything style; each option of
        `GeneratorDefaults` (points_per_side, pred_iou_thresh, ...) is a keyword override, and
        `mode` ("exact", "fast") overrides the segmenter's proposer mode. The encoder runs once
        per image: asking again with other options or another mode reuses it."""
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            rgb = as_rgb(image)
        return self._propose(rgb, timings, mode, overrides)

    def _propose(self, rgb: np.ndarray, timings: dict[str, float],
                 mode: str | ProposerMode | None, overrides: dict[str, object]) -> Proposals:
        if self.proposer is None:
            raise MaskError(f"pack {self.pack.root} has no proposer: pass masks, or add one "
                            "with `zsris-export sam CHECKPOINT --pack PACK`")
        key = hashlib.blake2b(rgb.data, digest_size=16).digest() + \
            np.asarray(rgb.shape).tobytes()
        with self._cache_lock:
            embedding = self._embedding_cache.get(key)
            if embedding is not None:
                self._embedding_cache.move_to_end(key)
        if embedding is None:
            with _timed(timings, "prop_encoder"):
                embedding = self.proposer.encode(rgb)
            with self._cache_lock:
                self._embedding_cache[key] = embedding
                if len(self._embedding_cache) > EMBEDDING_CACHE_SIZE:
                    self._embedding_cache.popitem(last=False)
        return self.proposer.generate(embedding, timings,
                                      self.proposer_mode if mode is None else mode, **overrides)

    def encode_image(self, image: np.ndarray | str | os.PathLike[str],
                     masks: np.ndarray | None = None,
                     proposer_mode: str | ProposerMode | None = None,
                     **overrides: object) -> Scene:
        """f^G and f^L of every mask (SPEC §1–3); f^L only when queried if this segmenter prunes
        it (`local_top`, `local_bound`). Without `masks`, the pack's proposer makes them
        (`proposer_mode` and `overrides` go to `propose`)."""
        timings: dict[str, float] = {}
        s = self.settings
        with _timed(timings, "decode"):
            rgb = as_rgb(image)
        proposals = None
        if masks is None:
            proposals = self._propose(rgb, timings, proposer_mode, overrides)
            if len(proposals) == 0:
                raise NoMaskError("the proposer kept no mask for this image (lower "
                                  "pred_iou_thresh or stability_score_thresh to keep more)")
            masks = proposals.masks
        elif overrides or proposer_mode is not None:
            raise TypeError("proposer options apply only when no masks are given")
        with _timed(timings, "preprocess"):
            masks = validate_masks(masks, rgb.shape[:2])
            boxes = tight_boxes(masks)
            xn = normalise(rgb, s.mean, s.std)
            square = resize_bilinear(xn, (s.image_size, s.image_size))[None]
        with _timed(timings, "trunk"):
            tokens = self.backend.run("clip_trunk", {"image": square}, release=True)[0]
        with _timed(timings, "mask_grid"):
            grid = mask_grid(masks, s.grid)
        with _timed(timings, "masked_head"):
            fg = self.backend.run_batched("clip_masked_head",
                                          {"tokens": tokens, "grid_masks": grid},
                                          ("grid_masks",), release=True)[0]
        local = LocalFeatures(len(masks), partial(self._encode_local, xn, masks, boxes))
        if self.local_top is None and not self.local_bound:
            local.ensure(np.arange(len(masks)), timings)
        return Scene(rgb.shape[:2], masks, boxes, fg, local, timings, proposals)

    def _encode_local(self, xn: np.ndarray, masks: np.ndarray, boxes: np.ndarray,
                      indices: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        """f^L of the masks `indices`: their masked crops through one batched crop-encoder run."""
        s = self.settings
        if len(indices) < len(masks) or np.any(indices != np.arange(len(masks))):
            masks, boxes = masks[indices], boxes[indices]
        with _timed(timings, "crops"):
            crops = masked_crops(xn, masks, boxes, np.asarray(s.fill), s.image_size,
                                 self._crop_buffer(len(masks)))
        with _timed(timings, "crop_encoder"):
            return self.encode_crops(crops)

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """f^L of K masked crops (K×3×S×S, normalised): the plain CLIP image embedding, as the
        trunk on the crops, then the masked head with one all-ones grid per crop (a weight of 1
        changes no token); a ResNet pack's own crop head instead (§7: L2-normalised). A head that
        takes one image's tokens only (packs exported before the pack held one tower) runs once
        per crop."""
        g = self.settings.grid
        tokens = self.backend.run_batched("clip_trunk", {"image": crops}, ("image",),
                                          release=True)[0]
        if self.settings.family == "resnet":
            return self.backend.run_batched(self.settings.crop_head, {"tokens": tokens},
                                            ("tokens",), release=True)[0]
        inputs = {"tokens": tokens, "grid_masks": np.ones((len(crops), g, g), dtype=np.float32)}
        batched = ("tokens", "grid_masks")
        if self.pack.batched_head:
            return self.backend.run_batched("clip_masked_head", inputs, batched,
                                            release=True)[0]
        return run_in_chunks(partial(self.backend.run, "clip_masked_head"), inputs, batched, 1,
                             release=True)[0]

    def _crop_buffer(self, k: int) -> np.ndarray | None:
        """This thread's reused K×3×S×S crop buffer; None (allocate) above CROP_BUFFER_MASKS."""
        if k > CROP_BUFFER_MASKS:
            return None
        buffer = getattr(self._crop_buffers, "array", None)
        if buffer is None or len(buffer) < k:
            size = self.settings.image_size
            buffer = self._crop_buffers.array = np.empty((k, 3, size, size), dtype=np.float32)
        return buffer[:k]

    def encode_text(self, text: str) -> tuple[Phrases, np.ndarray, np.ndarray, bool]:
        """(phrases, CLIP(s'), CLIP(NP), truncated), cached by expression. Thread-safe: one
        expression at a time is parsed and encoded (spaCy's pipeline is not made for threads)."""
        with self._text_lock:
            return self._encode_text(text)

    def check_text(self, text: str) -> None:
        """Raise TextError for an expression that cannot be scored (empty, unparsable), before
        an image is paid for; thread-safe."""
        with self._text_lock:
            self.parser.parse(text)

    def _encode_text(self, text: str) -> tuple[Phrases, np.ndarray, np.ndarray, bool]:
        cached = self._text_cache.get(text)
        if cached is not None:
            self._text_cache.move_to_end(text)
            return cached
        phrases = self.parser.parse(text)
        unique = list(dict.fromkeys([phrases.sentence, phrases.noun_phrase]))
        batch = self.tokenizer.encode(unique)
        # Causal attention: nothing after the last end token can change the pooled features.
        length = int(batch.end_index.max()) + 1
        inputs = {"ids": np.ascontiguousarray(batch.ids[:, :length]), "end_index": batch.end_index}
        features = self.backend.run("clip_text", inputs)[0]
        entry = (phrases, features[0], features[-1], any(batch.truncated))
        self._text_cache[text] = entry
        if len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return entry

    def query(self, scene: Scene, text: str, alpha: float | None = None,
              beta: float | None = None, local_top: int | None | EllipsisType = ...,
              local_bound: bool | None = None) -> Result:
        """Score the masks of `scene` against `text` (SPEC §4–6): all of them, or as
        `local_top`/`local_bound` prune (default: the segmenter's; `local_top=None` scores all).
        f^L rows encoded here are timed in this result and kept in the scene for later queries."""
        alpha = _weight("alpha", alpha, self.alpha)
        beta = _weight("beta", beta, self.beta)
        top = self.local_top if local_top is ... else validate_local_top(local_top)
        bound = self.local_bound if local_bound is None else \
            validate_local_bound(local_bound, self.settings.local_norm_bound)
        timings = dict(scene.timings)
        with _timed(timings, "text"):
            phrases, t_sentence, t_phrase, truncated = self.encode_text(text)
        # The crop stages this query runs are timed on their own, not inside "score".
        start, before = time.perf_counter(), {k: timings.get(k, 0.0) for k in LOCAL_STAGES}
        choice = choose(scene.global_features, scene.local, t_sentence, t_phrase, alpha, beta,
                        top, self.settings.local_norm_bound if bound else None, timings,
                        self.settings.score)
        local_ms = sum(timings.get(k, 0.0) - v for k, v in before.items())
        timings["score"] = timings.get("score", 0.0) + \
            (time.perf_counter() - start) * 1e3 - local_ms
        result = Result(text=text, sentence=phrases.sentence, noun_phrase=phrases.noun_phrase,
                        scores=choice.scores, index=choice.index, masks=scene.masks,
                        boxes=scene.boxes, alpha=alpha, beta=beta, truncated=truncated,
                        timings=timings, local_computed=choice.local_computed)
        return self._spatial(scene, result, alpha, beta) if self.spatial else result

    def _spatial(self, scene: Scene, result: Result, alpha: float, beta: float) -> Result:
        """The paper's result, its choice moved by the expression's spatial words if it has any
        (runtime/spatial/resolve.py); `result.spatial` says what was found and what changed."""
        from .spatial import parse_spatial
        from .spatial.choice import Geometry
        from .spatial.resolve import resolve

        start = time.perf_counter()
        with self._text_lock:
            parse = parse_spatial(result.text, self.parser.nlp)
        if not parse.spatial or not parse.target.strip():
            return result
        scene.local.ensure(np.arange(scene.num_masks), result.timings)  # every f^L row

        def score(phrase: str) -> np.ndarray:
            _, t_sentence, t_phrase, _ = self.encode_text(phrase)
            return fuse_and_score(scene.global_features, scene.local_features, t_sentence,
                                  t_phrase, alpha, beta, self.settings.score)

        choice = resolve(parse, score, Geometry.measured(scene.mask_geometries,
                                                         scene.image_size))
        timings = dict(result.timings)
        timings["spatial"] = (time.perf_counter() - start) * 1e3
        return replace(result, index=choice.index, timings=timings,
                       spatial=choice.describe(result.index))

    def segment(self, image: np.ndarray | str | os.PathLike[str], text: str,
                masks: np.ndarray | None = None, proposer_mode: str | ProposerMode | None = None,
                **overrides: object) -> Result:
        """One image, one expression: `query(encode_image(image, masks, ...), text)`."""
        self.check_text(text)  # reject a bad expression before paying for the image
        return self.query(self.encode_image(image, masks, proposer_mode, **overrides), text)
