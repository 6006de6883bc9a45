"""Fast modes to bench beside exact fp32 (`--modes exact,int8,top4,int8+top8,bound`): int8
graphs, global-first pruning to the top M masks, the exact bound-pruned variant, or a mix."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from .stats import Json


@dataclass(frozen=True)
class Mode:
    name: str
    precision: str = "fp32"
    local_top: int | None = None
    local_bound: bool = False

    def options(self) -> Json:
        """The `Segmenter.from_pack` keywords of this mode."""
        return {"precision": self.precision, "local_top": self.local_top,
                "local_bound": self.local_bound}

    def local_crops(self, k: int) -> int | None:
        """Crops encoded at K masks; None when it depends on the scores (the bound)."""
        if self.local_bound:
            return None
        return k if self.local_top is None else min(self.local_top, k)


def parse_mode(text: str) -> Mode:
    """"exact", or "+"-joined parts: "int8", "topM" (M ≥ 1), "bound" (rounds of M, default 4)."""
    name = text.strip()
    if name == "exact":
        return Mode(name)
    precision, top, bound = "fp32", None, False
    for part in name.split("+"):
        if part == "int8":
            precision = "int8"
        elif part == "bound":
            bound = True
        elif part.startswith("top") and part[3:].isdigit() and int(part[3:]) >= 1:
            top = int(part[3:])
        else:
            raise argparse.ArgumentTypeError(
                f"unknown mode part {part!r} in {name!r} (exact, or int8 / topM / bound joined "
                "with +)")
    return Mode(name, precision, top, bound)


def mode_list(text: str) -> list[Mode]:
    """"exact,int8,top4" → modes, exact always first (the others are compared with it)."""
    modes = [parse_mode(v) for v in text.split(",") if v.strip()]
    names = list(dict.fromkeys(m.name for m in modes))
    if len(names) != len(modes):
        raise argparse.ArgumentTypeError(f"a mode is named twice in {text!r}")
    return [Mode("exact")] + [m for m in modes if m.name != "exact"]
