"""`zsris-export migrate PACK`: make a pack exported while packs held the CLIP image tower twice
hold it once, in place, without torch (`drop_duplicate_tower`).

Such a pack has `clip_image` (crops → f^L, the whole tower again, with its int8 variant when it
was quantised) beside `clip_trunk` + `clip_masked_head`, and a head that takes one image's tokens
only. The runtime computes f^L as the trunk on the crops, then the head with one all-ones grid per
crop (export/onnx_clip.py), so the migration
1. widens the head's `tokens` input (fp32 and every variant) to a symbolic batch: the same nodes
   and weights, only the declared shape changes, so the crop encoder runs as one head call (the
   trunk's batch was always symbolic; it is widened too where it is not);
2. checks, in ONNX Runtime and before changing anything, that the crop encoder it leaves equals
   the tower it removes on random images (relative difference ≤ `TOLERANCE`, as at export), and
   that each widened head gives the old one's output on one image's tokens;
3. rewrites the manifest (last, atomically, `zsris_rt.pack.write_manifest`) without `clip_image`,
   and only then deletes its files.
A widened file replaces its old one under a backup name that is restored on any failure before
the manifest is written. A pack that already holds the tower once is left untouched, so running
the migration twice is harmless. A pack that fails verification is refused, naming the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zsris_rt import __version__
from zsris_rt.errors import ZsrisError
from zsris_rt.pack import DUPLICATE_TOWER, Manifest, Pack, load_pack, write_manifest

TOLERANCE = 1e-4  # as export/onnx_graph.check_graph
CHECK_IMAGES = 3
# The input, and the output when it follows, whose leading axis the crop encoder batches.
BATCHED = {"clip_trunk": ("image", "tokens", "batch"), "clip_masked_head": ("tokens", None,
                                                                           "batch")}


def _graph_files(pack: Pack, graph: str) -> list[str]:
    """The ONNX file of `graph` and of each of its variants (their weights files excepted)."""
    variants = pack.manifest.graphs.get(graph, {}).get("variants", {})
    return [f"{graph}.onnx", *(v["file"] for v in variants.values())]


def _leading_fixed(manifest: Manifest, graph: str, name: str) -> bool:
    specs = manifest.graphs.get(graph, {}).get("inputs", [])
    shape = next((s["shape"] for s in specs if s["name"] == name), None)
    return bool(shape) and isinstance(shape[0], int)


def widen_leading_axis(src: Path, dst: Path, names: tuple[str, ...], axis: str) -> None:
    """Write `src` to `dst` with the leading axis of the inputs/outputs `names` made the symbolic
    `axis`. Nodes and weights are untouched; the shapes inference recorded for inner tensors
    (value_info, optional hints that would now be wrong) are dropped. External weights stay
    where they are (`dst` lies in the same folder)."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in names:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].dim_param:
                dims[0].dim_param = axis  # the oneof clears dim_value
    del model.graph.value_info[:]
    onnx.save(model, str(dst))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max()) / max(float(np.abs(expected).max()), 1e-6)


def check_crop_encoder(pack: Pack, trunk: Path, heads: dict[str, Path],
                       seed: int = 0) -> dict[str, float]:
    """Relative differences of the pack as migrated (files `trunk` and `heads`, by file name in
    the pack) against the pack as it is, on random images; raise above TOLERANCE.

    "crop_encoder": the trunk on a batch of images, then the fp32 head with all-ones grids,
    against the tower being dropped (or, in a pack without one, the old head image by image).
    Per head file: its widened self against its old self on one image's tokens under the mask
    grids of the global path (random soft grids), and it must run on a batch of tokens."""
    s = pack.clip
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((CHECK_IMAGES, 3, s.image_size, s.image_size), np.float32)
    ones = np.ones((CHECK_IMAGES, s.grid, s.grid), np.float32)
    grids = rng.random((CHECK_IMAGES, s.grid, s.grid), np.float32)
    tokens = _session(trunk).run(None, {"image": images})[0]
    new_head = _session(heads["clip_masked_head.onnx"])
    got = new_head.run(None, {"tokens": tokens, "grid_masks": ones})[0]
    if DUPLICATE_TOWER in pack.manifest.graphs:
        expected = _session(pack.path(f"{DUPLICATE_TOWER}.onnx")).run(None, {"images": images})[0]
        reference = DUPLICATE_TOWER
    else:
        old = _session(pack.path("clip_masked_head.onnx"))
        expected = np.concatenate([old.run(None, {"tokens": tokens[i:i + 1],
                                                  "grid_masks": ones[i:i + 1]})[0]
                                   for i in range(CHECK_IMAGES)])
        reference = "the head image by image"
    report = {"crop_encoder": _relative(got, expected)}
    if not report["crop_encoder"] <= TOLERANCE:
        raise ZsrisError(f"pack {pack.root}: the crop encoder (clip_trunk + clip_masked_head with "
                         f"all-ones grids) disagrees with {reference} (max relative difference "
                         f"{report['crop_encoder']:.2e} > {TOLERANCE:.0e}); the pack is left as "
                         "it was: re-export it")
    for name, path in heads.items():
        new = new_head if name == "clip_masked_head.onnx" else _session(path)
        first = {"tokens": tokens[:1], "grid_masks": grids}
        diff = _relative(new.run(None, first)[0],
                         _session(pack.path(name)).run(None, first)[0])
        batch = new.run(None, {"tokens": tokens, "grid_masks": ones})[0]
        if not (diff <= TOLERANCE and batch.shape[0] == CHECK_IMAGES and
                np.isfinite(batch).all()):
            raise ZsrisError(f"pack {pack.root}: {name} with a batch of tokens does not "
                             f"give what it gave before (max relative difference {diff:.2e}); "
                             "the pack is left as it was: re-export it")
        report[name] = diff
    return report


def drop_duplicate_tower(root: str | os.PathLike[str],
                         say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Make the pack at `root` hold the CLIP image tower once (module docstring): returns the
    files removed (empty when the pack already held it once: nothing is changed then). A pack
    that is missing, altered or unreadable is a PackError; a failed check a ZsrisError; either
    leaves the pack as it was."""
    root = Path(root)
    pack = load_pack(root, verify=True)
    manifest = pack.manifest
    duplicate = pack.duplicate_tower_files()
    widen = {graph: spec for graph, spec in BATCHED.items()
             if _leading_fixed(manifest, graph, spec[0])}
    if not duplicate and not widen:
        say(f"pack {root} holds the image tower once already: nothing to do")
        return []
    temps: dict[str, Path] = {}  # pack file name → its widened copy
    backups: list[tuple[Path, Path]] = []
    try:
        for graph, (name, output, axis) in widen.items():
            for file in _graph_files(pack, graph):
                fd, temp = tempfile.mkstemp(prefix=f".{file}.widened-", suffix=".partial",
                                            dir=root)
                os.close(fd)
                temps[file] = Path(temp)
                temps[file].chmod(pack.path(file).stat().st_mode & 0o777)
                widen_leading_axis(pack.path(file), temps[file],
                                   (name,) if output is None else (name, output), axis)
                say(f"widen  {file}: {name} takes a batch ({axis})")
        heads = {f: temps.get(f, pack.path(f)) for f in _graph_files(pack, "clip_masked_head")}
        trunk = temps.get("clip_trunk.onnx", pack.path("clip_trunk.onnx"))
        report = check_crop_encoder(pack, trunk, heads)
        say(f"check  crop encoder (clip_trunk + clip_masked_head, all-ones grids) vs "
            f"{DUPLICATE_TOWER if duplicate else 'the head image by image'}: max relative "
            f"difference {report['crop_encoder']:.1e}")
        for graph, (name, output, axis) in widen.items():
            entry = manifest.graphs[graph]
            for spec in entry.get("inputs", []) + entry.get("outputs", []):
                if spec["name"] in (name, output) and isinstance(spec["shape"][0], int):
                    spec["shape"][0] = axis
        head = manifest.graphs["clip_masked_head"]
        head["crop_encoder_parity_max_rel_diff"] = report["crop_encoder"]
        manifest.graphs.pop(DUPLICATE_TOWER, None)
        for file in duplicate:
            manifest.files.pop(file)
        manifest.provenance.setdefault("migrations", []).append({
            "migration": "one image tower", "by": f"zsris-rt {__version__}",
            "removed": duplicate, "widened": sorted(temps),
            "crop_encoder_max_rel_diff": report["crop_encoder"]})
        for file, temp in temps.items():
            fd, backup = tempfile.mkstemp(prefix=f".{file}.old-", dir=root)
            os.close(fd)
            os.replace(pack.path(file), backup)
            backups.append((Path(backup), pack.path(file)))
            os.replace(temp, pack.path(file))
        write_manifest(root, manifest)
    except BaseException:
        for backup, final in reversed(backups):
            os.replace(backup, final)
        raise
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    for backup, _ in backups:
        backup.unlink(missing_ok=True)
    for file in duplicate:
        (root / file).unlink(missing_ok=True)
    say(f"done   {root}: removed {', '.join(duplicate) or 'nothing'}"
        + (f"; widened {', '.join(sorted(temps))}" if temps else ""))
    return duplicate


__all__ = ["check_crop_encoder", "drop_duplicate_tower", "widen_leading_axis"]
