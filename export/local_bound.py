"""R, an upper bound on ‖f^L‖ over every input of the image tower, for the exact pruning of the
local branch (runtime/local_pruning.py; the pack's `clip.local_norm_bound`).

The tower ends f = Pᵀ(γ ⊙ z + β), z the LayerNorm's normalised input: zero-mean, with
‖z‖² = D·var/(var + ε) < D (D the width). So f = M z + c with M = Pᵀ diag(γ) C (C the centring
projector) and c = Pᵀβ, and R = max ‖M z + c‖ over ‖z‖ ≤ √D. The triangle inequality gives
R ≤ σ_max(M)·√D + ‖c‖ (`triangle_bound`); `local_norm_bound` gives the maximum itself: it is a
trust-region problem, whose Lagrange dual
    φ(λ) = λ r² + ‖c‖² + Σᵢ gᵢ² sᵢ² / (λ − sᵢ²),   λ > s₁²   (M = U S Vᵀ, g = Uᵀc, r = √D)
is an upper bound on max ‖Mz + c‖² for *every* such λ (weak duality: no root-finding error can
make it unsafe), and equals it at the minimising λ (strong duality holds for this problem). The
maximum is attained by some z, so no bound that sees only the last LayerNorm and projection can be
smaller. Nothing before the LayerNorm is used: any z of that norm is taken as reachable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from zsris_rt.errors import ZsrisError

BISECTION_STEPS = 200


@dataclass(frozen=True)
class TowerHead:
    """The image tower's last LayerNorm (γ, β over width D) and projection P (D×E)."""

    gamma: np.ndarray
    beta: np.ndarray
    projection: np.ndarray

    @property
    def width(self) -> int:
        return len(self.gamma)

    def linear_part(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, c): f = M z + c for the LayerNorm's normalised (zero-mean) z, in float64."""
        gamma = self.gamma.astype(np.float64)
        centred = np.eye(self.width) - 1.0 / self.width  # C
        m = self.projection.astype(np.float64).T @ (gamma[:, None] * centred)
        return m, self.projection.astype(np.float64).T @ self.beta.astype(np.float64)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers, Constant outputs, and Identity copies of either (the exporter shares equal
    weights, e.g. a LayerNorm's all-ones γ, through Identity nodes)."""
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:  # topological order: an Identity's source is already known
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    return constants


def read_tower_head(onnx_path: str | os.PathLike[str]) -> TowerHead:
    """The last LayerNormalization of the graph and the MatMul by a constant that makes the
    graph's output from it; a ZsrisError when the graph does not end that way."""
    model = onnx.load(os.fspath(onnx_path))
    graph = model.graph
    constants = _constants(graph)
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    if not norms:
        raise ZsrisError(f"{onnx_path}: no LayerNormalization node")
    norm = norms[-1]
    axis = next((onnx.helper.get_attribute_value(a) for a in norm.attribute if a.name == "axis"),
                -1)
    users = [n for n in graph.node if norm.output[0] in n.input]
    outputs = {o.name for o in graph.output}
    if (axis != -1 or len(norm.input) != 3 or len(users) != 1 or users[0].op_type != "MatMul"
            or users[0].input[0] != norm.output[0] or users[0].output[0] not in outputs
            or any(name not in constants for name in (*norm.input[1:], users[0].input[1]))):
        raise ZsrisError(f"{onnx_path} does not end in LayerNormalization(γ, β over the last "
                         "axis) → MatMul(P) → output: no norm bound can be read from it")
    gamma, beta = constants[norm.input[1]], constants[norm.input[2]]
    projection = constants[users[0].input[1]]
    if gamma.shape != beta.shape or projection.shape[:1] != gamma.shape or projection.ndim != 2:
        raise ZsrisError(f"{onnx_path}: LayerNorm of shape {gamma.shape} does not match the "
                         f"projection {projection.shape}")
    return TowerHead(gamma, beta, projection)


def triangle_bound(head: TowerHead) -> float:
    """σ_max(M)·√D + ‖c‖: simple and rigorous, looser than `norm_bound`."""
    m, c = head.linear_part()
    return float(np.linalg.norm(m, 2) * np.sqrt(head.width) + np.linalg.norm(c))


def norm_bound(head: TowerHead) -> float:
    """max ‖M z + c‖ over ‖z‖ ≤ √D, as the dual bound φ at its minimiser (module docstring)."""
    m, c = head.linear_part()
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    r2 = float(head.width)
    g2 = (u.T @ c) ** 2
    c2 = float(c @ c)
    if s[0] == 0.0 or c2 == 0.0:
        return float(s[0] * np.sqrt(r2) + np.sqrt(c2))
    gaps = s[0] ** 2 - s**2  # λ − sᵢ² = δ + gapᵢ, δ = λ − s₁² > 0, without cancellation

    def dual(delta: float) -> float:
        return (s[0] ** 2 + delta) * r2 + c2 + float(np.sum(g2 * s**2 / (delta + gaps)))

    def slope(delta: float) -> float:
        return r2 - float(np.sum(g2 * s**2 / (delta + gaps) ** 2))

    # φ is convex in δ; its slope is ≥ 0 at δ = s₁‖c‖/r (where φ ≤ the triangle bound²).
    lo, hi = np.log(s[0] * np.sqrt(c2 / r2)) - 80.0, np.log(s[0] * np.sqrt(c2 / r2))
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if slope(float(np.exp(mid))) > 0 else (mid, hi)
    return float(np.sqrt(min(dual(float(np.exp(hi))), dual(float(np.exp(lo))))))


# The graph that ends the image tower (its last LayerNorm and projection): f^L is the trunk then
# this head on the crops (export/onnx_clip.py).
TOWER_END = "clip_masked_head.onnx"
LEGACY_TOWER = "clip_image.onnx"  # the duplicate tower of older packs: it ends the same way


def tower_end(source: str | os.PathLike[str]) -> Path:
    """The ONNX file that ends the image tower: `source` itself when it is a graph file, else
    the `clip_masked_head.onnx` of `source` as a pack (or staging) folder. A `clip_image.onnx`
    that no longer exists (callers written when packs held the tower twice) resolves to the
    head beside it: both end in the same LayerNorm and projection."""
    path = Path(source)
    if path.is_dir():
        return path / TOWER_END
    if path.name == LEGACY_TOWER and not path.exists():
        return path.with_name(TOWER_END)
    return path


def local_norm_bound(source: str | os.PathLike[str]) -> float:
    """R ≥ ‖f^L‖ for every input of the image tower (fp32): the pack's `local_norm_bound`.
    `source`: a pack (or staging) folder, or the graph that ends the tower (see `tower_end`)."""
    return norm_bound(read_tower_head(tower_end(source)))
