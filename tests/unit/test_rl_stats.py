"""Tier (a): masked variance and whitening, score normalisation, explained variance and running moments,
against values worked out by hand (or numpy over the concatenation)."""

import math

import numpy as np
import pytest
import torch

from alignkit.rl.aggregate import masked_mean
from alignkit.rl.stats import RunningMoments, explained_variance, masked_var, masked_whiten, normalize_scores


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


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


def test_normalize_scores():
    s = torch.tensor([1.0, 3.0, 10.0])
    torch.testing.assert_close(normalize_scores(s, 2.0, 2.0, None), torch.tensor([-0.5, 0.5, 4.0]))  # (s-2)/2
    torch.testing.assert_close(normalize_scores(s, 2.0, 2.0, 3.0), torch.tensor([-0.5, 0.5, 3.0]))  # 4 -> 3
    torch.testing.assert_close(normalize_scores(s, None, None, 2.0), torch.tensor([1.0, 2.0, 2.0]))
    torch.testing.assert_close(normalize_scores(s, 1.0, None, None), torch.tensor([0.0, 2.0, 9.0]))
    torch.testing.assert_close(normalize_scores(s, None, None, None), s)
    with pytest.raises(ValueError):
        normalize_scores(s, 0.0, 0.0, None)


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
