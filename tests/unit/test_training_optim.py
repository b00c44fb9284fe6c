"""AdamW construction: parameter groups, and the fused kernel giving the per-tensor loop's update."""

import torch

from alignkit.training.optim import build_optimizer


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 1))


def _train(fused: bool, steps: int = 5) -> list[torch.Tensor]:
    model = _model(0)
    opt = build_optimizer(model, learning_rate=1e-2, weight_decay=0.1, fused=fused)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=g)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in model.parameters()]


def test_fused_kernel_is_used_on_cpu_and_matches_the_per_tensor_loop():
    opt = build_optimizer(_model(0), learning_rate=1e-3, weight_decay=0.0)
    assert all(g["fused"] for g in opt.param_groups)  # the default, on CPU (torch >= 2.4)
    loop = build_optimizer(_model(0), learning_rate=1e-3, weight_decay=0.0, fused=False)
    assert not any(g["fused"] for g in loop.param_groups)
    for a, b in zip(_train(fused=True), _train(fused=False)):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(_train(fused=True)[0], _model(0)[0].weight)  # it did train


def test_no_decay_for_1d_parameters_and_own_learning_rates():
    model = _model(0)
    opt = build_optimizer(model, learning_rate=1e-3, weight_decay=0.1, lr_for=lambda n: 5e-3 if n.startswith("2.") else None)
    groups = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert groups == {(1e-3, 0.1): 6 * 5, (1e-3, 0.0): 5 + 5 + 5, (5e-3, 0.1): 5, (5e-3, 0.0): 1}
