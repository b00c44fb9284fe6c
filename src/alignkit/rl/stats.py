"""Statistics of rollouts (imports torch only): masked variance and whitening, reward-score normalisation,
running moments of the scores across steps, and the value function's explained variance.

Shapes: B sequences, T response tokens; ``mask`` (B, T) float or bool, 1 on real response tokens.
"""

from __future__ import annotations

import math

import torch

from alignkit.rl.aggregate import masked_mean


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries of ``x`` (all of them, one scalar): TRL ``core.masked_var``.

    ``unbiased`` applies Bessel's correction n / (n - 1). With fewer than 2 masked entries (1 if not
    ``unbiased``) there is no spread to measure and the result is 0 (TRL raises or divides by 0).
    """
    m = mask.to(x.dtype)
    n = m.sum()
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), torch.zeros_like(var))
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean and (unbiased) variance over the masked entries.

    TRL ``core.masked_whiten``: advantages are whitened with ``shift_mean=True``; with
    ``shift_mean=False`` the mean is added back (only the scale changes), as TRL does for rewards.
    Entries outside the mask are returned as 0 (TRL leaves them whitened garbage), like every per-token
    output of ``alignkit.rl``. Statistics are over the whole tensor, not per row.
    """
    m = mask.to(x.dtype)
    mean, var = masked_mean(x, m), masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


def normalize_scores(
    scores: torch.Tensor, mean: float | None = None, std: float | None = None, clip: float | None = None
) -> torch.Tensor:
    """``(scores - mean) / std`` (each part only when given), then clamped to ``[-clip, clip]`` when given.

    Reward normalisation and clipping as in TRL (``use_score_scaling`` / ``score_clip``) and OpenRLHF
    (``reward_clip_range``); mean/std come from the reward model's statistics or ``RunningMoments``.
    scores: (B,); returns (B,) float32.
    """
    if std is not None and std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    out = scores.float()
    if mean is not None:
        out = out - mean
    if std is not None:
        out = out / std
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` over the masked entries: 1 for perfect values, 0 for predicting the
    mean, negative for worse (cleanrl / OpenAI baselines ``explained_variance``). NaN when ``Var[R] = 0``
    (nothing to explain), as baselines does. values, returns, mask: (B, T).
    """
    m = mask.to(torch.float32)
    v, ret = values.float(), returns.float()
    var_r = masked_var(ret, m, unbiased=False).item()
    if var_r == 0:
        return math.nan
    return 1.0 - masked_var(ret - v, m, unbiased=False).item() / var_r


class RunningMoments:
    """Running mean and std of scores across steps (TRL ``core.RunningMoments``), for normalising rewards
    when the reward model stores no statistics.

    Each ``update`` merges the batch with the parallel formula of Chan, Golub & LeVeque 1979:
    ``M2 = M2_a + M2_b + δ² n_a n_b / n``. Kept in float64. ``std`` is the unbiased (ddof=1) standard
    deviation of everything seen so far. Before any value ``mean`` is 0, and ``std`` is 1 until two
    values have been seen (so normalising with a fresh instance changes nothing).
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0  # sum of squared deviations from the mean

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> tuple[float, float]:
        """Add a batch of scores (any shape). Returns the batch's (mean, unbiased std); a single-value
        batch reports std 0. An empty batch is a ValueError."""
        xs = x.detach().double().flatten()
        n = xs.numel()
        if n == 0:
            raise ValueError("RunningMoments.update needs at least one value")
        batch_mean = xs.mean().item()
        batch_m2 = ((xs - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self._mean
        self._mean += delta * n / total
        self._m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total
        return batch_mean, math.sqrt(batch_m2 / (n - 1)) if n > 1 else 0.0

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self._mean, "m2": self._m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self._mean, self._m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
