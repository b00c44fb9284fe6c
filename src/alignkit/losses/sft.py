"""Supervised fine-tuning loss: next-token negative log-likelihood on completion tokens.

The maximum-likelihood objective of Radford et al. 2018 (eq. 1), restricted to the tokens the
example marks as learned (the completion, unless ``train_on_prompt``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


class TokenNLL(NamedTuple):
    nll: torch.Tensor  # (N,) per-token negative log-likelihood, 0 where the target is IGNORE_INDEX
    mask: torch.Tensor  # (N,) bool, True where the token counts


def sft_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> TokenNLL:
    """Per-token NLL ``-log softmax(logits)[target]``, computed in float32.

    logits: (..., V) scores for each position; targets: (...) the token each position must predict,
    ``IGNORE_INDEX`` where no loss applies. Returns flattened (N,) tensors; no reduction.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_targets = targets.reshape(-1)
    mask = flat_targets != IGNORE_INDEX
    nll = F.cross_entropy(flat_logits, flat_targets.clamp(min=0), reduction="none")
    return TokenNLL(nll=nll * mask, mask=mask)
