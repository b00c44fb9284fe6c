"""Pairwise reward-model metrics from the two scores of each pair (pure Python, no torch).

- accuracy: fraction of pairs with r_chosen > r_rejected; a tie (equal scores) counts 1/2.
- mean_margin: mean of r_chosen - r_rejected.
- ece: expected calibration error of the Bradley–Terry probability σ(r_c - r_r). Each pair is a
  prediction of the more likely winner with confidence ``σ(|Δ|)`` in [0.5, 1]; it is right (1) when
  Δ > 0, half right on a tie. Pairs are put in ``bins`` equal-width confidence bins over [0.5, 1] and
  ``ece = Σ_b n_b / n · |accuracy_b - confidence_b|`` (Guo et al. 2017, eq. 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _correct(delta: float) -> float:
    return 1.0 if delta > 0 else 0.5 if delta == 0 else 0.0


def expected_calibration_error(deltas: Sequence[float], *, bins: int = 10) -> float:
    """ECE of σ(Δ) as the probability that chosen beats rejected (see the module doc)."""
    if not deltas:
        raise ValueError("no pairs")
    counts = [0] * bins
    conf_sum = [0.0] * bins
    right_sum = [0.0] * bins
    for d in deltas:
        conf = _sigmoid(abs(d))
        b = min(int((conf - 0.5) / 0.5 * bins), bins - 1)
        counts[b] += 1
        conf_sum[b] += conf
        right_sum[b] += _correct(d)
    n = len(deltas)
    return sum(abs(right_sum[b] - conf_sum[b]) / n for b in range(bins) if counts[b])


def pairwise_metrics(
    chosen: Sequence[float], rejected: Sequence[float], *, subsets: Sequence[str | None] | None = None, bins: int = 10
) -> dict:
    """``{accuracy, n, ties, mean_margin, ece[, subsets: {name: {accuracy, n}}]}``."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores but {len(rejected)} rejected")
    if not chosen:
        raise ValueError("no pairs")
    deltas = [c - r for c, r in zip(chosen, rejected)]
    out = {
        "accuracy": sum(_correct(d) for d in deltas) / len(deltas),
        "n": len(deltas),
        "ties": sum(d == 0 for d in deltas),
        "mean_margin": sum(deltas) / len(deltas),
        "ece": expected_calibration_error(deltas, bins=bins),
    }
    if subsets is not None and any(s is not None for s in subsets):
        groups: dict[str, list[float]] = {}
        for d, s in zip(deltas, subsets):
            groups.setdefault(str(s), []).append(_correct(d))
        out["subsets"] = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}
    return out
