"""Entropies and log-probs over logits with -inf entries (a masked vocabulary, top-k/top-p processors): no NaN.

Hand-computed: softmax([0, -inf, 0]) = [1/2, 0, 1/2], H = log 2; softmax([0, -inf, log 3]) = [1/4, 0, 3/4],
H = -(1/4 log 1/4 + 3/4 log 3/4) = 0.5623351, dH/dx_i = -p_i (log p_i + H) = [+0.2059868, 0, -0.2059868].
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from alignkit.losses.ppo import entropy_from_logits
from alignkit.models.logprobs import completion_token_logps

INF = math.inf
H13 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623351
G13 = -0.25 * (math.log(0.25) + H13)  # 0.2059868


def test_entropy_of_a_masked_row_is_exact():
    assert entropy_from_logits(torch.tensor([0.0, -INF, 0.0])).item() == pytest.approx(math.log(2), abs=1e-7)
    assert entropy_from_logits(torch.tensor([0.0, -INF, math.log(3)])).item() == pytest.approx(H13, abs=1e-6)


@pytest.mark.parametrize("scale", [1.0, 65536.0, 1e6])  # 65536: a mixed-precision loss scale
def test_entropy_gradient_is_finite_and_exact(scale):
    x = torch.tensor([0.0, -INF, math.log(3)], requires_grad=True)
    (scale * entropy_from_logits(x)).backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad / scale, torch.tensor([G13, 0.0, -G13]), atol=1e-6, rtol=1e-5)


def test_entropy_of_a_fully_finite_row_is_unchanged():
    x = torch.tensor([[0.3, -1.2, 2.0, 0.0]])
    p = torch.softmax(x, -1)
    torch.testing.assert_close(entropy_from_logits(x), -(p * p.log()).sum(-1))


class _FixedLogits(torch.nn.Module):
    """A 'model' whose logits at every position are a learnable (T, V) table, rows possibly holding -inf."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, logits_to_keep):
        b = logits_to_keep.shape[0]
        return SimpleNamespace(logits=self.table.expand(b, -1, -1)[logits_to_keep])  # (K, V)


def _batch(labels):
    labels = torch.tensor(labels)
    return SimpleNamespace(
        labels=labels, example_index=torch.arange(labels.shape[0])[:, None].expand_as(labels), model_inputs=lambda: {}
    )


@pytest.mark.parametrize("scale", [1.0, 65536.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_token_logps_over_minus_inf(temperature, scale):
    table = torch.tensor([[0.0, -INF, 0.0], [0.0, -INF, math.log(3)]])  # (T=2, V=3)
    model = _FixedLogits(table)
    batch = _batch([[0, 2]])  # one sequence, both positions learned: tokens 0 then 2
    out = completion_token_logps(model, batch, 1, 2, with_entropy=True, temperature=temperature)
    # -inf / T stays -inf: row 0 is [1/2, 0, 1/2] at any temperature; row 1 is softmax([0, -inf, log 3 / T])
    q = 3 ** (1 / temperature)
    p1 = [1 / (1 + q), q / (1 + q)]
    torch.testing.assert_close(out.logps, torch.tensor([[math.log(0.5), math.log(p1[1])]]))
    h1 = -sum(p * math.log(p) for p in p1)
    torch.testing.assert_close(out.entropy, torch.tensor([[math.log(2), h1]]))
    (scale * (out.logps.sum() + out.entropy.sum())).backward()
    assert torch.isfinite(model.table.grad).all()
    assert (model.table.grad[:, 1] == 0).all()  # a token of probability 0 gets no gradient


def test_log_prob_of_a_finite_token_without_entropy_is_exact():
    model = _FixedLogits(torch.tensor([[1.0, -INF, 1.0, 1.0]]))
    out = completion_token_logps(model, _batch([[3]]), 1, 1, with_entropy=False)
    assert out.logps.item() == pytest.approx(math.log(1 / 3), abs=1e-7)
    out.logps.sum().backward()
    assert torch.isfinite(model.table.grad).all()
