"""Which log-probability each loss of the DPO stage reads: sums for the DPO family and KTO, per-token means for
SimPO and ORPO (``alignkit.algorithms.dpo.unit_losses``, the one place that decides), and ORPO's two SFT terms."""

import pytest
import torch

from alignkit.algorithms.dpo import summarise, unit_losses
from alignkit.config.dpo import IPOLoss, KTOLoss, ORPOLoss, SigmoidLoss, SimPOLoss
from alignkit.losses.preference import dpo_loss, kto_loss, orpo_loss, simpo_loss
from alignkit.models.logprobs import SequenceLogps

# sums and token counts chosen so that sum and mean order the pair differently
PC = SequenceLogps(torch.tensor([-12.0, -3.0]), torch.tensor([6.0, 1.0]))  # means -2, -3
PR = SequenceLogps(torch.tensor([-9.0, -8.0]), torch.tensor([3.0, 2.0]))  # means -3, -4
RC = SequenceLogps(torch.tensor([-11.0, -2.5]), torch.tensor([6.0, 1.0]))
RR = SequenceLogps(torch.tensor([-9.5, -7.0]), torch.tensor([3.0, 2.0]))


@pytest.mark.parametrize("cfg", [SigmoidLoss(beta=0.2, label_smoothing=0.1), IPOLoss(beta=0.5)])
def test_dpo_family_reads_sums(cfg):
    loss, parts = unit_losses(cfg, (PC, PR), (RC, RR))
    want = dpo_loss(
        PC.sum, PR.sum, RC.sum, RR.sum, beta=cfg.beta, loss_type=cfg.type, label_smoothing=getattr(cfg, "label_smoothing", 0.0)
    )
    assert torch.allclose(loss, want.loss)
    assert torch.allclose(parts["rewards/chosen"], want.chosen_rewards)
    assert parts["logps/chosen"].tolist() == PC.sum.tolist()
    wrong = dpo_loss(PC.mean, PR.mean, RC.mean, RR.mean, beta=cfg.beta, loss_type=cfg.type)
    assert not torch.allclose(loss, wrong.loss)


def test_simpo_reads_per_token_means():
    cfg = SimPOLoss(beta=2.0, gamma=0.5)
    loss, parts = unit_losses(cfg, (PC, PR), None)
    assert torch.allclose(loss, simpo_loss(PC.mean, PR.mean, beta=2.0, gamma=0.5).loss)
    assert not torch.allclose(loss, simpo_loss(PC.sum, PR.sum, beta=2.0, gamma=0.5).loss)
    assert parts["rewards/chosen"].tolist() == [-4.0, -6.0]  # β · mean log-prob


def test_orpo_reads_means_and_its_sft_term_is_per_pair_or_per_token():
    seq, _ = unit_losses(ORPOLoss(lam=0.5, nll="sequence"), (PC, PR), None)
    assert torch.allclose(seq, orpo_loss(PC.mean, PR.mean, -PC.mean, lam=0.5).loss)
    # token: Σ nll over all chosen tokens / their number, spread over pairs so that the pair mean equals it
    scale = 2 / 7.0  # pairs / chosen tokens of the step
    tok, parts = unit_losses(ORPOLoss(lam=0.5, nll="token"), (PC, PR), None, nll_scale=scale)
    assert parts["nll"].mean().item() == pytest.approx(15.0 / 7.0)  # (12 + 3) / (6 + 1)
    assert tok.mean().item() == pytest.approx(
        15.0 / 7.0 + 0.5 * orpo_loss(PC.mean, PR.mean, -PC.mean, lam=1).odds_ratio_loss.mean().item()
    )


def test_kto_reads_sums_and_reports_per_label_means():
    cfg = KTOLoss(beta=0.1, desirable_weight=1.0, undesirable_weight=2.0)
    desirable = torch.tensor([True, False])
    kl = torch.tensor(0.3)
    loss, parts = unit_losses(cfg, (PC,), (RC,), desirable=desirable, kl=kl)
    want = kto_loss(PC.sum, RC.sum, desirable, kl, beta=0.1, desirable_weight=1.0, undesirable_weight=2.0)
    assert torch.allclose(loss, want.loss)
    sums = {k: v.sum().item() for k, v in parts.items()}
    logged = summarise(sums, 2)
    assert logged["rewards/chosen"] == pytest.approx(0.1 * (-12.0 + 11.0))  # the desirable row only
    assert logged["rewards/rejected"] == pytest.approx(0.1 * (-3.0 + 2.5))  # the undesirable row only
    assert logged["rewards/margins"] == pytest.approx(logged["rewards/chosen"] - logged["rewards/rejected"])
    # row 0 (desirable): r = -0.1 < β·z0 = 0.03 -> wrong; row 1 (undesirable): r = -0.05 < 0.03 -> right
    assert logged["rewards/accuracy"] == 0.5
