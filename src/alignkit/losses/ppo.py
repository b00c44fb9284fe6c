"""PPO for language models, piece by piece, as pure functions (imports torch only).

The recipe is Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"), as used by
Stiennon et al. 2020 and Ouyang et al. 2022 (InstructGPT): per-token reward = -β·KL(π || π_ref) at every
response token plus the reward model's score at the last one; GAE advantages (Schulman et al. 2016);
the clipped surrogate and clipped value loss (Schulman et al. 2017). Conventions follow TRL's original
``PPOTrainer`` and OpenRLHF where the papers leave a choice open; each function says which.

Shapes: B sequences (rollout rows), T response tokens. ``mask`` (B, T) float or bool is 1 on real
response tokens (up to and including EOS) and 0 after, i.e. each row is a prefix of ones. Every
per-token tensor returned here is 0 outside the mask. No reduction over the batch happens inside the
loss functions; they return per-token tensors and ``masked_mean`` (or ``losses.reductions``) is the
explicit reduction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from alignkit.losses import reductions

KL_ESTIMATORS = ("k1", "k2", "k3")


# --------------------------------------------------------------------------------------------------
# masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(x * mask) / sum(mask)`` over ``dim`` (or over everything): TRL ``core.masked_mean``.

    The denominator is clamped at 1 (``losses.reductions.masked_mean``; a 0/1 mask has a sum of 0 or
    >= 1), so an all-zero mask (or row, with ``dim``) gives 0 instead of NaN.
    """
    return reductions.masked_mean(x, mask, dim)


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
    output of this module. Statistics are over the whole tensor, not per row.
    """
    m = mask.to(x.dtype)
    mean, var = masked_mean(x, m), masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


# --------------------------------------------------------------------------------------------------
# KL penalty and its coefficient


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from tokens sampled from π. logprobs, ref_logprobs: (B, T).

    With ``log r = ref_logp - logp`` (J. Schulman, "Approximating KL divergence", 2020):

    - ``k1``: ``-log r = logp - ref_logp``; unbiased, can be negative per token. The penalty of
      Ziegler et al. 2019 eq. 2 / Stiennon et al. 2020 eq. 1 and TRL's ``kl_penalty="kl"``.
    - ``k2``: ``(log r)² / 2``; biased, non-negative, low variance (TRL's ``"mse"``).
    - ``k3``: ``(r - 1) - log r``; unbiased and non-negative (since log r <= r - 1), lower variance
      than k1. Computed as ``expm1(log r) - log r`` for accuracy near r = 1.

    Returns (B, T) float32 and keeps the gradient (the caller detaches for rewards). Unmasked: the
    caller applies the mask (``token_rewards`` does).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    log_r = ref_logprobs.float() - logprobs.float()
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r


class FixedKLController:
    """A constant KL coefficient β (Ziegler et al. 2019 with no target; TRL ``FixedKLController``)."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: steer β so the policy's KL from the reference tracks a target.

    ``e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)``, ``β_{t+1} = β_t (1 + K_β e_t)`` with
    ``K_β = n_steps / horizon`` (OpenAI lm-human-preferences and TRL ``AdaptiveKLController``: n_steps is
    the number of rollouts consumed since the last update, horizon a number of rollouts).
    ``state_dict`` holds only the learned ``value``; target and horizon come from the config.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """``current_kl``: the measured KL (a float or a 0-d tensor); ``n_steps``: rollouts since last update."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


# --------------------------------------------------------------------------------------------------
# rewards and advantages


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the index of each row's last masked token. Rows with an all-zero mask give -1."""
    m = mask.bool()
    pos = torch.arange(m.shape[-1], device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).amax(dim=-1)


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float | torch.Tensor) -> torch.Tensor:
    """Per-token reward (B, T): ``-kl_coef * kl`` at every masked token, plus ``score`` at the last one.

    Ziegler et al. 2019 eq. 2 / Stiennon et al. 2020 eq. 1, spread over tokens as TRL
    ``PPOTrainer.compute_rewards`` and OpenRLHF ``compute_reward`` do: the KL term is per token and the
    sequence score (B,) lands on each row's last masked token (the EOS, or the last generated token of
    a truncated response). kl: (B, T) per-token KL estimate (``kl_penalty``). 0 outside the mask.
    A row with an all-zero mask has nowhere to put its score: ValueError (silently dropping a reward is
    worse). Does not detach; in PPO the inputs are already constants.
    """
    m = mask.to(torch.float32)
    last = last_token_index(mask)
    if bool((last < 0).any()):
        empty = torch.nonzero(last < 0).flatten().tolist()
        raise ValueError(f"rows {empty} have an all-zero mask: no token to put the score on")
    rewards = -kl_coef * kl.float() * m
    return rewards + F.one_hot(last, m.shape[-1]).to(rewards.dtype) * score.float().unsqueeze(-1)


def normalize_scores(
    scores: torch.Tensor, mean: float | None = None, std: float | None = None, clip: float | None = None
) -> torch.Tensor:
    """``(scores - mean) / std`` (each part only when given), then clamped to ``[-clip, clip]`` when given.

    Reward normalisation and clipping as in TRL (``use_score_scaling`` / ``score_clip``) and OpenRLHF
    (``reward_clip_range``); mean/std come from the reward model's statistics or ``RunningMoments``.
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
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, Schulman et al. 2016 eq. 16, right to left over each row.

    ``δ_t = r_t + γ V_{t+1} - V_t``, ``A_t = δ_t + γλ A_{t+1}``, with ``V`` and ``A`` taken as 0 after each
    row's last masked token (the episode ends at EOS, so nothing is bootstrapped; values and rewards
    beyond the mask are ignored). Returns ``(advantages, returns)``, both (B, T) float32, 0 outside
    the mask, no gradient; ``returns = advantages + values`` (the value target; TRL
    ``compute_advantages``). The mask must be a prefix of ones on each row (ValueError otherwise).
    Advantages are not whitened here: see ``masked_whiten``.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(f"rewards, values, mask must all be (B, T); got {rewards.shape}, {values.shape}, {mask.shape}")
    m = mask.to(torch.float32)
    if bool((m[:, 1:] > m[:, :-1]).any()):
        raise ValueError("mask must be 1 on a prefix of each row and 0 after (response tokens up to EOS)")
    r, v = rewards.float() * m, values.float() * m
    T = r.shape[-1]
    advantages = torch.zeros_like(r)
    last_adv = torch.zeros_like(r[:, 0])
    next_value = torch.zeros_like(r[:, 0])
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        last_adv = (delta + gamma * lam * last_adv) * m[:, t]  # 0 on padding, so padding adds nothing
        advantages[:, t] = last_adv
        next_value = v[:, t]
    return advantages, (advantages + v) * m


# --------------------------------------------------------------------------------------------------
# the PPO update


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # (B, T) per-token clipped surrogate, 0 outside the mask
    clipfrac: torch.Tensor  # (B, T) float, 1 where the clipped branch is the active one (no gradient)
    approx_kl: torch.Tensor  # (B, T) 0.5 (logp - old_logp)², KL(π_old || π) estimate (no gradient)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> PolicyLoss:
    """PPO's clipped surrogate, Schulman et al. 2017 eq. 7, negated to a loss, per token.

    ``r = exp(logp - old_logp)``; ``loss = max(-A r, -A clip(r, 1-ε, 1+ε))``; where the clipped branch
    is strictly larger it is active and the loss is flat in ``logprobs``. All (B, T). ``old_logprobs``
    and ``advantages`` are detached here. clipfrac and approx_kl (k2 of the log-ratio, as TRL
    ``PPOTrainer.loss``) are metrics. Positions outside the mask are 0 with 0 gradient, even where the
    log-probs there are -inf.
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    m = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    log_ratio = torch.where(m, logprobs.float() - old_logprobs.detach().float(), zero)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().float()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.where(m, torch.maximum(unclipped, clipped), zero)
    clipfrac = ((clipped > unclipped) & m).float().detach()
    approx_kl = (0.5 * log_ratio**2).detach()
    return PolicyLoss(loss, clipfrac, approx_kl)


class ValueLoss(NamedTuple):
    loss: torch.Tensor  # (B, T) per-token clipped squared error, 0 outside the mask
    clipfrac: torch.Tensor  # (B, T) float, 1 where the clipped prediction's error is the active one (no gradient)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> ValueLoss:
    """Clipped value loss, per token: ``0.5 max((V - R)², (clip(V, V_old - ε, V_old + ε) - R)²)``.

    Not in the PPO paper's equations; from OpenAI baselines' ``ppo2`` as used by Ziegler et al. 2019
    (lm-human-preferences) and TRL ``PPOTrainer.loss`` (OpenRLHF ``ValueLoss``). ``old_values`` and
    ``returns`` are detached. All (B, T), 0 outside the mask.
    """
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value must be > 0, got {clip_range_value}")
    m = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=values.device)
    v, old, ret = values.float(), old_values.detach().float(), returns.detach().float()
    v_clipped = torch.maximum(torch.minimum(v, old + clip_range_value), old - clip_range_value)
    err, err_clipped = (v - ret) ** 2, (v_clipped - ret) ** 2
    loss = torch.where(m, 0.5 * torch.maximum(err, err_clipped), zero)
    clipfrac = ((err_clipped > err) & m).float().detach()
    return ValueLoss(loss, clipfrac)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) -> (...): entropy of softmax(logits), in nats, float32 (TRL ``core.entropy_from_logits``).

    ``H = -Σ p log p`` with ``log p = log_softmax(logits)`` (= logits - logsumexp(logits)), so large
    logits do not overflow. Tokens with probability 0 (logits of -inf: a masked vocabulary, top-k / top-p) count
    0·log 0 = 0, in the value and in the gradient: their log p is replaced by 0 (not by a huge finite number,
    whose gradient a loss scale would overflow into inf, then 0·inf = NaN).
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp.masked_fill(torch.isneginf(logp), 0.0)).sum(-1)


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` over the masked entries: 1 for perfect values, 0 for predicting the
    mean, negative for worse (cleanrl / OpenAI baselines ``explained_variance``). NaN when ``Var[R] = 0``
    (nothing to explain), as baselines does.
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
