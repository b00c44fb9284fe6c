"""Tier (a): the KL estimators (k1, k2, k3) and the KL coefficient's controllers, against values worked out by
hand and a Monte Carlo check of the estimators' bias."""

import math

import pytest
import torch

from alignkit.rl.kl import AdaptiveKLController, FixedKLController, kl_penalty


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


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
    # k2 = (log r)²/2 is biased: here log r ~ N(-μ²/2, μ²), so E[k2] = (μ² + μ⁴/4) / 2 = 0.1328125, not 0.125
    k2 = kl_penalty(logp, ref, "k2")
    assert k2.mean().item() == pytest.approx(0.1328125, abs=3e-3)
    assert abs(k2.mean().item() - 0.125) > 4e-3
    assert (k2 >= 0).all() and k2.std() < k1.std()


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
