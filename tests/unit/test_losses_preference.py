"""Tier (a): DPO-family, SimPO, ORPO and KTO losses against values worked out by hand, and the papers' limits."""

import math

import pytest
import torch

from alignkit.losses.preference import dpo_loss, kto_loss, orpo_loss, simpo_loss


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


# π_c = -1, π_r = -2, ref_c = ref_r = -1.5  ->  h = 0.5 - (-0.5) = 1
POLICY_C, POLICY_R, REF_C, REF_R = _t(-1.0), _t(-2.0), _t(-1.5), _t(-1.5)


def _dpo(**kw):
    return dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, **kw)


def test_dpo_sigmoid_hand_computed():
    out = _dpo(beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-6)  # 0.644397
    assert out.chosen_rewards.item() == pytest.approx(0.05) and out.rejected_rewards.item() == pytest.approx(-0.05)
    assert out.margins.item() == pytest.approx(0.1) and out.accuracy.item() == 1.0


def test_conservative_dpo():
    # -(0.9 log σ(0.1) + 0.1 log σ(-0.1)) = 0.9 * 0.644397 + 0.1 * 0.744397
    assert _dpo(beta=0.1, label_smoothing=0.1).loss.item() == pytest.approx(0.654397, abs=1e-6)


def test_ipo_on_sums_vs_trl_token_means():
    """Ours is eq. 17 on sequence sums; TRL's IPO is on token means. With both completions L tokens long, TRL at β
    equals 1/L² × ours at β / L (the documented conversion), and the same β gives different losses."""
    L, beta = 8, 0.1
    pc, pr, rc, rr = _t(-10.0), _t(-14.0), _t(-12.0), _t(-12.5)  # sums over L tokens
    ours = dpo_loss(pc, pr, rc, rr, beta=beta / L, loss_type="ipo").loss
    trl = dpo_loss(pc / L, pr / L, rc / L, rr / L, beta=beta, loss_type="ipo").loss  # TRL's token-mean log-ratios
    assert trl.item() == pytest.approx(ours.item() / L**2)
    assert dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="ipo").loss.item() != pytest.approx(trl.item())


def test_ipo_hand_computed_and_target_margin():
    assert _dpo(beta=0.1, loss_type="ipo").loss.item() == pytest.approx(16.0)  # (1 - 1/(2*0.1))² = (1-5)²
    # the minimum sits at h = 1/(2β): zero loss and zero gradient there
    pc = torch.tensor([0.0], requires_grad=True)
    out = dpo_loss(pc, _t(-5.0), _t(0.0), _t(0.0), beta=0.1, loss_type="ipo")  # h = 5 = 1/(2β)
    out.loss.sum().backward()
    assert out.loss.item() == pytest.approx(0.0) and pc.grad.item() == pytest.approx(0.0)


def test_hinge():
    assert _dpo(beta=0.1, loss_type="hinge").loss.item() == pytest.approx(0.9)  # max(0, 1 - 0.1)
    far = dpo_loss(_t(0.0), _t(-20.0), _t(0.0), _t(0.0), beta=0.1, loss_type="hinge")
    assert far.loss.item() == 0.0  # β h = 2 > 1


def test_robust_dpo():
    # (0.9 * 0.644397 + 0.1 * log σ(-0.1)) / 0.8 = (0.579957 - 0.074440) / 0.8
    assert _dpo(beta=0.1, loss_type="robust", label_smoothing=0.1).loss.item() == pytest.approx(0.631897, abs=1e-6)
    assert _dpo(beta=0.1, loss_type="robust").loss.item() == pytest.approx(_dpo(beta=0.1).loss.item())  # ε = 0: DPO


def test_robust_dpo_is_unbiased_under_label_flips():
    # E over a flip with probability ε of the robust loss = the clean sigmoid loss (Chowdhury et al. 2024, Lemma 3.1)
    eps, beta = 0.2, 0.5
    clean = dpo_loss(_t(0.3), _t(-0.4), _t(0.0), _t(0.0), beta=beta).loss
    kept = dpo_loss(_t(0.3), _t(-0.4), _t(0.0), _t(0.0), beta=beta, loss_type="robust", label_smoothing=eps).loss
    flipped = dpo_loss(_t(-0.4), _t(0.3), _t(0.0), _t(0.0), beta=beta, loss_type="robust", label_smoothing=eps).loss
    assert ((1 - eps) * kept + eps * flipped).item() == pytest.approx(clean.item(), abs=1e-6)


def test_dpo_small_beta_limit():
    # β -> 0: loss -> log 2 - β h / 2 (first order), and the gradient w.r.t. h -> -β / 2
    beta = 1e-4
    pc = torch.tensor([-1.0], requires_grad=True)
    out = dpo_loss(pc, POLICY_R, REF_C, REF_R, beta=beta)
    out.loss.sum().backward()
    assert out.loss.item() == pytest.approx(math.log(2) - beta * 1.0 / 2, abs=1e-7)
    assert pc.grad.item() == pytest.approx(-beta / 2, rel=1e-3)


def test_simpo_hand_computed():
    # per-token mean log-probs: β=2, γ=0.5 -> x = 2(-0.5) - 2(-1) - 0.5 = 0.5 -> -log σ(0.5)
    out = simpo_loss(_t(-0.5), _t(-1.0), beta=2.0, gamma=0.5)
    assert out.loss.item() == pytest.approx(0.474077, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(-1.0) and out.rejected_rewards.item() == pytest.approx(-2.0)


def test_orpo_hand_computed():
    # mean log-probs log .5 and log .25: odds 1 and 1/3, log odds ratio log 3, -log σ(log 3) = log(4/3)
    out = orpo_loss(_t(math.log(0.5)), _t(math.log(0.25)), _t(2.0), lam=0.1)
    assert out.log_odds_ratio.item() == pytest.approx(math.log(3), abs=1e-6)
    assert out.odds_ratio_loss.item() == pytest.approx(math.log(4 / 3), abs=1e-6)  # 0.287682
    assert out.loss.item() == pytest.approx(2.0 + 0.1 * math.log(4 / 3), abs=1e-6)
    # λ = 0 is plain SFT on the chosen completion
    assert orpo_loss(_t(-0.7), _t(-1.4), _t(2.0), lam=0.0).loss.item() == pytest.approx(2.0)
    # finite even when a mean log-prob is 0 (p = 1)
    assert torch.isfinite(orpo_loss(_t(0.0), _t(-1.0), _t(0.0), lam=1.0).loss).all()


def test_kto_hand_computed():
    out = kto_loss(
        _t(1.0, -1.0),
        _t(0.0, 0.0),
        torch.tensor([True, False]),
        torch.tensor(0.2),
        beta=0.5,
        desirable_weight=1.0,
        undesirable_weight=1.5,
    )
    # desirable: 1 - σ(0.5 (1 - 0.2)) = 1 - σ(0.4); undesirable: 1.5 (1 - σ(0.5 (0.2 + 1))) = 1.5 (1 - σ(0.6))
    expected = [1 - _sig(0.4), 1.5 * (1 - _sig(0.6))]  # 0.401312, 0.531516
    torch.testing.assert_close(out.loss, torch.tensor(expected))
    torch.testing.assert_close(out.rewards, torch.tensor([0.5, -0.5]))
    # a negative KL estimate is clamped to 0, and it carries no gradient
    kl = torch.tensor(-1.0, requires_grad=True)
    clamped = kto_loss(_t(1.0), _t(0.0), torch.tensor([True]), kl, beta=0.5)
    assert clamped.kl.item() == 0.0 and clamped.loss.item() == pytest.approx(1 - _sig(0.5))
    assert not clamped.loss.requires_grad


@pytest.mark.parametrize(
    "fn, kw",
    [
        (lambda **k: _dpo(**k), {"beta": 0.0}),
        (lambda **k: _dpo(**k), {"beta": 0.1, "loss_type": "nope"}),
        (lambda **k: _dpo(**k), {"beta": 0.1, "label_smoothing": 0.5}),
        (lambda **k: simpo_loss(_t(0.0), _t(0.0), **k), {"beta": -1.0, "gamma": 0.5}),
        (lambda **k: orpo_loss(_t(-1.0), _t(-1.0), _t(0.0), **k), {"lam": -0.1}),
    ],
)
def test_bad_hyper_parameters(fn, kw):
    with pytest.raises(ValueError):
        fn(**kw)


def test_losses_are_per_example():
    b = 3
    out = dpo_loss(torch.randn(b), torch.randn(b), torch.randn(b), torch.randn(b), beta=0.1)
    assert out.loss.shape == (b,)
    assert simpo_loss(torch.randn(b), torch.randn(b), beta=2.0, gamma=0.5).loss.shape == (b,)
