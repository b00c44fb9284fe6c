"""Tier (a) and (c): loss aggregation against hand-computed values, and the invariance that makes the global
normaliser worth having: a batch of 4 gives the same loss and gradient as 2 micro-batches of 2 accumulated."""

import math

import pytest
import torch

from alignkit.rl.aggregate import fixed_length_mean, masked_mean, masked_sum, sequence_mean, token_mean

LOSSES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)  # 3 tokens count: 1, 2 | 4


def test_masked_sum_and_mean():
    assert masked_sum(LOSSES, MASK).item() == 7.0
    assert masked_mean(LOSSES, MASK).item() == pytest.approx(7 / 3)
    torch.testing.assert_close(masked_mean(LOSSES, MASK, dim=1), torch.tensor([1.5, 4.0]))
    x, m = torch.tensor([[1.0, 2.0], [3.0, 100.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3; the 100 is masked out
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0  # all-zero mask: 0, not NaN
    torch.testing.assert_close(masked_mean(x, torch.tensor([[0.0, 0.0], [1.0, 0.0]]), dim=1), torch.tensor([0.0, 3.0]))


def test_token_mean_hand_computed():
    assert token_mean(LOSSES, MASK, 3).item() == pytest.approx(7 / 3)  # this batch is the whole step
    assert token_mean(LOSSES, MASK, 7).item() == pytest.approx(1.0)  # a share of a 7-token step
    # SFT's use: (N,) token losses, 0 where the mask is False
    assert token_mean(torch.tensor([1.0, 2.0, 3.0]), torch.ones(3), 6).item() == 1.0


def test_sequence_mean_hand_computed():
    # row means 1.5 and 4 -> (1.5 + 4) / 2, not the token mean 7/3
    assert sequence_mean(LOSSES, MASK, 2).item() == pytest.approx(2.75)
    assert sequence_mean(LOSSES, MASK, 4).item() == pytest.approx(5.5 / 4)  # a share of a 4-sequence step
    # an all-masked row adds 0 (and counts only if the caller counted it)
    assert sequence_mean(LOSSES, torch.tensor([[1, 1, 0], [0, 0, 0]]), 1).item() == pytest.approx(1.5)


def test_fixed_length_mean_hand_computed():
    assert fixed_length_mean(LOSSES, MASK, 2, max_len=4).item() == pytest.approx(7 / 8)  # (1 + 2 + 4) / (2 × 4)
    # the normaliser does not depend on the answers' lengths: doubling a row's kept tokens doubles its share
    longer = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert fixed_length_mean(LOSSES, longer, 2, max_len=4).item() == pytest.approx(10 / 8)
    with pytest.raises(ValueError):
        fixed_length_mean(LOSSES, MASK, 2, max_len=0)


def test_token_mean_over_micro_batches_is_the_step_mean_not_the_mean_of_means():
    # Two micro-batches with 2 and 4 tokens: each divided by the step's 6 tokens, summed = the mean of all six.
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0, 2.0, 8.0])
    total = token_mean(a, torch.ones(2), 6) + token_mean(b, torch.ones(4), 6)
    assert math.isclose(total.item(), 18.0 / 6)
    assert not math.isclose(total.item(), (2.0 + 3.5) / 2)


def _batch():
    """4 sequences of different lengths (T = 5), per-token losses that depend on a parameter w."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=g)
    mask = (torch.arange(5) < torch.tensor([[5], [2], [4], [1]])).float()
    return x, mask


def _token_mean(losses, mask, n):
    return token_mean(losses, mask, n)


@pytest.mark.parametrize(
    "reduce,normaliser",
    [
        (_token_mean, lambda m: m.sum()),  # tokens of the whole mini-batch
        (sequence_mean, lambda m: m.shape[0]),  # sequences of the whole mini-batch
        (lambda losses, m, n: fixed_length_mean(losses, m, n, max_len=5), lambda m: m.shape[0]),
    ],
    ids=["token_mean", "sequence_mean", "fixed_length_mean"],
)
def test_batch_of_4_equals_2_micro_batches_of_2_accumulated(reduce, normaliser):
    x, mask = _batch()
    n = normaliser(mask)  # computed once over the whole mini-batch, as a training loop all-reduces it

    w = torch.tensor(0.7, requires_grad=True)
    whole = reduce((w * x) ** 2, mask, n)
    whole.backward()
    grad_whole = w.grad.clone()

    w.grad = None
    accumulated = torch.zeros(())
    for rows in (slice(0, 2), slice(2, 4)):  # backward per micro-batch, gradients summed in w.grad
        part = reduce((w * x[rows]) ** 2, mask[rows], n)
        part.backward()
        accumulated = accumulated + part.detach()
    torch.testing.assert_close(accumulated, whole.detach())
    torch.testing.assert_close(w.grad, grad_whole)

    if reduce is _token_mean:
        # each micro-batch normalised by its own token count (7 and 5 tokens) gives another loss: why n is global
        local = sum(reduce((w * x[r]) ** 2, mask[r], normaliser(mask[r])) for r in (slice(0, 2), slice(2, 4))) / 2
        assert not torch.isclose(local.detach(), whole.detach())
