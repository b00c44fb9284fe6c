"""AdamW with the usual no-decay groups, and warm-up + decay schedules."""

from __future__ import annotations

from collections.abc import Callable

import torch


def build_optimizer(
    model: torch.nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_for: Callable[[str], float | None] | None = None,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and norm weights (1-D tensors) get no weight decay.

    ``lr_for(name)`` may give a parameter its own learning rate (None: ``learning_rate``), e.g. a new head.
    ``fused``: torch's fused AdamW kernel (one kernel over all parameters; CPU and CUDA, floating-point
    parameters), as transformers' default ``adamw_torch_fused``; it falls back to the per-tensor loop where
    the kernel is not available. Same update rule either way.
    """
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr = (lr_for(name) if lr_for is not None else None) or learning_rate
            groups.setdefault((lr, p.ndim >= 2), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    param_groups = [
        {"params": ps, "lr": lr, "weight_decay": weight_decay if decay else 0.0} for (lr, decay), ps in groups.items()
    ]
    params = [p for g in param_groups for p in g["params"]]
    use_fused = fused and _fused_supported(params)
    return torch.optim.AdamW(param_groups, lr=learning_rate, betas=betas, eps=eps, fused=use_fused or None)


def _fused_supported(params: list[torch.Tensor]) -> bool:
    try:  # the devices torch has the fused kernel for (a private helper; CPU and CUDA since torch 2.4)
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:
        devices = {"cpu", "cuda"}
    return all(p.device.type in devices and p.is_floating_point() and not p.is_sparse for p in params)


def warmup_steps_for(total: int, warmup_steps: int, warmup_ratio: float) -> int:
    return warmup_steps if warmup_steps > 0 else int(round(warmup_ratio * total))


def build_scheduler(optimizer: torch.optim.Optimizer, *, name: str, warmup: int, total: int):
    """Linear warm-up then linear / cosine decay to 0, or constant (transformers' schedules)."""
    from transformers import get_scheduler

    kind = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[name]
    return get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=total)
