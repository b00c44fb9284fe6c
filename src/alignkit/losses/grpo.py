"""The clipped policy loss of the critic-free methods (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++, GSPO), per
token, as a pure function (imports torch only).

PPO's clipped surrogate (Schulman et al. 2017) with the two refinements these methods added:

- clip-higher (DAPO, Yu et al. 2025): separate bounds ``clip(r, 1 - ε_low, 1 + ε_high)``, a larger ε_high
  letting unlikely tokens with a positive advantage grow (against entropy collapse);
- a sequence-level ratio (GSPO, Zheng et al. 2025): ``s_i = exp(mean_t log(π/π_old))``, one ratio per
  response, clipped as a whole, computed as TRL ``importance_sampling_level="sequence"`` does.

Shapes: B responses, T response tokens; ``mask`` (B, T) is 1 on response tokens that count in the loss. The
result is per token and 0 outside the mask: the reduction (token, sequence or fixed-length mean) is the
caller's, through :mod:`alignkit.rl.aggregate`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ClippedLoss(NamedTuple):
    loss: torch.Tensor  # (B, T) per-token -min(r·A, clip(r)·A), 0 outside the mask
    clipped_low: torch.Tensor  # (B, T) 1 where r < 1 - ε_low and A < 0: the lower bound is active (no gradient)
    clipped_high: torch.Tensor  # (B, T) 1 where r > 1 + ε_high and A > 0: the upper bound is active (no gradient)
    ratio: torch.Tensor  # (B, T) the importance ratio used (token, or the sequence's on each of its tokens), detached


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    ratio_level: str = "token",
) -> ClippedLoss:
    """``loss = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)`` per token (PPO's surrogate negated), with

    - ``ratio_level="token"``: ``r_t = exp(logp_t - old_logp_t)`` (GRPO, DAPO; TRL ``GRPOTrainer``);
    - ``ratio_level="sequence"``: ``r = exp(Σ_t m_t (logp_t - old_logp_t) / Σ_t m_t)`` for every token of the
      response (GSPO); the gradient flows through the mean.

    logprobs, old_logprobs: (B, T) log-probs of the response tokens under the current and the sampling policy
    (at the sampling temperature); advantages: (B, T) (a sequence advantage spread with
    ``advantages.per_token``); ``clip_high`` defaults to ``clip_low``. ``old_logprobs`` and ``advantages`` are
    detached. Positions outside the mask are 0 with 0 gradient, even where the log-probs there are -inf.
    """
    if clip_low <= 0 or (clip_high is not None and clip_high <= 0):
        raise ValueError(f"clip_low and clip_high must be > 0, got {clip_low}, {clip_high}")
    if ratio_level not in ("token", "sequence"):
        raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")
    high = clip_low if clip_high is None else clip_high
    m = mask.bool()
    mf = m.float()
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    log_ratio = torch.where(m, logprobs.float() - old_logprobs.detach().float(), zero)
    if ratio_level == "sequence":
        log_ratio = ((log_ratio * mf).sum(-1, keepdim=True) / mf.sum(-1, keepdim=True).clamp(min=1)).expand_as(log_ratio)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().float()
    clipped_ratio = ratio.clamp(1.0 - clip_low, 1.0 + high)
    loss = torch.where(m, -torch.minimum(ratio * adv, clipped_ratio * adv), zero)
    low_active = ((ratio < 1.0 - clip_low) & (adv < 0) & m).float()
    high_active = ((ratio > 1.0 + high) & (adv > 0) & m).float()
    return ClippedLoss(loss, low_active, high_active, (ratio * mf).detach())
