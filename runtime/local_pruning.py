"""Global-first pruning of the local branch: encode f^L (the expensive crops) only for the masks
that can still win.

Every mask is ranked by its global-only score 100·cos(f^G, t), which is cheap. Two ways on:

* `local_top=M` (approximate): f^L for the M best-ranked masks only, then the full score
  (SPEC §4–6) chooses among them.
* `local_bound` (exact): f^L in rounds of M in ranked order, stopping once no unscored mask can
  beat the best scored one. With a = α f^G and b = (1−α) f^L, ‖f^L‖ ≤ R (the pack's
  `local_norm_bound`): when ‖b‖ < ‖a‖ the angle between f = a + b and a is at most
  arcsin(‖b‖/‖a‖), so cos(f, t) ≤ cos(max(0, ∠(a, t) − arcsin((1−α)R/‖a‖))); else ≤ 1.

ResNet packs (SPEC §7) score 100·(α f^G + (1−α) f^L)·t, a plain dot product with f^L of unit
length (R = 1), so the rank is by 100·α f^G·t and Cauchy–Schwarz gives the bound directly:
score ≤ 100·(α f^G·t + (1−α) R ‖t‖). The bound holds under §7's mixed normalisation, and it is
tight: f^L = t/‖t‖ attains it.

If a computed f^L ever exceeds R (a graph the bound was not derived for, e.g. a quantised
variant), the query scores every mask instead of trusting it.

Masks never fully scored get score −inf in `Result.scores`: np.argmax(scores) is still the
chosen index, and a caller cannot mistake a global-only score for a full one. The choice made
depends on the query only, never on which f^L rows earlier queries left in the scene's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ZsrisError
from .local_features import LocalFeatures
from .scoring import fuse_and_score, similarity, text_target

BOUND_ROUND = 4  # masks per round of the exact variant when no local_top is given
# Slack on the bound, for float arithmetic: relative on R (the graph's f^L is float32, R is
# exact), absolute on the cosine (its float64 angle arithmetic).
NORM_SLACK = 1e-3
COS_SLACK = 1e-6


@dataclass(frozen=True)
class Choice:
    scores: np.ndarray  # K float32: full scores, −inf for masks not fully scored
    index: int  # argmax of scores, ties to the lowest index
    local_computed: int  # f^L rows the choice needed (fully scored masks)


def validate_local_top(value: object) -> int | None:
    """None, or M as a positive int (M ≥ K means every mask: exact)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ZsrisError(f"local_top must be a positive integer or None, got {value!r}")
    return int(value)


def validate_local_bound(value: object, radius: float | None) -> bool:
    """A bool; True needs the pack's f^L norm bound."""
    if not isinstance(value, bool | np.bool_):
        raise ZsrisError(f"local_bound must be True or False, got {value!r}")
    if value and radius is None:
        raise ZsrisError("local_bound needs the pack's clip.local_norm_bound, which this pack "
                         "does not record (compute it with zsris_rt.export.local_bound)")
    return bool(value)


def global_order(global_features: np.ndarray, t: np.ndarray, rule: str = "cosine"
                 ) -> np.ndarray:
    """Mask indices by global-only score (100·cos(f^G, t), or 100·f^G·t under the "dot" rule),
    best first, ties to the lowest."""
    return np.argsort(-similarity(global_features.astype(np.float64), t, rule), kind="stable")


def score_upper_bounds(global_features: np.ndarray, t: np.ndarray, alpha: float,
                       radius: float, rule: str = "cosine") -> np.ndarray:
    """K float64 upper bounds on the score of α f^G + (1−α) f^L against t over every f^L with
    ‖f^L‖ ≤ radius (module docstring), under the pack's score rule."""
    a = alpha * global_features.astype(np.float64)
    if rule == "dot":
        reach = (1 - alpha) * radius * float(np.linalg.norm(t))
        return 100.0 * (a @ t + reach) + COS_SLACK * 100.0 * (np.abs(a @ t) + reach)
    if not np.linalg.norm(t) > 0:
        return np.zeros(len(a))  # the score is 0 whatever f is
    angle = np.arccos(np.clip(similarity(a, t, "cosine"), -1.0, 1.0))
    norm_a = np.linalg.norm(a, axis=1)
    reach = (1 - alpha) * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(norm_a > reach, reach / norm_a, 1.0)
    cos = np.where(ratio < 1.0, np.cos(np.maximum(0.0, angle - np.arcsin(ratio))), 1.0)
    return 100.0 * np.minimum(cos + COS_SLACK, 1.0 + COS_SLACK)


def _scored(global_features: np.ndarray, local: LocalFeatures, t_sentence: np.ndarray,
            t_phrase: np.ndarray, alpha: float, beta: float, chosen: np.ndarray,
            rule: str) -> tuple[np.ndarray, int]:
    """Full scores of the `chosen` masks (−inf elsewhere) and their argmax. All K rows go through
    `fuse_and_score` (unknown f^L as zeros), so each score is bit-identical to the one an exact
    query computes from the same f^L rows."""
    scores = fuse_and_score(global_features, local.rows(), t_sentence, t_phrase, alpha, beta,
                            rule)
    keep = np.zeros(len(scores), dtype=bool)
    keep[chosen] = True
    scores[~keep] = -np.inf
    return scores, int(np.argmax(scores))


def choose(global_features: np.ndarray, local: LocalFeatures, t_sentence: np.ndarray,
           t_phrase: np.ndarray, alpha: float, beta: float, local_top: int | None,
           radius: float | None, timings: dict[str, float], rule: str = "cosine") -> Choice:
    """The query's choice: every mask (`local_top` None or ≥ K, no `radius`), the top
    `local_top` by global score, or (`radius`: the f^L norm bound) exact with pruning; scores by
    the pack's `rule` (scoring.SCORE_RULES)."""
    k = len(global_features)
    if radius is None and (local_top is None or local_top >= k):
        local.ensure(np.arange(k), timings)
        scores = fuse_and_score(global_features, local.rows(), t_sentence, t_phrase, alpha, beta,
                                rule)
        return Choice(scores, int(np.argmax(scores)), k)
    t = text_target(t_sentence, t_phrase, beta)
    order = global_order(global_features, t, rule)
    if radius is None:
        chosen = order[:local_top]
        local.ensure(chosen, timings)
        scores, index = _scored(global_features, local, t_sentence, t_phrase, alpha, beta,
                                chosen, rule)
        return Choice(scores, index, len(chosen))
    step = local_top or BOUND_ROUND
    radius *= 1 + NORM_SLACK
    bounds = np.float32(score_upper_bounds(global_features, t, alpha, radius, rule))
    done = 0
    while True:
        done = min(done + step, k)
        local.ensure(order[:done], timings)
        if np.linalg.norm(local.rows()[order[:done]], axis=1).max() > radius:
            done = k  # this graph breaks the pack's bound (e.g. a quantised variant): score all
            local.ensure(order, timings)
        scores, index = _scored(global_features, local, t_sentence, t_phrase, alpha, beta,
                                order[:done], rule)
        rest = order[done:]
        # An unscored mask could only win by a higher score, or an equal one at a lower index.
        best = scores[index]
        if not np.any((bounds[rest] > best) | ((bounds[rest] == best) & (rest < index))):
            return Choice(scores, index, done)
