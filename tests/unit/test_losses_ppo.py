"""Tier (a): PPO's losses (clipped policy and value losses, entropy) against values worked out by hand. The rest
of PPO's maths is tested with its module: tests/unit/test_rl_*.py."""

import math

import pytest
import torch

from alignkit.losses.ppo import entropy_from_logits, policy_loss, value_loss


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_policy_loss_hand_computed():
    # ε = 0.2; tokens:   a: r=1.1, A=2 (inside the clip range)       -> -A r = -2.2, active: unclipped
    #                    b: r=1.5, A=2 (above 1+ε, good action)      -> max(-3, -2.4) = -2.4, clipped, flat
    #                    c: r=0.5, A=2 (below 1-ε, good action)      -> max(-1, -1.6) = -1, unclipped (pessimistic)
    #                    d: r=0.5, A=-1 (below 1-ε, bad action)      -> max(0.5, 0.8) = 0.8, clipped, flat
    #                    e: masked out, log-prob -inf               -> 0
    ratios = [1.1, 1.5, 0.5, 0.5]
    logp = torch.tensor([[math.log(r) for r in ratios] + [-math.inf]], requires_grad=True)
    old = torch.zeros(1, 5)
    adv = _t([2.0, 2.0, 2.0, -1.0, 5.0])
    mask = _t([1, 1, 1, 1, 0])
    out = policy_loss(logp, old, adv, mask, clip_range=0.2)
    torch.testing.assert_close(out.loss, _t([-2.2, -2.4, -1.0, 0.8, 0.0]))
    torch.testing.assert_close(out.clipfrac, _t([0.0, 1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(out.approx_kl, 0.5 * _t([math.log(r) ** 2 for r in ratios] + [0.0]))
    out.loss.sum().backward()
    # d(-A r)/d logp = -A r where unclipped; 0 where the clipped branch is active or masked out
    torch.testing.assert_close(logp.grad, _t([-2.2, 0.0, -1.0, 0.0, 0.0]))
    assert not out.clipfrac.requires_grad and not out.approx_kl.requires_grad


def test_policy_loss_on_policy_is_minus_advantage():
    # first epoch, logp == old_logp: r = 1, loss = -A, gradient -A, nothing clipped
    logp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    adv = _t([0.3, -1.2, 2.0])
    out = policy_loss(logp, logp.detach().clone(), adv, torch.ones(1, 3), clip_range=0.2)
    out.loss.sum().backward()
    torch.testing.assert_close(out.loss, -adv)
    torch.testing.assert_close(logp.grad, -adv)
    assert out.clipfrac.sum() == 0 and out.approx_kl.sum() == 0


def test_value_loss_hand_computed():
    # ε = 0.2; a: V=1, V_old=0.9, R=1.5: clip(V)=1 -> 0.5 * 0.5² = 0.125
    #          b: V=2, V_old=1,   R=1:   clip(V)=1.2, errors 1 vs 0.04 -> 0.5 * 1 = 0.5, unclipped active
    #          c: V=2, V_old=1,   R=3:   clip(V)=1.2, errors 1 vs 3.24 -> 0.5 * 3.24 = 1.62, clipped active (flat)
    #          d: masked out
    v = torch.tensor([[1.0, 2.0, 2.0, 9.0]], requires_grad=True)
    old, ret, mask = _t([0.9, 1.0, 1.0, 0.0]), _t([1.5, 1.0, 3.0, 0.0]), _t([1, 1, 1, 0])
    out = value_loss(v, old, ret, mask, clip_range_value=0.2)
    torch.testing.assert_close(out.loss, _t([0.125, 0.5, 1.62, 0.0]))
    torch.testing.assert_close(out.clipfrac, _t([0.0, 0.0, 1.0, 0.0]))
    out.loss.sum().backward()
    torch.testing.assert_close(v.grad, _t([-0.5, 1.0, 0.0, 0.0]))  # V - R where unclipped active


@pytest.mark.parametrize(
    "fn",
    [
        lambda: policy_loss(*[torch.zeros(1, 2)] * 4, clip_range=0.0),
        lambda: value_loss(*[torch.zeros(1, 2)] * 4, clip_range_value=-1.0),
    ],
)
def test_losses_reject_bad_clip_ranges(fn):
    with pytest.raises(ValueError):
        fn()


def test_entropy_from_logits():
    assert entropy_from_logits(torch.zeros(7)).item() == pytest.approx(math.log(7))  # uniform: log V
    torch.testing.assert_close(entropy_from_logits(torch.full((2, 3, 7), 1000.0)), torch.full((2, 3), math.log(7)))
    # p = [1/4, 3/4]: H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335
    assert entropy_from_logits(torch.tensor([0.0, math.log(3)])).item() == pytest.approx(0.562335, abs=1e-6)
    # -inf logits contribute 0, and so does a one-hot distribution
    logits = torch.tensor([0.0, math.log(3), -math.inf], requires_grad=True)
    h = entropy_from_logits(logits)
    h.backward()
    assert h.item() == pytest.approx(0.562335, abs=1e-6) and torch.isfinite(logits.grad).all()
    assert entropy_from_logits(torch.tensor([0.0, -math.inf])).item() == 0.0


def test_losses_are_per_token():
    b, t = 3, 4
    x, mask = torch.randn(b, t), torch.ones(b, t)
    assert policy_loss(x, torch.randn(b, t), torch.randn(b, t), mask, clip_range=0.2).loss.shape == (b, t)
    assert value_loss(x, torch.randn(b, t), torch.randn(b, t), mask, clip_range_value=0.2).loss.shape == (b, t)
    assert entropy_from_logits(torch.randn(b, t, 11)).shape == (b, t)
