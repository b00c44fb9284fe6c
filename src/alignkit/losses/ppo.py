"""PPO's losses, per token, as pure functions (imports torch only).

The clipped surrogate and the clipped value loss of Schulman et al. 2017, as used for language models by
Ziegler et al. 2019, Stiennon et al. 2020 and Ouyang et al. 2022 (InstructGPT); conventions follow TRL's
original ``PPOTrainer`` and OpenRLHF where the papers leave a choice open. The rest of PPO's maths — KL
estimators and controllers, per-token rewards, GAE, whitening, loss aggregation — is in :mod:`alignkit.rl`.

Shapes: B sequences (rollout rows), T response tokens. ``mask`` (B, T) float or bool is 1 on real
response tokens. Each function returns per-token tensors, 0 outside the mask; no reduction over the
batch happens here (``alignkit.rl.aggregate`` is the explicit reduction).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


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
