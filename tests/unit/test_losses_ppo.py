"""Tier (a): PPO's pieces (masked statistics, KL penalty and controllers, token rewards, GAE, clipped
policy and value losses, entropy, explained variance, running moments) against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from alignkit.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty,
    masked_mean,
    masked_var,
    masked_whiten,
    normalize_scores,
    policy_loss,
    token_rewards,
    value_loss,
)


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------------------------------- masked stats


def test_masked_mean():
    x, m = _t([1.0, 2.0], [3.0, 100.0]), _t([1, 1], [1, 0])
    assert masked_mean(x, m).item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3; the 100 is masked out
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 3.0]))
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0  # all-zero mask: 0, not NaN
    torch.testing.assert_close(masked_mean(x, _t([0, 0], [1, 0]), dim=1), torch.tensor([0.0, 3.0]))


def test_masked_var():
    x, m = torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    # mean 2, squared deviations 1, 0, 1: biased 2/3, unbiased 2/2 = 1
    assert masked_var(x, m).item() == pytest.approx(1.0)
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(2 / 3)
    assert masked_var(x, torch.tensor([0.0, 1.0, 0.0, 0.0])).item() == 0.0  # one entry: no spread, not NaN


def test_masked_whiten():
    x, m = torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    # (x - 2) / sqrt(1 + eps); the masked-out entry is 0
    torch.testing.assert_close(masked_whiten(x, m), torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False), torch.tensor([1.0, 2.0, 3.0, 0.0]))
    # random input: zero mean and unit (unbiased) variance on the masked entries
    g = torch.Generator().manual_seed(0)
    x = 5 + 3 * torch.randn(4, 6, generator=g)
    m = (torch.arange(6) < torch.tensor([[6], [3], [1], [5]])).float()
    w = masked_whiten(x, m)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, m).item() == pytest.approx(1.0, abs=1e-5)
    assert (w[m == 0] == 0).all()
    s = masked_whiten(x, m, shift_mean=False)  # same scale, mean kept
    assert masked_mean(s, m).item() == pytest.approx(masked_mean(x, m).item(), abs=1e-5)


# ---------------------------------------------------------------------------------------- KL


def test_kl_penalty_hand_computed():
    logp, ref = _t([-1.0, -2.0]), _t([-1.5, -1.0])
    # k1 = logp - ref = [0.5, -1.0]
    torch.testing.assert_close(kl_penalty(logp, ref), _t([0.5, -1.0]))
    # log r = ref - logp = [-0.5, 1.0]; k3 = e^{log r} - 1 - log r
    k3 = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]  # [0.106531, 0.718282]
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), _t(k3))
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), _t([0.125, 0.5]))  # (log r)² / 2
    # k3 is non-negative everywhere (log r <= r - 1), 0 exactly when the log-probs agree
    d = torch.linspace(-20, 20, 401)
    assert (kl_penalty(d[None], torch.zeros(1, 401), "k3") >= 0).all()
    assert kl_penalty(_t([-3.0]), _t([-3.0]), "k3").item() == 0.0
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")


def test_kl_estimators_are_unbiased_monte_carlo():
    # π = N(0.5, 1), π_ref = N(0, 1): KL(π || π_ref) = 0.5² / 2 = 0.125. 100k samples from π, seed 0.
    # Standard errors of the mean: k3 ≈ 6e-4, k1 ≈ 1.6e-3; tolerances are ~5 standard errors.
    mu, n = 0.5, 100_000
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)) + mu
    logp, ref = (-0.5 * (x - mu) ** 2)[None], (-0.5 * x**2)[None]  # the shared normaliser cancels
    k1, k3 = kl_penalty(logp, ref, "k1"), kl_penalty(logp, ref, "k3")
    assert k3.mean().item() == pytest.approx(0.125, abs=3e-3)
    assert k1.mean().item() == pytest.approx(0.125, abs=8e-3)
    assert k3.std() < k1.std()  # the point of k3: same mean, lower variance


def test_fixed_kl_controller():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 256)
    assert ctl.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    # KL 6.6 above target 6: e = 6.6/6 - 1 = 0.1, K = 256/10000 = 0.0256 -> β = 0.2 (1 + 0.00256) = 0.200512
    ctl.update(6.6, 256)
    assert ctl.value == pytest.approx(0.200512)
    # KL 9: e = 0.5 clipped to 0.2 -> β *= 1 + 0.2 * 0.0256 = 1.00512
    ctl.update(9.0, 256)
    assert ctl.value == pytest.approx(0.200512 * 1.00512)
    # KL 0: e = -1 clipped to -0.2 -> β *= 0.99488; a 0-d tensor is accepted as the KL
    before = ctl.value
    ctl.update(torch.tensor(0.0), 256)
    assert ctl.value == pytest.approx(before * 0.99488)
    # on target: unchanged
    before = ctl.value
    ctl.update(6.0, 256)
    assert ctl.value == pytest.approx(before)
    # state round-trips
    fresh = AdaptiveKLController(init_kl_coef=1.0, target=6.0, horizon=10_000)
    fresh.load_state_dict(ctl.state_dict())
    assert fresh.value == ctl.value
    fresh.update(7.0, 100), ctl.update(7.0, 100)
    assert fresh.value == ctl.value


@pytest.mark.parametrize("kw", [{"init_kl_coef": -0.1}, {"target": 0.0}, {"horizon": 0}])
def test_adaptive_kl_controller_rejects_bad_arguments(kw):
    with pytest.raises(ValueError):
        AdaptiveKLController(**({"init_kl_coef": 0.1, "target": 6.0, "horizon": 100} | kw))


# ---------------------------------------------------------------------------------------- rewards


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


def test_normalize_scores():
    s = torch.tensor([1.0, 3.0, 10.0])
    torch.testing.assert_close(normalize_scores(s, 2.0, 2.0, None), torch.tensor([-0.5, 0.5, 4.0]))  # (s-2)/2
    torch.testing.assert_close(normalize_scores(s, 2.0, 2.0, 3.0), torch.tensor([-0.5, 0.5, 3.0]))  # 4 -> 3
    torch.testing.assert_close(normalize_scores(s, None, None, 2.0), torch.tensor([1.0, 2.0, 2.0]))
    torch.testing.assert_close(normalize_scores(s, 1.0, None, None), torch.tensor([0.0, 2.0, 9.0]))
    torch.testing.assert_close(normalize_scores(s, None, None, None), s)
    with pytest.raises(ValueError):
        normalize_scores(s, 0.0, 0.0, None)


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


# ---------------------------------------------------------------------------------------- PPO losses


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


# ---------------------------------------------------------------------------------------- metrics


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


def test_explained_variance():
    ret, mask = _t([1.0, 2.0, 3.0, 4.0, 0.0]), _t([1, 1, 1, 1, 0])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)  # perfect values
    assert explained_variance(_t([2.5, 2.5, 2.5, 2.5, 99.0]), ret, mask) == pytest.approx(0.0)  # the mean
    assert explained_variance(torch.zeros(1, 5), ret, mask) == pytest.approx(0.0)  # V = 0: Var[R - 0] = Var[R]
    assert explained_variance(ret + 1, ret, mask) == pytest.approx(1.0)  # a constant offset: Var[R - V] = 0
    # V = [4, 3, 2, 1]: R - V = [-3, -1, 1, 3], Var = 5 vs Var[R] = 1.25 -> 1 - 4 = -3
    assert explained_variance(_t([4.0, 3.0, 2.0, 1.0, 0.0]), ret, mask) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(ret, torch.ones(1, 5), torch.ones(1, 5)))  # Var[R] = 0


def test_running_moments_match_numpy_over_the_concatenation():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=n) for n in (5, 1, 17, 8)]
    rm = RunningMoments()
    assert (rm.mean, rm.std) == (0.0, 1.0)  # fresh: normalising changes nothing
    for b in batches:
        bm, bs = rm.update(torch.tensor(b, dtype=torch.float32))
        assert bm == pytest.approx(b.mean(), abs=1e-6)
        assert bs == pytest.approx(b.std(ddof=1) if b.size > 1 else 0.0, abs=1e-6)
    allx = np.concatenate(batches).astype(np.float32).astype(np.float64)
    assert rm.count == allx.size
    assert rm.mean == pytest.approx(allx.mean(), abs=1e-9)
    assert rm.std == pytest.approx(allx.std(ddof=1), abs=1e-9)
    clone = RunningMoments()
    clone.load_state_dict(rm.state_dict())
    assert (clone.mean, clone.std, clone.count) == (rm.mean, rm.std, rm.count)
    with pytest.raises(ValueError):
        rm.update(torch.tensor([]))


def test_losses_are_per_token():
    b, t = 3, 4
    x, mask = torch.randn(b, t), torch.ones(b, t)
    assert policy_loss(x, torch.randn(b, t), torch.randn(b, t), mask, clip_range=0.2).loss.shape == (b, t)
    assert value_loss(x, torch.randn(b, t), torch.randn(b, t), mask, clip_range_value=0.2).loss.shape == (b, t)
    assert kl_penalty(torch.randn(b, t), torch.randn(b, t), "k3").shape == (b, t)
    assert entropy_from_logits(torch.randn(b, t, 11)).shape == (b, t)
