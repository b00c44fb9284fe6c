"""Statistics for comparing models on the same prompts (plain Python + numpy, no torch).

- ``win_rate(a, b)``: per prompt, 1 if ``a > b``, 1/2 on a tie, 0 otherwise; the mean over prompts.
- ``bootstrap_ci(statistic, *samples)``: percentile bootstrap over prompts. The samples are paired
  per prompt (``samples[k][i]`` all belong to prompt ``i``); each replicate draws ``n`` prompt indices
  with replacement from a seeded generator and evaluates ``statistic`` on the resampled arrays. The
  interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the replicates
  (Efron & Tibshirani 1993, ch. 13).
- ``mean_se(values)``: the mean and its standard error ``s / sqrt(n)`` (sample std, ``ddof=1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def win_rate(a_scores: Sequence[float], b_scores: Sequence[float]) -> float:
    """Fraction of prompts where ``a`` scores above ``b``; a tie counts 1/2."""
    a = np.asarray(a_scores, dtype=np.float64)
    b = np.asarray(b_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"win_rate needs two 1-D score lists of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("win_rate of no prompts")
    return float(np.mean((np.sign(a - b) + 1.0) / 2.0))


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (a named statistic for ``bootstrap_ci``)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean of no values")
    return float(v.mean())


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, standard error)``; the standard error is None for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean of no values")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None
    return float(v.mean()), se


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples: Sequence[float],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)``, resampling prompts (see the module doc).

    ``bootstrap_ci(win_rate, a, b)`` is the interval of a's win rate over b; ``bootstrap_ci(mean, r)``
    that of a mean reward.

    The same ``seed`` gives the same interval; when every prompt contributes the same value the
    interval is the point ``(x, x)``.
    """
    if not samples:
        raise ValueError("bootstrap_ci needs at least one sample")
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    n = arrays[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrays):
        raise ValueError("bootstrap_ci samples must be 1-D and paired (the same length)")
    if n == 0:
        raise ValueError("bootstrap_ci of no prompts")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.Generator(np.random.PCG64(seed))
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) prompt indices
    reps = np.fromiter((statistic(*(a[row] for a in arrays)) for row in idx), dtype=np.float64, count=n_boot)
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
