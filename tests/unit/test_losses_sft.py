"""Tier (a): the SFT loss and reductions against hand-computed values."""

import math

import torch

from alignkit.losses.reductions import global_token_mean, masked_mean, masked_sum
from alignkit.losses.sft import IGNORE_INDEX, sft_token_nll


def test_token_nll_hand_computed():
    # Two positions, vocab 3. Position 0: logits (0, ln 2, 0) -> softmax (1/4, 2/4, 1/4); target 1 -> -ln(1/2).
    # Position 1: uniform logits, target 2 -> ln 3. Position 2: ignored.
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0], [1.0, 1.0, 1.0], [5.0, -5.0, 0.0]]])
    targets = torch.tensor([[1, 2, IGNORE_INDEX]])
    out = sft_token_nll(logits, targets)
    assert out.mask.tolist() == [True, True, False]
    assert torch.allclose(out.nll, torch.tensor([math.log(2.0), math.log(3.0), 0.0]), atol=1e-6)


def test_token_nll_is_float32_and_does_not_mutate():
    logits = torch.randn(2, 4, 7, dtype=torch.bfloat16)
    targets = torch.tensor([[1, -100, 3, 4], [0, 0, -100, -100]])
    before = targets.clone()
    out = sft_token_nll(logits, targets)
    assert out.nll.dtype == torch.float32 and out.nll.shape == (8,)
    assert torch.equal(targets, before)


def test_reductions_hand_computed():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert masked_sum(v, m).item() == 3.0
    assert masked_mean(v, m).item() == 1.5
    assert masked_mean(v, m, dim=1).tolist() == [1.5, 0.0]  # empty row -> 0, not NaN
    assert global_token_mean(torch.tensor([1.0, 2.0, 3.0]), 6).item() == 1.0


def test_global_token_mean_sums_to_step_mean():
    # Two micro-batches of a step with 2 and 4 loss tokens: summing each micro-batch's
    # global_token_mean gives the token mean of all six, not the mean of the two means.
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0, 2.0, 8.0])
    total = global_token_mean(a, 6) + global_token_mean(b, 6)
    assert math.isclose(total.item(), 18.0 / 6)
    assert not math.isclose(total.item(), (2.0 + 3.5) / 2)
