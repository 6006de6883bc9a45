"""Model packs: a folder of ONNX graphs plus `manifest.json`, checked on load.

The manifest is the single source of the constants a backend needs (normalisation, fill, α, β,
geometry), so a pack exported with another recipe runs without code changes. Every file is named
with its sha256: a pack whose bytes differ from what the exporter wrote is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic_files import write_files_atomically
from .errors import PackError
from .text import DEFAULT_SPACY_MODEL

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# Graph names of DESIGN.md §3; the file of each is `<name>.onnx`. `prop_decoder_image` (the
# decoder's per-image half) is absent from packs exported before the decoder was split; their
# `prop_decoder` takes the encoder's outputs directly, and they still run.
CLIP_GRAPHS = ("clip_trunk", "clip_masked_head", "clip_text")
# The image tower a second time (crops → f^L), in packs exported before the crop encoder became
# the trunk then the masked head with all-ones grids. Such packs still load (their files are
# verified like any other) and run; the runtime never loads it, and `zsris-export migrate PACK`
# removes it (export/pack_migration.py).
DUPLICATE_TOWER = "clip_image"
PROPOSER_GRAPHS = ("prop_encoder", "prop_decoder_image", "prop_decoder")
REQUIRED_PROPOSER_GRAPHS = ("prop_encoder", "prop_decoder")


def crop_head(family: str) -> str:
    """The graph after the trunk in the crop encoder: the masked head with all-ones grids (ViT),
    or a ResNet's own crop head, whose local branch pools the unnormalised map (§7)."""
    return "clip_crop_head" if family == "resnet" else "clip_masked_head"


@dataclass(frozen=True)
class ClipSettings:
    """Geometry and the Global-Local constants of SPEC.md, as the exporter recorded them."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    embed_dim: int
    context_length: int
    vocab_size: int
    masked_blocks: int = 3
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    fill: tuple[float, float, float] = (0.485, 0.456, 0.406)
    alpha: float = 0.95
    beta: float = 0.5
    start_token: int = 49406
    end_token: int = 49407
    pad_token: int = 0
    spacy_model: str = DEFAULT_SPACY_MODEL
    # An upper bound on ‖f^L‖ for any input, derived from the image tower's last LayerNorm and
    # projection (export/local_bound.py); None when the exporter did not record one.
    local_norm_bound: float | None = None
    # The image tower's family: "vit" (SPEC §2–6) or "resnet" (§7: its patch_size is the layer-4
    # map's stride, 32; its graphs normalise f^L and the text features; masked_blocks is 0).
    family: str = "vit"
    score: str = "cosine"  # "cosine" (§6), or "dot" (§7): scoring.SCORE_RULES

    @property
    def crop_head(self) -> str:
        return crop_head(self.family)

    @property
    def clip_graphs(self) -> tuple[str, ...]:
        """The CLIP graphs a pack of this family holds."""
        return tuple(dict.fromkeys((*CLIP_GRAPHS, self.crop_head)))

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        return self.grid * self.grid + 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipSettings:
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        settings = cls(**values)
        if (settings.family, settings.score) not in (("vit", "cosine"), ("resnet", "dot")):
            raise ValueError(f"clip family {settings.family!r} with score rule "
                             f"{settings.score!r} is not one zsris-rt knows")
        return settings


@dataclass(frozen=True)
class GeneratorDefaults:
    """segment-anything's automatic mask generator defaults; each is a `propose()` keyword."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    max_masks: int | None = None
    # zsris-rt's own, after box NMS: drop a mask whose mask IoU with a better one exceeds this.
    # None (off) is segment-anything's behaviour; fewer near-duplicates means fewer CLIP crops.
    mask_nms_thresh: float | None = None


@dataclass(frozen=True)
class ProposerSettings:
    """How the proposer's graphs expect their input, as the exporter recorded it.

    SAM scales the longest side to `input_size` and pads bottom-right ("longest"); SAM 2 squashes
    the image to `input_size`² ("square"). `mean`/`std` apply to pixels scaled to [0, 1].
    """

    family: str  # "sam" or "sam2"
    input_size: int
    low_res_size: int
    resize: str  # "longest" or "square"
    resize_filter: str  # "bicubic" or "bilinear", antialiased
    embeddings: tuple[str, ...]  # encoder outputs
    # Outputs of `prop_decoder_image` (the decoder's per-image half), passed by name to
    # `prop_decoder`; empty for a one-graph decoder, which takes `embeddings` itself.
    decoder_state: tuple[str, ...] = ()
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mask_threshold: float = 0.0
    generator: GeneratorDefaults = field(default_factory=GeneratorDefaults)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProposerSettings:
        known = {f for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        values["generator"] = GeneratorDefaults(**data.get("generator", {}))
        return cls(**values)


@dataclass
class Manifest:
    """What `manifest.json` holds; `files` maps each file name to its sha256."""

    clip: ClipSettings
    proposer: ProposerSettings | None = None
    files: dict[str, str] = field(default_factory=dict)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["clip"]["grid"] = self.clip.grid
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("schema_version") != SCHEMA_VERSION:
            raise PackError(f"manifest schema {data.get('schema_version')!r} is not the "
                            f"supported {SCHEMA_VERSION}")
        return cls(
            clip=ClipSettings.from_dict(data["clip"]),
            proposer=(ProposerSettings.from_dict(data["proposer"]) if data.get("proposer")
                      else None),
            files=dict(data["files"]),
            graphs=dict(data.get("graphs", {})),
            provenance=dict(data.get("provenance", {})),
            precision=data.get("precision", "fp32"),
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Pack:
    """A verified pack on disk."""

    root: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        return self.root / name

    def graph_path(self, graph: str, precision: str = "fp32") -> Path:
        """The file of `graph` at `precision`: its variant when the pack has one (see
        `zsris-export quantize`), else the fp32 graph."""
        variant = self.manifest.graphs.get(graph, {}).get("variants", {}).get(precision)
        return self.root / (variant["file"] if variant else f"{graph}.onnx")

    @property
    def graph_names(self) -> tuple[str, ...]:
        """The graphs this pack runs: CLIP's three, and the proposer's when it has one (never an
        older pack's `clip_image`, see DUPLICATE_TOWER)."""
        clip = self.clip.clip_graphs
        if self.proposer is None:
            return clip
        return clip + tuple(g for g in PROPOSER_GRAPHS if g in self.manifest.graphs or
                            g in REQUIRED_PROPOSER_GRAPHS)

    def graph_precision(self, graph: str, precision: str) -> str:
        """The precision `graph_path(graph, precision)` really runs at."""
        variants = self.manifest.graphs.get(graph, {}).get("variants", {})
        return precision if precision in variants else "fp32"

    def precisions(self) -> list[str]:
        """fp32 and every precision some graph the pack runs has a variant for."""
        found = {p for name in self.graph_names
                 for p in self.manifest.graphs.get(name, {}).get("variants", {})}
        return ["fp32", *sorted(found - {"fp32"})]

    @property
    def batched_head(self) -> bool:
        """Whether `clip_masked_head` takes tokens of any batch (one image's, broadcast over the
        masks, or one per crop). Heads exported before the pack held one tower take one image's
        tokens only: the crop encoder then runs the head once per crop (`zsris-export migrate`
        widens them)."""
        return head_tokens_batched(self.manifest)

    def duplicate_tower_files(self) -> list[str]:
        """The files of an older pack's second image tower (see DUPLICATE_TOWER), fp32 and every
        variant; empty for a pack that holds the tower once."""
        return duplicate_tower_files(self.manifest)

    @property
    def clip(self) -> ClipSettings:
        return self.manifest.clip

    @property
    def proposer(self) -> ProposerSettings | None:
        return self.manifest.proposer


def head_tokens_batched(manifest: Manifest) -> bool:
    """True when the manifest declares a symbolic leading axis on the head's `tokens`."""
    inputs = manifest.graphs.get("clip_masked_head", {}).get("inputs", [])
    shape = next((spec["shape"] for spec in inputs if spec.get("name") == "tokens"), None)
    return shape is not None and len(shape) > 0 and isinstance(shape[0], str)


def duplicate_tower_files(manifest: Manifest) -> list[str]:
    """The files the manifest lists for DUPLICATE_TOWER: its graph's files (fp32 and variants),
    and `clip_image*.onnx` files it lists without a graph entry."""
    entry = manifest.graphs.get(DUPLICATE_TOWER, {})
    names = list(entry.get("files", [entry.get("file", f"{DUPLICATE_TOWER}.onnx")])) \
        if entry else []
    for variant in entry.get("variants", {}).values():
        names += variant.get("files", [variant["file"]] if "file" in variant else [])
    names += [name for name in manifest.files
              if name.startswith(f"{DUPLICATE_TOWER}.") and name.endswith(".onnx")]
    return [name for name in dict.fromkeys(names) if name in manifest.files]


def load_pack(root: str | os.PathLike[str], verify: bool = True) -> Pack:
    """Read a pack's manifest; with `verify`, check every file's presence and sha256."""
    root = Path(root)
    if not root.is_dir():
        raise PackError(f"pack {root}: not a folder")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise PackError(f"pack {root}: no {MANIFEST}")
    try:
        manifest = Manifest.from_json(manifest_path.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise PackError(f"pack {root}: unreadable {MANIFEST} ({exc})") from None
    needed = [f"{g}.onnx" for g in manifest.clip.clip_graphs] + ["tokenizer.json"]
    if manifest.proposer is not None:
        needed += [f"{g}.onnx" for g in REQUIRED_PROPOSER_GRAPHS]
        if manifest.proposer.decoder_state:
            needed.append("prop_decoder_image.onnx")
    for name in needed:
        if name not in manifest.files:
            raise PackError(f"pack {root}: {MANIFEST} does not list {name}")
    for name, expected in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise PackError(f"pack {root}: missing file {name}")
        if verify and sha256_file(path) != expected:
            raise PackError(
                f"pack {root}: {name} does not match its sha256 in {MANIFEST} (altered or corrupt)"
            )
    return Pack(root=root, manifest=manifest)


DEMO_PACK = Path(__file__).resolve().parent.parent / "engines" / "demo"


def default_pack() -> Path:
    """The pack a command without --pack uses: $ZSRIS_PACK, else the demo pack of this checkout
    (an editable install), else ./engines/demo."""
    if os.environ.get("ZSRIS_PACK"):
        return Path(os.environ["ZSRIS_PACK"])
    for candidate in (DEMO_PACK, Path.cwd() / "engines" / "demo"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise PackError(f"no --pack given and no demo pack at {DEMO_PACK} or ./engines/demo: pass "
                    "--pack PACK or set ZSRIS_PACK")


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Hash every file the manifest lists and write the manifest last, atomically."""
    for name in list(manifest.files):
        manifest.files[name] = sha256_file(root / name)
    write_files_atomically({root / MANIFEST: manifest.to_json().encode("utf-8")})
