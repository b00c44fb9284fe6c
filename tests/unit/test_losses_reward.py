"""Tier (a): the Bradley–Terry loss and pairwise metrics against hand-computed values."""

import math

import pytest
import torch

from alignkit.eval.reward_metrics import expected_calibration_error, pairwise_metrics
from alignkit.losses.reward import bradley_terry_loss, pairwise_accuracy


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_plain_loss_is_minus_log_sigmoid_of_the_gap():
    out = bradley_terry_loss(torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0]))
    expected = [-math.log(_sig(1.0)), math.log(2.0), -math.log(_sig(-3.0))]  # 0.313262, 0.693147, 3.048587
    torch.testing.assert_close(out.loss, torch.tensor(expected))
    torch.testing.assert_close(out.margin, torch.tensor([1.0, 0.0, -3.0]))
    torch.testing.assert_close(out.accuracy, torch.tensor([1.0, 0.5, 0.0]))  # a tie is half right


def test_margin_shifts_the_gap():
    out = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([0.5]))
    assert out.loss.item() == pytest.approx(0.474077, abs=1e-6)  # -log σ(0.5)
    assert out.margin.item() == 1.0  # the reported margin is the raw gap


def test_label_smoothing():
    out = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), label_smoothing=0.1)
    # -(0.9 log σ(2) + 0.1 log σ(-2)) = 0.9 * 0.126928 + 0.1 * 2.126928
    assert out.loss.item() == pytest.approx(0.326928, abs=1e-6)


def test_centering_adds_c_times_square_of_the_sum():
    plain = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([2.0]))
    centred = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([2.0]), center_coef=0.01)
    assert centred.loss.item() - plain.loss.item() == pytest.approx(0.09, abs=1e-6)  # 0.01 * (1 + 2)²


def test_gradient_matches_the_closed_form():
    rc = torch.tensor([0.3], requires_grad=True)
    rr = torch.tensor([-0.2], requires_grad=True)
    eps = 0.2
    bradley_terry_loss(rc, rr, label_smoothing=eps).loss.sum().backward()
    x = 0.5
    # d/dx [-(1-ε) log σ(x) - ε log σ(-x)] = -(1-ε) σ(-x) + ε σ(x)
    g = -(1 - eps) * _sig(-x) + eps * _sig(x)
    assert rc.grad.item() == pytest.approx(g, abs=1e-6)
    assert rr.grad.item() == pytest.approx(-g, abs=1e-6)


def test_loss_is_per_pair_and_does_not_mutate_inputs():
    rc, rr = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])
    before = rc.clone()
    out = bradley_terry_loss(rc, rr, center_coef=0.1)
    assert out.loss.shape == (2,) and torch.equal(rc, before)


@pytest.mark.parametrize("kw", [{"label_smoothing": 0.5}, {"label_smoothing": -0.1}, {"center_coef": -1.0}])
def test_bad_hyper_parameters(kw):
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(1), torch.zeros(1), **kw)


def test_pairwise_accuracy_ties():
    assert pairwise_accuracy(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0])).tolist() == [1.0, 0.5, 0.0]


def test_ece_hand_computed():
    # Δ = 2, -1, 0, 0.5 -> confidences σ(2)=.8808 (bin 7), σ(1)=.7311 (bin 4), .5 (bin 0), σ(.5)=.6225 (bin 2)
    # one pair per bin: |1-.8808| + |0-.7311| + |.5-.5| + |1-.6225| = 1.2278, / 4
    expected = ((1 - _sig(2)) + _sig(1) + 0 + (1 - _sig(0.5))) / 4
    assert expected_calibration_error([2.0, -1.0, 0.0, 0.5]) == pytest.approx(expected, abs=1e-9)
    # two pairs in one bin are averaged before the gap is taken: Δ = ±1 -> conf .7311 both, accuracy .5
    assert expected_calibration_error([1.0, -1.0]) == pytest.approx(_sig(1) - 0.5, abs=1e-9)


def test_pairwise_metrics_with_subsets_and_ties():
    m = pairwise_metrics([1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, -1.0], subsets=["a", "a", "b", "b"])
    assert m["n"] == 4 and m["ties"] == 1
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert m["mean_margin"] == pytest.approx((1 + 0 - 1 + 1) / 4)
    assert m["subsets"] == {"a": {"accuracy": 0.75, "n": 2}, "b": {"accuracy": 0.5, "n": 2}}
    assert "subsets" not in pairwise_metrics([1.0], [0.0])
    with pytest.raises(ValueError):
        pairwise_metrics([], [])


def test_reward_head_gets_its_own_learning_rate_and_1d_params_no_decay():
    from alignkit.algorithms.reward import is_head_parameter
    from alignkit.training.optim import build_optimizer

    model = torch.nn.ModuleDict({"body": torch.nn.Linear(4, 4), "score": torch.nn.Linear(4, 1)})
    opt = build_optimizer(model, learning_rate=1e-4, weight_decay=0.1, lr_for=lambda n: 1e-2 if is_head_parameter(n) else None)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model["body"].weight)] == (1e-4, 0.1) and by_param[id(model["body"].bias)] == (1e-4, 0.0)
    assert by_param[id(model["score"].weight)] == (1e-2, 0.1) and by_param[id(model["score"].bias)] == (1e-2, 0.0)
    assert is_head_parameter("base_model.model.score.modules_to_save.default.weight")
    assert is_head_parameter("head.weight") and not is_head_parameter("model.layers.0.mlp.up_proj.weight")
