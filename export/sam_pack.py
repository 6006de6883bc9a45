"""`zsris-export sam`: a SAM / SAM 2 checkpoint → the proposer graphs of an existing pack."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zsris_rt.errors import ZsrisError
from zsris_rt.pack import PROPOSER_GRAPHS, load_pack, write_manifest
from zsris_rt.progress import progress_printer

from .provenance import EXPORTER, checkpoint_digest


@dataclass(frozen=True)
class SamExportConfig:
    """Everything `export_sam_into_pack` needs."""

    checkpoint: Path  # segment-anything .pth, or a Hugging Face SamModel / Sam2Model folder
    pack: Path  # the pack to add the proposer to
    format: str = "auto"  # choices.SAM_FORMATS
    force: bool = False  # replace the pack's proposer


def export_sam_into_pack(config: SamExportConfig) -> Path:
    """Add (or with --force replace) the proposer graphs of an existing pack.

    The CLIP part of the pack is verified first and left untouched; the new graphs are exported
    and checked in a hidden staging folder inside the pack, moved in, and the manifest is
    rewritten last, so an interrupted export leaves the old pack working.
    """
    import torch

    from .onnx_graph import OPSET
    from .onnx_sam import export_proposer_graphs, proposer_settings
    from .sam_checkpoints import load_proposer

    say = progress_printer()
    root = Path(config.pack)
    pack = load_pack(root, verify=True)
    manifest = pack.manifest
    if manifest.proposer is not None and not config.force:
        raise ZsrisError(f"pack {root} already has a {manifest.proposer.family} proposer "
                         "(use --force to replace it)")
    say(f"load   {config.checkpoint}")
    loaded = load_proposer(config.checkpoint, config.format)
    settings = proposer_settings(loaded.model)
    say(f"model  {loaded.fmt} {loaded.family.upper()} {loaded.geometry}: input "
        f"{settings.input_size}px ({settings.resize}), low-res masks {settings.low_res_size}px")
    staging = Path(tempfile.mkdtemp(prefix=".proposer.partial-", dir=root))
    try:
        graphs = export_proposer_graphs(loaded.model, staging, progress=say)
        old = {f for name in PROPOSER_GRAPHS
               for f in manifest.graphs.get(name, {}).get("files", [f"{name}.onnx"])}
        new = [f for g in graphs.values() for f in g["files"]]
        for name in new:
            os.replace(staging / name, root / name)
        for name in old - set(new):
            (root / name).unlink(missing_ok=True)
            manifest.files.pop(name, None)
        manifest.proposer = settings
        manifest.graphs.update(graphs)
        manifest.files.update({name: "" for name in new})
        manifest.provenance["proposer"] = {
            "checkpoint": Path(config.checkpoint).name,
            "checkpoint_sha256": checkpoint_digest(Path(config.checkpoint)),
            "checkpoint_format": loaded.fmt,
            "geometry": loaded.geometry,
            "exporter": EXPORTER,
            "torch": torch.__version__,
            "opset": OPSET,
        }
        say("write  manifest.json (sha256 of every file)")
        write_manifest(root, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"done   {root}")
    return root
