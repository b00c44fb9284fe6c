"""Tier (a): the SFT loss against hand-computed values (its reduction, ``rl.aggregate.token_mean``: test_rl_aggregate.py)."""

import math

import torch

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
