"""Tier (a): ``group_advantages`` (every estimator and scale), ``group_std`` and DAPO's overlong penalty,
against values worked out by hand."""

import math

import pytest
import torch

from alignkit.rl.advantages import group_advantages, group_std, overlong_penalty

# two groups of G = 4: one right answer of four, then four equal answers (no signal)
R = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])


def test_grpo_group_scale_by_hand():
    # group 1: mean 0.25; unbiased std: sqrt((0.75² + 3·0.25²) / 3) = sqrt(0.25) = 0.5
    got = group_advantages(R, 4, "grpo", "group")
    e = 1e-4
    want = [0.75 / (0.5 + e), -0.25 / (0.5 + e), -0.25 / (0.5 + e), -0.25 / (0.5 + e), 0, 0, 0, 0]
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_grpo_batch_scale_by_hand():
    # the std of all 8 rewards: mean 1.125, Σ(dev²) = 0.015625 + 3·1.265625 + 4·0.765625 = 6.875, /7
    std = math.sqrt(6.875 / 7)
    got = group_advantages(R, 4, "grpo", "batch")
    want = [d / (std + 1e-4) for d in (0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert std == pytest.approx(R.std().item())  # torch.std is the unbiased one


def test_grpo_scale_none_and_dr_grpo_are_the_centred_rewards():
    want = [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]
    assert group_advantages(R, 4, "grpo", "none").tolist() == pytest.approx(want)
    assert group_advantages(R, 4, "dr_grpo").tolist() == pytest.approx(want)
    assert group_advantages(R, 4, "dr_grpo", "none").tolist() == pytest.approx(want)


def test_rloo_leave_one_out_by_hand():
    # 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3; the equal group gets 0
    got = group_advantages(R, 4, "rloo")
    assert got.tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0])


def test_group_layout_and_settings_are_checked():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(R[:7], 4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(R, 1, "grpo")
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(R, 1, "rloo")
    with pytest.raises(ValueError, match="scale 'batch' is for the grpo"):
        group_advantages(R, 4, "rloo", "batch")
    with pytest.raises(ValueError, match="estimator must be"):
        group_advantages(R, 4, "ppo")
    # Dr. GRPO's group of one is defined (advantage 0)
    assert group_advantages(R, 1, "dr_grpo").tolist() == [0.0] * 8


def test_group_advantages_sum_to_zero_per_group():
    r = torch.randn(24)
    for est in ("grpo", "dr_grpo", "rloo"):
        a = group_advantages(r, 6, est).view(4, 6)
        assert a.sum(-1).abs().max().item() < 1e-5


def test_group_std():
    assert group_std(R, 4).tolist() == pytest.approx([0.5, 0.0])


def test_overlong_penalty_by_hand():
    # max_len 10, buffer 4: free up to 6 tokens, then a ramp to -1 at 10, -1 beyond
    got = overlong_penalty(torch.tensor([3, 6, 7, 10, 12]), 10, 4)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.25, -1.0, -1.0])
    assert overlong_penalty(torch.tensor([8]), 10, 4, factor=0.5).tolist() == pytest.approx([-0.25])
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(torch.tensor([1]), 10, 11)


def test_critic_free_reinforce_pp_baseline_by_hand():
    from alignkit.rl.advantages import critic_free_advantages

    # groups of 2: (1, 0) and (3, 3); the group mean subtracted: 0.5, -0.5, 0, 0; one token each, so the returns
    # are those; whitened over the 4 tokens: mean 0, biased variance (0.25 + 0.25) / 4 = 0.125
    adv, rewards = critic_free_advantages(
        torch.tensor([1.0, 0.0, 3.0, 3.0]), torch.ones(4, 1), estimator="reinforce_pp_baseline", group_size=2
    )
    s = math.sqrt(0.125)
    assert adv.flatten().tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0], abs=1e-5)
    assert rewards.flatten().tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])


def test_critic_free_rloo_with_the_kl_in_the_reward_by_hand():
    from alignkit.rl.advantages import critic_free_advantages

    kl = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    adv, rewards = critic_free_advantages(
        torch.tensor([1.0, 0.0]), torch.ones(2, 2), estimator="rloo", group_size=2, kl=kl, kl_coef=0.2
    )
    # rewards with the summed k1: 1 - 0.2·1.0 = 0.8 and 0; leave-one-out: 0.8 - 0 and 0 - 0.8, on every token
    assert adv.tolist() == [pytest.approx([0.8, 0.8]), pytest.approx([-0.8, -0.8])]
    assert rewards.tolist() == [pytest.approx([-0.1, 0.9]), pytest.approx([0.0, 0.0])]


def test_critic_free_reinforce_pp_with_kl_by_hand():
    from alignkit.rl.advantages import critic_free_advantages

    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    kl = torch.tensor([[0.5, 0.5], [0.2, 9.0]])  # 9.0 is padding
    adv, rewards = critic_free_advantages(
        torch.tensor([1.0, 0.0]), mask, estimator="reinforce_pp", group_size=1, kl=kl, kl_coef=0.2
    )
    # per-token rewards: row 0 -0.1, -0.1 + 1; row 1 -0.04; returns 0.8, 0.9 and -0.04, whitened over 3 tokens
    returns = [0.8, 0.9, -0.04]
    mean = sum(returns) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in returns) / 3)
    want = [(x - mean) / std for x in returns]
    assert [adv[0, 0].item(), adv[0, 1].item(), adv[1, 0].item()] == pytest.approx(want, abs=1e-5)
    assert adv[1, 1].item() == 0.0
    assert rewards.tolist() == [pytest.approx([-0.1, 0.9]), pytest.approx([-0.04, 0.0])]


def test_critic_free_group_estimators_equal_group_advantages_without_kl():
    from alignkit.rl.advantages import critic_free_advantages

    mask = torch.tensor([[1.0, 1.0, 0.0]] * 8)
    for est in ("grpo", "dr_grpo", "rloo"):
        adv, _ = critic_free_advantages(R, mask, estimator=est, group_size=4)
        torch.testing.assert_close(adv[:, 0], group_advantages(R, 4, est))
        assert adv[:, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="estimator must be one of"):
        critic_free_advantages(R, mask, estimator="ppo", group_size=4)
