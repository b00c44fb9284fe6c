"""Direct preference optimisation losses (DPO family, ORPO, SimPO, KTO) as pure functions.

Every function takes per-example log-probabilities of completions — whether they are sums over the
completion's tokens or per-token means is the caller's choice and is stated for each loss (the
paper's choice is the default of the stage that calls it) — and returns per-example losses plus
metrics in a named container. No reduction over the batch happens here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


class PairLoss(NamedTuple):
    loss: torch.Tensor  # (B,) per-pair loss
    chosen_rewards: torch.Tensor  # (B,) implicit reward of the chosen completion (no gradient)
    rejected_rewards: torch.Tensor  # (B,) implicit reward of the rejected completion (no gradient)

    @property
    def margins(self) -> torch.Tensor:  # (B,)
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:  # (B,) 1 if chosen reward > rejected, 0.5 on a tie, else 0
        return (self.margins > 0).float() + 0.5 * (self.margins == 0).float()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> PairLoss:
    """DPO and its variants on sequence log-probabilities (sums over completion tokens).

    With ``h = (log π(y_c) - log π_ref(y_c)) - (log π(y_r) - log π_ref(y_r))`` (all (B,)):

    - ``sigmoid``: DPO, Rafailov et al. 2023, eq. 7: ``-log σ(β h)``; with label smoothing ε,
      conservative DPO (Mitchell 2023): ``-(1-ε) log σ(β h) - ε log σ(-β h)``.
    - ``ipo``: Azar et al. 2023, eq. 17: ``(h - 1/(2β))²``; its minimum is at the target margin
      ``h = 1/(2β)``. ``h`` is on **sequence sums** of log-ratios, as eq. 17 is written. TRL's ``loss_type="ipo"``
      instead divides each side's log-ratio by its completion length (a token mean; TRL says the paper's reported
      runs used that form), so the same β means a different target: with both completions ``L`` tokens long,
      TRL's loss at ``β_TRL`` is ``1/L²`` × this loss at ``β = β_TRL / L`` (target ``h = L/(2β_TRL)`` nats, summed).
      A β from a TRL IPO recipe is not carried over as is: divide it by a typical completion length.
    - ``hinge``: SLiC-HF, Zhao et al. 2023, eq. 2 (calibration term): ``max(0, 1 - β h)``.
    - ``robust``: Chowdhury et al. 2024 (rDPO), eq. 8: ``[-(1-ε) log σ(β h) + ε log σ(-β h)] / (1 - 2ε)``,
      an unbiased estimate of the clean DPO loss when labels flip with probability ε.

    Implicit rewards: ``β (log π(y) - log π_ref(y))`` for each side.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = policy_rejected_logps.float() - ref_rejected_logps.float()
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        loss = torch.relu(1 - beta * h)
    else:  # robust
        loss = (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
            1 - 2 * label_smoothing
        )
    return PairLoss(loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> PairLoss:
    """SimPO, Meng et al. 2024, eq. 6: ``-log σ(β·avg log π(y_c) - β·avg log π(y_r) - γ)``.

    The log-probabilities are **per-token means** over each completion (the length-normalised
    implicit reward ``β/|y| log π(y)``); no reference model. ``gamma`` is the target reward margin.
    Label smoothing as in conservative DPO. Rewards: ``β · avg log π(y)``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    rc, rr = beta * policy_chosen_logps.float(), beta * policy_rejected_logps.float()
    x = rc - rr - gamma
    loss = -(1 - label_smoothing) * F.logsigmoid(x) - label_smoothing * F.logsigmoid(-x)
    return PairLoss(loss, rc.detach(), rr.detach())


class ORPOLoss(NamedTuple):
    loss: torch.Tensor  # (B,) nll + λ · odds-ratio loss
    nll: torch.Tensor  # (B,) the SFT term (as given)
    odds_ratio_loss: torch.Tensor  # (B,) -log σ(log odds(y_c) - log odds(y_r))
    log_odds_ratio: torch.Tensor  # (B,) log odds(y_c) - log odds(y_r) (no gradient)
    chosen_rewards: torch.Tensor  # (B,) λ · avg log π(y_c) (no gradient), as TRL reports them
    rejected_rewards: torch.Tensor  # (B,)


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    lam: float,
) -> ORPOLoss:
    """ORPO, Hong et al. 2024, eqs. 4–7: ``L = L_SFT + λ · -log σ(log odds(y_c) - log odds(y_r))``.

    ``policy_*_logps`` are **per-token means** of log π over each completion (so ``p = exp(logp)``
    is a geometric-mean token probability in (0, 1)); ``odds(y) = p / (1 - p)``, computed as
    ``logp - log1p(-exp(logp))``. ``chosen_nll`` (B,) is the SFT term for each pair's chosen
    completion (the caller decides its token reduction). No reference model.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    lc, lr = policy_chosen_logps.float(), policy_rejected_logps.float()
    # log(1 - e^x) for x < 0; clamp keeps it finite when a mean log-prob rounds to 0
    log_odds = (lc - lr) - (torch.log1p(-torch.exp(lc).clamp(max=1 - 1e-7)) - torch.log1p(-torch.exp(lr).clamp(max=1 - 1e-7)))
    or_loss = -F.logsigmoid(log_odds)
    return ORPOLoss(
        loss=chosen_nll.float() + lam * or_loss,
        nll=chosen_nll.float(),
        odds_ratio_loss=or_loss,
        log_odds_ratio=log_odds.detach(),
        chosen_rewards=(lam * lc).detach(),
        rejected_rewards=(lam * lr).detach(),
    )


class KTOLoss(NamedTuple):
    loss: torch.Tensor  # (B,) per-example weighted loss
    rewards: torch.Tensor  # (B,) β (log π(y) - log π_ref(y)) (no gradient)
    kl: torch.Tensor  # () the reference point z0 used (no gradient)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOLoss:
    """KTO, Ethayarajh et al. 2024, eq. 8, on unpaired completions.

    ``r = log π(y) - log π_ref(y)`` (sums over completion tokens, (B,)); ``desirable`` (B,) bool;
    ``kl`` the reference point z0: an estimate of KL(π || π_ref) from mismatched (prompt, completion)
    pairs, computed by the caller, detached here and clamped at 0 (as the paper does).
    ``loss = λ_D (1 - σ(β (r - z0)))`` for desirable and ``λ_U (1 - σ(β (z0 - r)))`` for undesirable.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    z0 = kl.detach().float().clamp(min=0)
    r = policy_logps.float() - ref_logps.float()
    good = desirable.bool()
    loss = torch.where(
        good, desirable_weight * (1 - torch.sigmoid(beta * (r - z0))), undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    )
    return KTOLoss(loss=loss, rewards=(beta * r).detach(), kl=z0)
