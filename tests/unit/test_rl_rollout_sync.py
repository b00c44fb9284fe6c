"""The checks on a separate rollout engine, against hand-computed values: the sync check (gap and "did the push
move anything"), the trainer-vs-engine log-prob gap, and truncated importance weights."""

import math

import pytest
import torch

from alignkit.rl.rollout_sync import check_sync, logprob_gap, truncated_is_weights

MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # 3 probe tokens


def test_gap_is_the_mean_absolute_difference_over_the_probe_tokens():
    trainer = torch.tensor([[-1.0, -2.0, 9.0], [-0.5, 7.0, 7.0]])
    engine = torch.tensor([[-1.1, -1.8, 0.0], [-0.5, 0.0, 0.0]])
    c = check_sync(trainer, engine, MASK, tolerance=0.2)
    assert c.gap == pytest.approx((0.1 + 0.2 + 0.0) / 3)  # padding (9, 7) ignored
    assert c.ok and c.trainer_moved is None
    bad = check_sync(trainer, engine, MASK, tolerance=0.05)
    assert not bad.ok and "differ from the trainer's by 0.1" in bad.problem


def test_a_push_that_changed_nothing_is_caught_even_below_the_tolerance():
    before = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    after = before + torch.tensor([[0.01, -0.02, 0.0], [0.03, 0.0, 0.0]])  # the trainer moved by 0.02 on average
    stale = check_sync(after, before, MASK, tolerance=0.05, previous=(before, before))
    assert stale.gap == pytest.approx(0.02) and stale.gap < 0.05  # the gap alone would pass
    assert stale.trainer_moved == pytest.approx(0.02) and stale.engine_moved == 0.0
    assert not stale.ok and "changed nothing" in stale.problem
    synced = check_sync(after, after + 1e-4 * MASK, MASK, tolerance=0.05, previous=(before, before))
    assert synced.ok and synced.engine_moved == pytest.approx((0.0101 + 0.0199 + 0.0301) / 3, rel=1e-5)  # float32
    # below min_move (an update too small to see) the second check stays quiet
    tiny = before + 1e-4 * MASK
    assert check_sync(tiny, before, MASK, tolerance=0.05, previous=(before, before)).ok


def test_logprob_gap_and_truncated_importance_weights():
    trainer = torch.tensor([[math.log(0.5), math.log(0.9), 0.0], [math.log(0.2), 0.0, 0.0]])
    engine = torch.tensor([[math.log(0.25), math.log(0.9), 0.0], [math.log(0.4), 0.0, 0.0]])
    g = logprob_gap(trainer, engine, MASK)
    ln2 = math.log(2)
    assert (
        g["mean_abs"] == pytest.approx(2 * ln2 / 3)
        and g["max_abs"] == pytest.approx(ln2)
        and g["mean"] == pytest.approx(0.0, abs=1e-7)
    )
    w = truncated_is_weights(trainer, engine, MASK, cap=1.5)
    # ratios p_trainer / p_engine: 2 -> capped at 1.5, 1, 0.5; zero off the mask
    assert torch.allclose(w, torch.tensor([[1.5, 1.0, 0.0], [0.5, 0.0, 0.0]]))
    assert not w.requires_grad
    with pytest.raises(ValueError):
        truncated_is_weights(trainer, engine, MASK, cap=0)
