"""AdamW (torch's, or bitsandbytes' 8-bit / paged ones) with the usual no-decay groups, and warm-up + decay schedules.

``train.optimizer`` names the kind (:data:`OPTIMIZERS`):

- ``adamw``: ``torch.optim.AdamW``; two states per parameter in the parameter's dtype (fp32: 8 bytes/param).
- ``adamw_8bit``: ``bitsandbytes.optim.AdamW8bit``; block-wise 8-bit states (2 bytes/param plus one fp32 absmax
  per 256 values) for tensors of at least 4096 values, fp32 states for smaller ones. Runs on CUDA and, with
  bitsandbytes 0.50, on the CPU.
- ``paged_adamw`` / ``paged_adamw_8bit``: the same states in CUDA unified memory, paged out to host memory under
  pressure. CUDA only: on another device bitsandbytes (0.50) warns and falls back to ordinary buffers, so alignkit
  refuses instead of running something other than what was asked.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alignkit.errors import UserError

OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit")
_BNB_CLASSES = {"adamw_8bit": "AdamW8bit", "paged_adamw": "PagedAdamW", "paged_adamw_8bit": "PagedAdamW8bit"}


class OptimizerError(UserError, ValueError):
    """The configured ``train.optimizer`` cannot run here (one line: the option and what to use instead)."""


def check_optimizer_device(optimizer: str, device_type: str) -> None:
    """Raise :class:`OptimizerError` when ``optimizer`` cannot run on a ``device_type`` ("cpu", "cuda", ...) device.

    Paged optimizers need CUDA unified memory; the 8-bit one needs bitsandbytes and a device it has kernels for
    (CUDA; the CPU from bitsandbytes 0.50, probed with one tiny step).
    """
    if optimizer not in OPTIMIZERS:
        raise OptimizerError(f"train.optimizer {optimizer!r}: unknown; expected one of {', '.join(OPTIMIZERS)}")
    if optimizer == "adamw":
        return
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise OptimizerError(
            f"train.optimizer {optimizer} needs bitsandbytes (pip install 'alignkit[qlora]'); or use train.optimizer=adamw"
        )
    if optimizer.startswith("paged_") and device_type != "cuda":
        instead = "adamw_8bit" if optimizer.endswith("8bit") and _bnb_8bit_runs_on(device_type) else "adamw"
        raise OptimizerError(
            f"train.optimizer {optimizer} needs a CUDA GPU (paged states live in CUDA unified memory), and this run is on "
            f"{device_type}; use train.optimizer={instead}"
        )
    if optimizer == "adamw_8bit" and device_type != "cuda" and not _bnb_8bit_runs_on(device_type):
        raise OptimizerError(
            f"train.optimizer adamw_8bit: the installed bitsandbytes has no 8-bit optimizer kernel for {device_type}; "
            "use train.optimizer=adamw"
        )


def _bnb_8bit_runs_on(device_type: str) -> bool:
    """Whether bitsandbytes' AdamW8bit steps on ``device_type`` (one step on a 4096-value tensor, the size from which
    it keeps 8-bit states)."""
    try:
        import bitsandbytes as bnb

        p = torch.nn.Parameter(torch.zeros(4096, device=device_type))
        p.grad = torch.ones_like(p)
        opt = bnb.optim.AdamW8bit([p], lr=1e-3)
        opt.step()
        return bool(torch.isfinite(p).all()) and bool((p != 0).any())
    except Exception:
        return False


def build_optimizer(
    model: torch.nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    lr_for: Callable[[str], float | None] | None = None,
    fused: bool = True,
    optimizer: str = "adamw",
) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; biases and norm weights (1-D tensors) get no weight decay.

    ``optimizer``: one of :data:`OPTIMIZERS` (see the module doc); an :class:`OptimizerError` when the parameters'
    device cannot run it (checked before anything is built; never a silent fallback to another optimizer).

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
    check_optimizer_device(optimizer, params[0].device.type)
    if optimizer != "adamw":
        import bitsandbytes as bnb

        return getattr(bnb.optim, _BNB_CLASSES[optimizer])(param_groups, lr=learning_rate, betas=betas, eps=eps)
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
