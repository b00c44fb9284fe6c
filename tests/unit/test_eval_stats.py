"""Tier (a): win rate, standard error and the percentile bootstrap against hand-computed values."""

import math

import numpy as np
import pytest

from alignkit.eval.stats import bootstrap_ci, mean, mean_se, win_rate


def test_win_rate_counts_ties_as_half():
    # a beats b on prompt 0, ties on 1, loses on 2, beats on 3: (1 + 0.5 + 0 + 1) / 4
    assert win_rate([2.0, 1.0, 0.0, 5.0], [1.0, 1.0, 3.0, -1.0]) == pytest.approx(2.5 / 4)
    assert win_rate([1.0, 2.0], [1.0, 2.0]) == 0.5
    assert win_rate([3.0], [2.0]) == 1.0
    assert win_rate([3.0, 3.0], [4.0, 5.0]) == 0.0


def test_win_rate_is_symmetric():
    a, b = [0.1, 0.7, 0.3, 0.3], [0.2, 0.5, 0.3, 0.9]
    assert win_rate(a, b) + win_rate(b, a) == pytest.approx(1.0)


def test_win_rate_rejects_unpaired_or_empty():
    with pytest.raises(ValueError):
        win_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        win_rate([], [])


def test_mean_se_by_hand():
    # values 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, se = sqrt(14/3 / 4)
    m, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0
    assert se == pytest.approx(math.sqrt(14 / 3 / 4))
    assert mean_se([5.0]) == (5.0, None)
    assert mean_se([2.0, 2.0]) == (2.0, 0.0)


def test_ci_contains_the_estimate():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.3, 1, 50), rng.normal(0, 1, 50)
    low, high = bootstrap_ci(win_rate, a, b)
    assert low <= win_rate(a, b) <= high
    low, high = bootstrap_ci(mean, a)
    assert low <= a.mean() <= high
    assert low < high


def test_ci_is_degenerate_when_every_prompt_gives_the_same_value():
    a = [1.0, 5.0, -2.0, 0.5]
    assert bootstrap_ci(win_rate, [x + 1 for x in a], a) == (1.0, 1.0)  # a always wins
    assert bootstrap_ci(win_rate, a, a) == (0.5, 0.5)  # identical models: every prompt a tie
    assert bootstrap_ci(mean, [0.25] * 7) == (0.25, 0.25)


def test_ci_shrinks_with_more_prompts():
    pattern = [0.0, 1.0, 1.0, 0.0, 1.0]
    widths = []
    for reps in (2, 20, 200):
        low, high = bootstrap_ci(mean, pattern * reps)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_ci_is_reproducible_by_seed():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert bootstrap_ci(win_rate, a, b, seed=3) == bootstrap_ci(win_rate, a, b, seed=3)
    assert bootstrap_ci(mean, a, seed=3) != bootstrap_ci(mean, a, seed=4)


def test_bootstrap_matches_the_exact_resampling_distribution():
    # Values (0, 0, 1): a resample's mean is k/3 with k ~ Binomial(3, 1/3):
    # P(0) = 8/27 = .296, P(1/3) = 12/27, P(2/3) = 6/27, P(1) = 1/27 = .037.
    # So the 5% quantile is 0 and the 95% quantile is 2/3 (P(mean <= 2/3) = 26/27 = .963 > .95).
    assert bootstrap_ci(mean, [0.0, 0.0, 1.0], n_boot=4000, level=0.90) == pytest.approx((0.0, 2 / 3))
    # Win rate of (1, 0) vs (0, 1): the per-prompt outcomes are (1, 0); resampled win rate is 0, 1/2 or 1
    # with probabilities 1/4, 1/2, 1/4, so the 95% interval spans (0, 1) and the 50% interval is (1/2, 1/2).
    assert bootstrap_ci(win_rate, [1.0, 0.0], [0.0, 1.0], n_boot=4000) == (0.0, 1.0)
    assert bootstrap_ci(win_rate, [1.0, 0.0], [0.0, 1.0], n_boot=4000, level=0.5) == (0.5, 0.5)


def test_bootstrap_width_agrees_with_the_normal_approximation():
    # For a mean over n prompts the 95% interval is about ±1.96 s / sqrt(n).
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, 400)
    low, high = bootstrap_ci(mean, x, n_boot=2000)
    expected = 2 * 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert high - low == pytest.approx(expected, rel=0.15)
    assert (low + high) / 2 == pytest.approx(x.mean(), abs=0.05)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci(win_rate, [1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        bootstrap_ci(mean, [])
    with pytest.raises(ValueError):
        bootstrap_ci(mean, [1.0], level=1.0)
