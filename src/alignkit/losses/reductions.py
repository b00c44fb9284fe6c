"""Explicit reductions. Losses return per-token / per-example values; the caller picks the reduction.

The training loops use a *global* normaliser: the sum of per-token losses in a micro-batch divided by
the number of loss tokens in the whole optimizer step (all micro-batches, all processes). That makes
gradient accumulation, batch splitting and packing give the same gradient as one big batch.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is true. values, mask: same shape. Returns a scalar."""
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true (along ``dim``, or all).

    A row with no true position gives 0 rather than NaN.
    """
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)


def global_token_mean(token_losses: torch.Tensor, num_tokens_global: int | torch.Tensor) -> torch.Tensor:
    """``sum(token_losses) / num_tokens_global``.

    token_losses: (N,) the per-token losses of this micro-batch (only loss tokens).
    num_tokens_global: loss tokens in the whole optimizer step, across micro-batches and processes.
    Summing this over the micro-batches of a step gives the token mean of the whole step.
    """
    return token_losses.sum() / num_tokens_global
