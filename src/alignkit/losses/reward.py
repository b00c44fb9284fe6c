"""Reward-model loss: the Bradley–Terry pairwise objective on scalar rewards.

Ouyang et al. 2022 ("InstructGPT"), eq. 1: ``loss = -log σ(r_chosen - r_rejected)``, with
- a per-pair ``margin`` m (Touvron et al. 2023, Llama 2, eq. 2): ``-log σ(r_c - r_r - m)``;
- label smoothing ε (conservative targets, as cDPO): ``-(1-ε) log σ(x) - ε log σ(-x)`` with
  ``x = r_c - r_r - m``, i.e. the label "chosen wins" is trusted with probability 1-ε;
- reward centering with coefficient c (Eisenstein et al. 2023): ``+ c (r_c + r_r)²``, which pins the
  otherwise free offset of the rewards near zero.

Everything is per pair; the caller reduces (``alignkit.rl.aggregate``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PairwiseLoss(NamedTuple):
    loss: torch.Tensor  # (B,) per-pair loss (float32)
    accuracy: torch.Tensor  # (B,) 1 if r_c > r_r, 0.5 on a tie, 0 otherwise (no gradient)
    margin: torch.Tensor  # (B,) r_c - r_r (no gradient)


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """(B,) 1 where chosen > rejected, 0.5 where they are equal (a tie is half right), 0 otherwise."""
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float()


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    center_coef: float = 0.0,
) -> PairwiseLoss:
    """Per-pair Bradley–Terry loss.

    chosen, rejected: (B,) scalar rewards of the preferred and the other response.
    margin: (B,) how much the chosen reward must exceed the rejected one (None: 0).
    label_smoothing: ε in [0, 0.5): probability that the preference label is flipped.
    center_coef: c >= 0, weight of the (r_c + r_r)² centering term.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if center_coef < 0:
        raise ValueError(f"center_coef must be >= 0, got {center_coef}")
    rc, rr = chosen.float(), rejected.float()
    x = rc - rr
    if margin is not None:
        x = x - margin.float()
    loss = -(1.0 - label_smoothing) * F.logsigmoid(x)
    if label_smoothing:
        loss = loss - label_smoothing * F.logsigmoid(-x)
    if center_coef:
        loss = loss + center_coef * (rc + rr) ** 2
    return PairwiseLoss(loss=loss, accuracy=pairwise_accuracy(rc.detach(), rr.detach()), margin=(rc - rr).detach())
