"""Fusion and choice (SPEC.md §4–7): mixes of the features the graphs give, then the pack's rule.

ViT packs score 100·cos(f, t) on unnormalised features (§4–6). ResNet packs (§7) give f^L and
each text feature already L2-normalised by their graphs, and score 100·f·t, a plain dot product.
"""

from __future__ import annotations

import numpy as np


def text_target(t_sentence: np.ndarray, t_phrase: np.ndarray, beta: float) -> np.ndarray:
    """t = β t(s') + (1−β) t(NP) in float64: the vector every mask is scored against."""
    return beta * t_sentence.astype(np.float64) + (1 - beta) * t_phrase


SCORE_RULES = ("cosine", "dot")


def fuse_and_score(global_features: np.ndarray, local_features: np.ndarray,
                   t_sentence: np.ndarray, t_phrase: np.ndarray, alpha: float,
                   beta: float, rule: str = "cosine") -> np.ndarray:
    """K scores, 100·cos (`rule` "dot": 100·dot) of α f^G + (1−α) f^L and β t(s') + (1−β) t(NP),
    computed in float64."""
    f = alpha * global_features.astype(np.float64) + (1 - alpha) * local_features
    return (100.0 * similarity(f, text_target(t_sentence, t_phrase, beta), rule)
            ).astype(np.float32)


def similarity(features: np.ndarray, t: np.ndarray, rule: str) -> np.ndarray:
    """Each row of `features` against t by the pack's rule: `cosines`, or the dot product."""
    if rule == "dot":
        return features @ t
    if rule != "cosine":
        raise ValueError(f"unknown score rule {rule!r} (one of {', '.join(SCORE_RULES)})")
    return cosines(features, t)


def cosines(features: np.ndarray, t: np.ndarray) -> np.ndarray:
    """cos(row, t) for each row of `features` against one vector t, or row by row against a
    matrix t of the same shape; 0 where either side is zero (a zero feature matches nothing).
    The project's one cosine: scoring, pruning, check and quantize all use it."""
    norms = np.linalg.norm(features, axis=-1) * np.linalg.norm(t, axis=-1)
    dots = features @ t if t.ndim == 1 else np.einsum("ij,ij->i", features, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dots / norms, 0.0)
