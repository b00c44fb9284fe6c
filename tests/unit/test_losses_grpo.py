"""Tier (a): the clipped policy loss of the critic-free methods (clip-higher, sequence-level ratio) by hand."""

import math

import pytest
import torch

from alignkit.losses.grpo import clipped_policy_loss
from alignkit.losses.ppo import policy_loss


def _lp(values):
    return torch.tensor([values], dtype=torch.float32, requires_grad=True)


def test_token_ratio_with_clip_higher_by_hand():
    old = torch.zeros(1, 4)
    logp = _lp([math.log(1.5), math.log(0.5), 0.0, 7.0])  # the last position is padding
    adv = torch.tensor([[1.0, -1.0, 1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # r = 1.5, A = 1: min(1.5, 1.28) -> -1.28, the upper bound active; r = 0.5, A = -1: min(-0.5, -0.8) -> 0.8,
    # the lower bound active; r = 1, A = 1 -> -1; padding 0
    assert out.loss.tolist()[0] == pytest.approx([-1.28, 0.8, -1.0, 0.0])
    assert out.clipped_high.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert out.clipped_low.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    out.loss.sum().backward()
    # clipped tokens carry no gradient; the unclipped one -r·A = -1; padding 0
    assert logp.grad.tolist()[0] == pytest.approx([0.0, 0.0, -1.0, 0.0])


def test_clip_higher_lets_a_rare_good_token_grow_further():
    old = torch.zeros(1, 1)
    logp = _lp([math.log(1.25)])
    adv, mask = torch.ones(1, 1), torch.ones(1, 1)
    sym = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2)  # clipped at 1.2: flat
    asym = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)  # 1.25 < 1.28: still learning
    assert sym.loss.item() == pytest.approx(-1.2) and sym.clipped_high.item() == 1.0
    assert asym.loss.item() == pytest.approx(-1.25) and asym.clipped_high.item() == 0.0


def test_sequence_ratio_by_hand():
    old = torch.zeros(1, 3)
    logp = _lp([math.log(1.5), math.log(0.5), 0.0])
    adv, mask = torch.ones(1, 3), torch.ones(1, 3)
    out = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2, ratio_level="sequence")
    s = 0.75 ** (1 / 3)  # exp of the mean log-ratio: (log 1.5 + log 0.5 + 0) / 3
    assert out.loss.tolist()[0] == pytest.approx([-s, -s, -s])
    assert out.ratio.tolist()[0] == pytest.approx([s, s, s])
    out.loss.sum().backward()
    # d/dlogp_t of -3·s with s = exp(mean): -3 · s / 3 = -s per token
    assert logp.grad.tolist()[0] == pytest.approx([-s, -s, -s], rel=1e-5)


def test_sequence_ratio_ignores_padding():
    old = torch.zeros(1, 3)
    a = clipped_policy_loss(
        _lp([0.1, -0.05, 9.0]), old, torch.ones(1, 3), torch.tensor([[1.0, 1.0, 0.0]]), ratio_level="sequence"
    )
    s = math.exp(0.025)
    assert a.loss.tolist()[0] == pytest.approx([-s, -s, 0.0])


def test_symmetric_token_clip_equals_ppo_policy_loss():
    torch.manual_seed(0)
    logp, old, adv = torch.randn(3, 5) * 0.3, torch.randn(3, 5) * 0.3, torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    ours = clipped_policy_loss(logp, old, adv, mask, clip_low=0.2)
    ppo = policy_loss(logp, old, adv, mask, 0.2)
    torch.testing.assert_close(ours.loss, ppo.loss)
    torch.testing.assert_close(ours.clipped_low + ours.clipped_high, ppo.clipfrac)


def test_bad_settings():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_low"):
        clipped_policy_loss(x, x, x, x, clip_low=0.0)
    with pytest.raises(ValueError, match="ratio_level"):
        clipped_policy_loss(x, x, x, x, ratio_level="group")
