"""`zsris-export clip`: a CLIP checkpoint (ViT or ResNet) → a pack's CLIP graphs, tokenizer and
manifest."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zsris_rt.errors import ZsrisError
from zsris_rt.pack import ClipSettings, Manifest, write_manifest
from zsris_rt.progress import progress_printer
from zsris_rt.text import DEFAULT_SPACY_MODEL

from .checkpoints import load_clip
from .clip_model import ClipModel
from .local_bound import local_norm_bound
from .provenance import EXPORTER, checkpoint_digest

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class ClipExportConfig:
    """Everything `export_clip_pack` needs; the CLI's options map onto it one to one."""

    checkpoint: Path  # OpenAI .pt, Hugging Face CLIPModel folder, or open_clip state dict
    out: Path  # pack folder to write
    format: str = "auto"  # choices.CLIP_FORMATS
    activation: str | None = None  # quick_gelu / gelu; None: the format's default
    vision_heads: int | None = None  # state dicts only; None: width / 64
    text_heads: int | None = None
    masked_blocks: int = 3  # k: the last k ViT blocks see the mask
    alpha: float = 0.95
    beta: float = 0.5
    spacy_model: str = DEFAULT_SPACY_MODEL
    tokenizer: Path | None = None  # the model's own tokenizer.json; None: OpenAI's, built offline
    force: bool = False  # replace an existing pack folder


def pack_tokenizer(path: Path | None, vocab_size: int) -> Tokenizer:
    """OpenAI's CLIP BPE, built offline; or the given `tokenizer.json` of a model trained with a
    cut-down CLIP vocabulary (compact_vocab.py), checked against the token embedding."""
    from tokenizers import Tokenizer

    from .tokenizer_build import END, START, build_clip_tokenizer

    if path is None:
        if vocab_size != 49408:
            raise ZsrisError(f"text vocabulary has {vocab_size} entries; the CLIP BPE tokenizer "
                             "has 49408 (pass the model's own with --tokenizer)")
        return build_clip_tokenizer()
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for every failure
        raise ZsrisError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from None
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != vocab_size:
        raise ZsrisError(f"tokenizer {path} has {size} tokens; the model's token embedding has "
                         f"{vocab_size}")
    for special in (START, END):
        if tokenizer.token_to_id(special) is None:
            raise ZsrisError(f"tokenizer {path} has no {special} token: not a CLIP BPE tokenizer")
    return tokenizer


def settings_for(model: ClipModel, config: ClipExportConfig, tokenizer: Tokenizer) -> ClipSettings:
    from .tokenizer_build import END, START

    cfg = model.config
    resnet = cfg.family == "resnet"
    return ClipSettings(
        start_token=tokenizer.token_to_id(START), end_token=tokenizer.token_to_id(END),
        image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.vision_width,
        layers=cfg.vision_layers, heads=cfg.vision_heads, embed_dim=cfg.embed_dim,
        context_length=cfg.context_length, vocab_size=cfg.vocab_size,
        masked_blocks=0 if resnet else config.masked_blocks, alpha=config.alpha,
        beta=config.beta, spacy_model=config.spacy_model, family=cfg.family,
        score="dot" if resnet else "cosine",
    )


def _local_norm_bound(model: ClipModel, folder: Path) -> float:
    """R ≥ ‖f^L‖: derived from the ViT tower's last LayerNorm and projection; 1 for a ResNet,
    whose crop head outputs unit vectors (§7)."""
    return 1.0 if model.config.family == "resnet" else local_norm_bound(folder)


def export_clip_pack(config: ClipExportConfig) -> Path:
    """Export into a staging folder beside `config.out`, check every graph against PyTorch,
    write the manifest, then move the pack into place: an interrupted export leaves nothing."""
    import torch

    from .onnx_clip import export_clip_graphs
    from .onnx_graph import OPSET

    say = progress_printer()
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.force:
        raise ZsrisError(f"{out} exists and is not empty (use --force to replace it)")
    say(f"load   {config.checkpoint}")
    loaded = load_clip(config.checkpoint, config.format, config.activation,
                       (config.vision_heads, config.text_heads))
    model = loaded.model
    cfg = model.config
    if cfg.family == "resnet":
        stages = "-".join(map(str, cfg.vision_stages))
        say(f"model  {loaded.source_format} CLIP ResNet: stages {stages}, width "
            f"{cfg.vision_width}, {cfg.vision_heads}-head attention pool at {cfg.image_size}px, "
            f"embed {cfg.embed_dim}, {cfg.activation}")
    else:
        say(f"model  {loaded.source_format} CLIP ViT: {cfg.vision_layers} layers × "
            f"{cfg.vision_width}, patch {cfg.patch_size} at {cfg.image_size}px, embed "
            f"{cfg.embed_dim}, {cfg.activation}")
    tokenizer = pack_tokenizer(config.tokenizer, cfg.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        graphs = export_clip_graphs(model, staging, config.masked_blocks, progress=say)
        say(f"write  tokenizer.json (CLIP BPE, {cfg.vocab_size} tokens"
            f"{', built offline' if config.tokenizer is None else ''})")
        tokenizer.save(str(staging / "tokenizer.json"))
        manifest = Manifest(
            clip=dataclasses.replace(settings_for(model, config, tokenizer),
                                     local_norm_bound=_local_norm_bound(model, staging)),
            files={f: "" for g in graphs.values() for f in g["files"]} | {"tokenizer.json": ""},
            graphs=graphs,
            provenance={
                "checkpoint": str(Path(config.checkpoint).name),
                "checkpoint_sha256": checkpoint_digest(Path(config.checkpoint)),
                "checkpoint_format": loaded.source_format,
                "activation": cfg.activation,
                "exporter": EXPORTER,
                "torch": torch.__version__,
                "opset": OPSET,
            },
        )
        say("write  manifest.json (sha256 of every file)")
        write_manifest(staging, manifest)
        staging.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    say(f"done   {out}")
    return out
