"""Forward passes that return only what a loss needs (no full (B, T, V) logits tensor)."""

from __future__ import annotations

import torch


def completion_logits(model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions that carry a loss, and their targets.

    batch: an ``alignkit.data.collate.Batch`` (pre-shifted ``labels`` (B, T), -100 = no loss).
    Returns logits (N, V) and targets (N,), N = number of loss tokens. The LM head runs on those N
    positions only (transformers' boolean ``logits_to_keep``), which saves the memory and time of
    projecting prompt and padding positions onto the vocabulary.
    """
    keep = batch.labels != -100  # (B, T) bool
    out = model(**batch.model_inputs(), logits_to_keep=keep)
    return out.logits, batch.labels[keep]
