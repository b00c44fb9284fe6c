"""Forward passes that return only what a loss needs (no full (B, T, V) logits tensor)."""

from __future__ import annotations

from typing import NamedTuple

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


class SequenceLogps(NamedTuple):
    """Log-probabilities of each sequence's learned (completion) tokens under a model."""

    sum: torch.Tensor  # (N,) Σ_t log p(y_t | y_<t, x) over the completion's tokens
    tokens: torch.Tensor  # (N,) how many tokens that sum covers

    @property
    def mean(self) -> torch.Tensor:  # (N,) per-token mean (length-normalised), as SimPO and ORPO use
        return self.sum / self.tokens.clamp(min=1)


def sequence_logps(model: torch.nn.Module, batch, num_sequences: int) -> SequenceLogps:
    """Per-sequence completion log-probs of a padded or packed batch, in one forward pass.

    batch: an ``alignkit.data.collate.Batch`` whose ``example_index`` (B, T) says which of the
    ``num_sequences`` sequences each position belongs to. Only the completion positions are projected
    onto the vocabulary (``logits_to_keep``); each token's log-prob is ``-cross_entropy`` of its logits
    in float32, and the tokens of a sequence are summed with ``index_add`` — so a sequence's value does
    not depend on how the batch was padded or packed.
    """
    import torch.nn.functional as F

    keep = batch.labels != -100  # (B, T) bool
    out = model(**batch.model_inputs(), logits_to_keep=keep)
    targets = batch.labels[keep]  # (K,)
    token_logps = -F.cross_entropy(out.logits.float(), targets, reduction="none")  # (K,)
    owner = batch.example_index[keep]  # (K,)
    sums = torch.zeros(num_sequences, dtype=torch.float32, device=token_logps.device).index_add(0, owner, token_logps)
    counts = torch.zeros(num_sequences, dtype=torch.float32, device=token_logps.device).index_add(
        0, owner, torch.ones_like(token_logps)
    )
    return SequenceLogps(sums, counts)


def position_in_example(owner: torch.Tensor, num_sequences: int) -> torch.Tensor:
    """(K,) rank of each kept position within its example, for ``owner`` (K,) in row-major order (an example's
    kept positions are contiguous and left to right in a padded or packed batch)."""
    k = torch.arange(owner.numel(), device=owner.device)
    first = torch.full((num_sequences,), owner.numel(), dtype=torch.long, device=owner.device)
    first = first.scatter_reduce(0, owner, k, reduce="amin")
    return k - first[owner]


class TokenLogps(NamedTuple):
    logps: torch.Tensor  # (N, W) log p of each completion token, 0 past the sequence's end
    entropy: torch.Tensor | None  # (N, W) entropy of the predictive distribution at that token (None unless asked)
    mask: torch.Tensor  # (N, W) 1.0 on real completion tokens


def completion_token_logps(
    model,
    batch,
    num_sequences: int,
    width: int,
    *,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    temperature: float = 1.0,
) -> TokenLogps:
    """Per-token completion log-probs, laid out (N, W): row i holds sequence i's completion tokens from column 0.

    Like :func:`sequence_logps`, only the completion positions are projected onto the vocabulary; ``width``
    is at least the longest completion. ``temperature``: the log-probs (and entropy) of the distribution the
    tokens were sampled from, softmax(logits / temperature) — exactly the distribution
    :func:`alignkit.models.generation.generate_ids` samples when ``top_p == 1`` (no other processor is applied
    there). ``entropy_grad=False`` computes the entropy for logging only (no autograd graph over the (K, V)
    probabilities). Logits of -inf (a masked vocabulary) are fine: such tokens add 0 to the entropy and get no
    gradient; the log-prob of a finite token is exact.
    """
    import torch.nn.functional as F

    keep = batch.labels != -100  # (B, T)
    out = model(**batch.model_inputs(), logits_to_keep=keep)
    logits = out.logits.float()  # (K, V)
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch.labels[keep]  # (K,)
    owner = batch.example_index[keep]
    col = position_in_example(owner, num_sequences)
    shape = (num_sequences, width)
    entropy = None
    if with_entropy:  # one log-softmax serves both
        logp_all = torch.log_softmax(logits, dim=-1)  # (K, V)
        token_logps = logp_all.gather(-1, targets[:, None]).squeeze(-1)  # (K,)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):  # off: a value for the logs only
            # 0·log 0 = 0 for tokens of probability 0 (-inf logits), in the value and the gradient: no NaN
            ent = -(logp_all.exp() * logp_all.masked_fill(torch.isneginf(logp_all), 0.0)).sum(-1)  # (K,)
        entropy = torch.zeros(shape, dtype=torch.float32, device=logits.device).index_put((owner, col), ent)
    else:
        token_logps = -F.cross_entropy(logits, targets, reduction="none")  # (K,)
    logps = torch.zeros(shape, dtype=torch.float32, device=logits.device).index_put((owner, col), token_logps)
    mask = torch.zeros(shape, dtype=torch.float32, device=logits.device).index_put((owner, col), torch.ones_like(token_logps))
    return TokenLogps(logps, entropy, mask)
