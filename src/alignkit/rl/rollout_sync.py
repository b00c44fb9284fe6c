"""Checks that keep rollouts from a separate inference engine (vLLM) honest: pure tensor functions, no model.

When rollouts come from an engine that holds its own copy of the weights, two things can go wrong silently:

1. the weight push after an update does nothing (the most reported failure of this design: a LoRA sync that
   leaves the engine on the initial policy), so every later rollout is sampled from a stale policy;
2. the engine and the trainer compute slightly different distributions (kernels, bf16), so the "on-policy"
   samples are a little off-policy.

:func:`check_sync` catches the first after every push, from the log-probs both sides give the same probe tokens;
:func:`logprob_gap` measures the second every step, and :func:`truncated_is_weights` corrects for it
(truncated importance sampling, TIS: Yao et al. 2025, "Your efficient RL framework secretly brings you
off-policy RL training"; verl's ``tis_imp_ratio_cap``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _masked_mean_abs(x: torch.Tensor, mask: torch.Tensor) -> float:
    n = mask.sum()
    return float((x.abs() * mask).sum() / n) if n > 0 else 0.0


@dataclass(frozen=True)
class SyncCheck:
    """What one weight push looked like from the probe tokens."""

    gap: float  # mean |trainer - engine| log-prob over the probe tokens, after the push
    trainer_moved: float | None  # mean |trainer now - trainer at the last push| (None at the first push)
    engine_moved: float | None  # the same for the engine
    ok: bool
    problem: str | None  # why not ok, one sentence


def check_sync(
    trainer: torch.Tensor,
    engine: torch.Tensor,
    mask: torch.Tensor,
    *,
    tolerance: float,
    previous: tuple[torch.Tensor, torch.Tensor] | None = None,
    min_move: float = 1e-3,
) -> SyncCheck:
    """Compare the trainer's and the engine's log-probs of the same probe tokens, (N, W) each with ``mask`` (N, W)
    marking the tokens, after a weight push.

    Two failures, the more specific first:

    - with ``previous`` = the (trainer, engine) log-probs at the last push: the trainer's log-probs moved by more
      than ``min_move`` (mean absolute change) since then while the engine's moved by less than half as much:
      the push did nothing (or far too little). This catches a failed push right after the first update, even
      when one update moves the log-probs less than ``tolerance`` (the gap alone would only see the drift
      once it has piled up);
    - ``gap`` (mean absolute difference over the probe tokens) above ``tolerance``: the engine is not computing
      the trainer's policy."""
    if trainer.shape != engine.shape or trainer.shape != mask.shape:
        raise ValueError(f"shapes differ: trainer {tuple(trainer.shape)}, engine {tuple(engine.shape)}, mask {tuple(mask.shape)}")
    mask = mask.to(trainer.dtype)
    gap = _masked_mean_abs(trainer - engine, mask)
    t_moved = e_moved = None
    if previous is not None:
        t_moved = _masked_mean_abs(trainer - previous[0], mask)
        e_moved = _masked_mean_abs(engine - previous[1], mask)
    if t_moved is not None and t_moved > min_move and e_moved < 0.5 * t_moved:
        problem = (
            f"the weight push changed nothing: since the last push the trainer's log-probs moved by {t_moved:.4g} on "
            f"average and the rollout engine's by {e_moved:.4g}, so rollouts still come from an old policy"
        )
        return SyncCheck(gap, t_moved, e_moved, False, problem)
    if gap > tolerance:
        problem = (
            f"the rollout engine's log-probs differ from the trainer's by {gap:.4g} on average over {int(mask.sum())} "
            f"probe tokens (tolerance {tolerance:g}): the engine is not running the policy being trained"
        )
        return SyncCheck(gap, t_moved, e_moved, False, problem)
    return SyncCheck(gap, t_moved, e_moved, True, None)


def logprob_gap(trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the trainer's log-probs of the sampled tokens are from the engine's (both at the sampling
    temperature; (N, W) with ``mask``): ``mean_abs`` |Δ|, ``max_abs``, and ``mean`` Δ = trainer - engine
    (the sign says which side puts more mass on what was sampled)."""
    mask = mask.to(trainer.dtype)
    d = (trainer - rollout) * mask
    n = float(mask.sum())
    if n == 0:
        return {"mean_abs": 0.0, "max_abs": 0.0, "mean": 0.0}
    return {"mean_abs": float(d.abs().sum() / n), "max_abs": float(d.abs().max()), "mean": float(d.sum() / n)}


def truncated_is_weights(trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token truncated importance weights min(π_trainer(y_t) / π_engine(y_t), cap) = min(exp(trainer - rollout),
    cap), (N, W), 0 off the ``mask``. Multiplying the per-token policy loss by them (no gradient through them)
    makes the update an unbiased-up-to-truncation estimate for the trainer's policy although the tokens were
    sampled by the engine's."""
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    w = torch.exp(trainer - rollout).clamp(max=cap)
    return (w * mask.to(w.dtype)).detach()
