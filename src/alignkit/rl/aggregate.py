"""Loss aggregation: from per-token losses to the scalar that is back-propagated (imports torch only).

Losses return per-token values (0 outside the mask); the algorithm picks the reduction here, explicitly.
Every reduction that spans an optimizer step takes its normaliser as an argument — a count over the whole
step (all micro-batches, all processes) — so that summing the reduction of each micro-batch gives the
reduction of the whole batch: gradient accumulation, batch splitting and packing do not change the
gradient (tested: batch 4 == 2 × 2 accumulated). Which normaliser an algorithm uses changes what it
optimises (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"):

- ``token_mean``: every token weighs the same (PPO in alignkit, OpenRLHF, TRL; SFT);
- ``sequence_mean``: every sequence weighs the same, its tokens share the sequence's weight (GRPO as
  published, Shao et al. 2024 eq. 3), so a long answer's tokens each weigh less;
- ``fixed_length_mean``: the sum over a fixed ``num_sequences × max_len`` (Dr. GRPO), no length bias.

Shapes: ``losses`` and ``mask`` are (B, T) (or any shape, for the token-level functions), ``mask`` 1/True on
the tokens that count. The micro-batch's values are multiplied by the mask, so garbage outside it is ignored.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is true. values, mask: same shape. Returns a scalar."""
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)`` along ``dim`` (or over everything): TRL ``core.masked_mean``.

    The denominator is clamped at 1 (a 0/1 mask sums to 0 or >= 1), so an all-zero mask (or row, with
    ``dim``) gives 0 instead of NaN. A mean over *this* tensor only: for a loss spread over micro-batches
    use ``token_mean`` with the step's token count.
    """
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)


def token_mean(losses: torch.Tensor, mask: torch.Tensor, num_tokens: float | torch.Tensor) -> torch.Tensor:
    """``sum(losses * mask) / num_tokens``: this micro-batch's share of the token mean of the whole step.

    losses, mask: same shape (e.g. (B, T) per-token PPO losses, or (N,) SFT token NLLs). ``num_tokens``: the
    masked tokens of the whole mini-batch / optimizer step, across micro-batches and processes (the caller
    sums and all-reduces it). Summed over the micro-batches of the step, this is the step's token mean.
    """
    return masked_sum(losses, mask) / num_tokens


def sequence_mean(losses: torch.Tensor, mask: torch.Tensor, num_sequences: float | torch.Tensor) -> torch.Tensor:
    """``Σ_rows (masked mean of the row) / num_sequences``: mean over each sequence's tokens, then over sequences.

    losses, mask: (B, T). ``num_sequences``: sequences of the whole mini-batch, across micro-batches and
    processes. A row with an all-zero mask contributes 0 (and still counts in ``num_sequences`` if the caller
    counted it). GRPO's normaliser (Shao et al. 2024, eq. 3: ``1/G Σ_i 1/|o_i| Σ_t``).
    """
    return masked_mean(losses, mask, dim=-1).sum() / num_sequences


def fixed_length_mean(
    losses: torch.Tensor, mask: torch.Tensor, num_sequences: float | torch.Tensor, max_len: int
) -> torch.Tensor:
    """``sum(losses * mask) / (num_sequences × max_len)``: a constant normaliser, whatever the answers' lengths.

    Dr. GRPO (Liu et al. 2025; TRL ``GRPOTrainer`` with ``loss_type="dr_grpo"``): dividing by a constant
    removes the per-sequence length bias of ``sequence_mean``. losses, mask: (B, T);
    ``num_sequences`` as in ``sequence_mean``; ``max_len``: the generation budget (``max_new_tokens``), not this
    batch's width, so that it is the same constant in every micro-batch and step.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    return masked_sum(losses, mask) / (num_sequences * max_len)
