"""Tier (a): per-token rewards, GAE and the critic-free advantage estimators (GRPO, Dr. GRPO, RLOO,
REINFORCE++) against values worked out by hand."""

import math

import pytest
import torch

from alignkit.rl.advantages import (
    discounted_returns,
    dr_grpo_advantages,
    gae,
    grpo_advantages,
    per_token,
    reinforce_pp_advantages,
    rloo_advantages,
    token_rewards,
)


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_token_rewards_puts_score_at_last_real_token():
    score = torch.tensor([1.0, 2.0])
    kl = _t([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    mask = _t([1, 1, 0], [1, 1, 1])
    # -0.5 * kl on real tokens; row 0's score on token 1, row 1's on token 2; 0 on padding
    expected = _t([-0.05, -0.1 + 1.0, 0.0], [-0.2, -0.25, -0.3 + 2.0])
    torch.testing.assert_close(token_rewards(score, kl, mask, 0.5), expected)
    torch.testing.assert_close(token_rewards(score, kl, mask.bool(), 0.5), expected)
    # with β = 0 only the score is left, and it sums to the score
    assert token_rewards(score, kl, mask, 0.0).sum(1).tolist() == pytest.approx([1.0, 2.0])


def test_token_rewards_rejects_an_empty_row():
    with pytest.raises(ValueError, match="all-zero mask"):
        token_rewards(torch.tensor([1.0, 2.0]), torch.zeros(2, 3), _t([1, 0, 0], [0, 0, 0]), 0.1)


# ---------------------------------------------------------------------------------------- GAE

REWARDS, VALUES = _t([1.0, 0.0, 2.0]), _t([0.5, 1.0, 1.5])


def test_gae_gamma_1_lambda_1_is_reward_to_go_minus_values():
    adv, ret = gae(REWARDS, VALUES, torch.ones(1, 3), gamma=1.0, lam=1.0)
    # reward-to-go: [1+0+2, 0+2, 2] = [3, 2, 2]; minus values [0.5, 1, 1.5]
    torch.testing.assert_close(adv, _t([2.5, 1.0, 0.5]))
    torch.testing.assert_close(ret, _t([3.0, 2.0, 2.0]))


def test_gae_hand_computed():
    adv, ret = gae(REWARDS, VALUES, torch.ones(1, 3), gamma=0.9, lam=0.95)
    # γλ = 0.855
    # t=2: δ = 2 + 0.9*0 - 1.5 = 0.5;    A = 0.5
    # t=1: δ = 0 + 0.9*1.5 - 1 = 0.35;   A = 0.35 + 0.855*0.5 = 0.7775
    # t=0: δ = 1 + 0.9*1 - 0.5 = 1.4;    A = 1.4 + 0.855*0.7775 = 2.0647625
    torch.testing.assert_close(adv, _t([2.0647625, 0.7775, 0.5]))
    torch.testing.assert_close(ret, _t([2.5647625, 1.7775, 2.0]))  # A + V
    # λ = 0: one-step TD errors δ_t
    adv0, _ = gae(REWARDS, VALUES, torch.ones(1, 3), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv0, _t([1.4, 0.35, 0.5]))


def test_gae_is_padding_invariant():
    # the same row padded with 2 masked-out tokens carrying garbage rewards and values
    rewards, values = _t([1.0, 0.0, 2.0, 100.0, -7.0]), _t([0.5, 1.0, 1.5, 50.0, 3.0])
    adv, ret = gae(rewards, values, _t([1, 1, 1, 0, 0]), gamma=0.9, lam=0.95)
    ref_adv, ref_ret = gae(REWARDS, VALUES, torch.ones(1, 3), gamma=0.9, lam=0.95)
    torch.testing.assert_close(adv[:, :3], ref_adv)
    torch.testing.assert_close(ret[:, :3], ref_ret)
    assert (adv[:, 3:] == 0).all() and (ret[:, 3:] == 0).all()
    # in a batch, each row equals its own un-padded computation
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 4]
    r, v = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    mask = (torch.arange(5) < torch.tensor(lengths)[:, None]).float()
    adv, ret = gae(r, v, mask, gamma=0.99, lam=0.9)
    for i, n in enumerate(lengths):
        row_adv, row_ret = gae(r[i : i + 1, :n], v[i : i + 1, :n], torch.ones(1, n), gamma=0.99, lam=0.9)
        torch.testing.assert_close(adv[i : i + 1, :n], row_adv)
        torch.testing.assert_close(ret[i : i + 1, :n], row_ret)
        assert (adv[i, n:] == 0).all()


def test_gae_has_no_gradient_and_checks_its_inputs():
    v = VALUES.clone().requires_grad_(True)
    adv, ret = gae(REWARDS, v, torch.ones(1, 3), gamma=1.0, lam=0.95)
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError):
        gae(REWARDS, VALUES, _t([1, 0, 1]), gamma=1.0, lam=0.95)  # not a prefix mask
    with pytest.raises(ValueError):
        gae(REWARDS, VALUES, torch.ones(1, 3), gamma=1.5, lam=0.95)


# ---------------------------------------------------------------------------------------- critic-free

SCORES = torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])  # two prompts, 3 answers each


def test_grpo_advantages_hand_computed():
    # group 1: mean 2, unbiased std 1 -> (r - 2) / (1 + eps); group 2: all equal -> 0 (eps keeps it finite)
    torch.testing.assert_close(grpo_advantages(SCORES, 3, eps=0.0)[:3], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(grpo_advantages(SCORES, 3), torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / (1 + 1e-4))
    # std 2 in a group of 2 ([0, 2√2]: mean √2, unbiased std 2) -> ±√2 / 2 = ±1/√2
    torch.testing.assert_close(
        grpo_advantages(torch.tensor([0.0, 2 * math.sqrt(2)]), 2, eps=0.0), torch.tensor([-1.0, 1.0]) / math.sqrt(2)
    )
    # invariant to a positive affine change of the scores (up to eps)
    torch.testing.assert_close(grpo_advantages(10 * SCORES + 3, 3, eps=0.0)[:3], torch.tensor([-1.0, 0.0, 1.0]))


def test_dr_grpo_advantages_hand_computed():
    # r - group mean, no division: scale is kept
    torch.testing.assert_close(dr_grpo_advantages(SCORES, 3), torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(dr_grpo_advantages(10 * SCORES, 3)[:3], torch.tensor([-10.0, 0.0, 10.0]))
    torch.testing.assert_close(dr_grpo_advantages(torch.tensor([5.0, 7.0]), 1), torch.zeros(2))  # a group of one: 0


def test_rloo_advantages_hand_computed():
    # group [1, 2, 3]: 1 - (2+3)/2 = -1.5, 2 - (1+3)/2 = 0, 3 - (1+2)/2 = 1.5 (= k/(k-1) × (r - mean))
    torch.testing.assert_close(rloo_advantages(SCORES, 3), torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    # group of 2: each against the other
    torch.testing.assert_close(rloo_advantages(torch.tensor([1.0, 4.0]), 2), torch.tensor([-3.0, 3.0]))
    # A_0 moves by exactly the change of r_0: its baseline does not contain r_0
    a, b = rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), 3), rloo_advantages(torch.tensor([5.0, 2.0, 3.0]), 3)
    assert b[0] - a[0] == pytest.approx(4.0)


@pytest.mark.parametrize("fn", [grpo_advantages, rloo_advantages])
def test_group_estimators_check_the_layout(fn):
    with pytest.raises(ValueError, match="multiple of group_size"):
        fn(torch.ones(5), 2)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        fn(torch.ones(4), 1)
    with pytest.raises(ValueError):
        dr_grpo_advantages(torch.ones(2, 2), 2)  # scores are (B,)


def test_per_token_spreads_a_sequence_advantage_over_its_tokens():
    torch.testing.assert_close(
        per_token(torch.tensor([2.0, -1.0]), _t([1, 1, 0], [1, 0, 0])), _t([2.0, 2.0, 0.0], [-1.0, 0.0, 0.0])
    )


def test_discounted_returns_hand_computed():
    # γ = 0.5, rewards [1, 0, 2]: G2 = 2, G1 = 0 + 0.5·2 = 1, G0 = 1 + 0.5·1 = 1.5
    torch.testing.assert_close(discounted_returns(_t([1.0, 0.0, 2.0]), torch.ones(1, 3), gamma=0.5), _t([1.5, 1.0, 2.0]))
    # padding is ignored and returned as 0; γ = 1 is the reward-to-go
    got = discounted_returns(_t([1.0, 0.0, 2.0, 9.0]), _t([1, 1, 1, 0]))
    torch.testing.assert_close(got, _t([3.0, 2.0, 2.0, 0.0]))
    # = GAE with zero values and λ = 1
    g = torch.Generator().manual_seed(0)
    r, m = torch.randn(3, 6, generator=g), (torch.arange(6) < torch.tensor([[6], [2], [4]])).float()
    torch.testing.assert_close(discounted_returns(r, m, 0.9), gae(r, torch.zeros(3, 6), m, 0.9, 1.0)[0])
    with pytest.raises(ValueError):
        discounted_returns(r, _t([1, 0, 1, 0, 0, 0]).expand(3, 6))  # not a prefix mask


def test_reinforce_pp_advantages_hand_computed():
    # rewards [[0, 1], [2, pad]]: returns [[1, 1], [2, 0]]; over the 3 masked tokens mean 4/3, biased var 2/9,
    # so A = ([1, 1, 2] - 4/3) / sqrt(2/9) = [-1/√2, -1/√2, √2]
    rewards, mask = _t([0.0, 1.0], [2.0, 5.0]), _t([1, 1], [1, 0])
    adv, ret = reinforce_pp_advantages(rewards, mask)
    torch.testing.assert_close(ret, _t([1.0, 1.0], [2.0, 0.0]))
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(adv, _t([-s, -s], [math.sqrt(2), 0.0]))
    # the KL penalty enters through the per-token rewards: token_rewards(score, kl, mask, β) then the returns
    kl = _t([0.5, 0.5], [1.0, 0.0])
    _, ret = reinforce_pp_advantages(token_rewards(torch.tensor([1.0, 2.0]), kl, mask, 0.2), mask)
    torch.testing.assert_close(ret, _t([1.0 - 0.2, 1.0 - 0.1], [2.0 - 0.2, 0.0]))
    # all returns equal: no spread, advantages 0 (var clamped at eps), not NaN
    adv, _ = reinforce_pp_advantages(_t([0.0, 1.0], [1.0, 0.0]), mask)
    torch.testing.assert_close(adv, torch.zeros(2, 2))
