"""Collate tokenized examples into model batches: right-padded, or packed without padding.

Labels are **pre-shifted**: ``labels[b, t]`` is the token that position ``t`` must predict, i.e.
``input_ids[b, t + 1]`` when that token is learned (``loss_mask == 1``), else -100. So the loss is
``cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)`` with no further shift —
do NOT pass these labels to a transformers model's ``labels=`` argument (it shifts again). The last
position of every example is -100, so nothing is ever predicted across an example boundary.

Packed batches rely on transformers >= 5 building a block-diagonal causal mask from
``position_ids`` when ``attention_mask`` is None (``masking_utils.find_packed_sequence_indices``).
That detection is skipped when the model is given a KV cache, and decoder models create one when
``use_cache`` is on (the default in their config), so call the model with ``use_cache=False`` —
``Batch.model_inputs()`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignkit.data.tokenize import TokenizedExample

IGNORE_INDEX = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long; pad_token_id after each row's end when padded
    labels: torch.Tensor  # (B, T) long; labels[b, t] = input_ids[b, t+1] if learned else -100 (pre-shifted)
    attention_mask: torch.Tensor | None  # (B, T) long, 1 on real tokens, 0 on padding; None when packed
    position_ids: torch.Tensor  # (B, T) long; 0.. per row when padded, restarting at 0 per example when packed
    real_tokens: int | None = None  # packed rows: how many tokens are not tail padding (None: all, or see mask)
    example_index: torch.Tensor | None = (
        None  # (B, T) long: which example (0..n-1, collate order) a position belongs to; -1 on padding
    )

    @property
    def num_loss_tokens(self) -> int:
        """How many positions carry a loss (``labels != -100``)."""
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def num_tokens(self) -> int:
        """How many real (non-padding) tokens the batch holds."""
        if self.real_tokens is not None:
            return self.real_tokens
        if self.attention_mask is None:
            return self.input_ids.numel()
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        """A copy of the batch on ``device``."""
        return Batch(
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            attention_mask=None if self.attention_mask is None else self.attention_mask.to(device),
            position_ids=self.position_ids.to(device),
            real_tokens=self.real_tokens,
            example_index=None if self.example_index is None else self.example_index.to(device),
        )

    def model_inputs(self) -> dict:
        """Keyword arguments for a causal LM's forward (``model(**batch.model_inputs())``).

        Labels are left out (they are pre-shifted); ``use_cache=False`` so that packed rows get
        their block-diagonal mask.
        """
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "use_cache": False,
        }


def _shifted_labels(ex: TokenizedExample) -> list[int]:
    """``(T,)``: label t = input_ids[t+1] if loss_mask[t+1] else -100; the last is -100."""
    ids, mask = ex.input_ids, ex.loss_mask
    if len(ids) != len(mask):
        raise ValueError(f"{ex.ref}: input_ids and loss_mask differ in length ({len(ids)} vs {len(mask)})")
    return [nxt if m else IGNORE_INDEX for nxt, m in zip(ids[1:], mask[1:])] + [IGNORE_INDEX]


def collate_padded(examples: Sequence[TokenizedExample], pad_token_id: int) -> Batch:
    """Right-pad ``examples`` to the longest one: B = len(examples), T = longest length.

    Padding gets ``pad_token_id``, attention_mask 0 and label -100; position_ids are 0..T-1 on every
    row (padding sits after the real tokens, so with a causal mask it never affects them).
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    B, T = len(examples), max(len(ex.input_ids) for ex in examples)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
    example_index = torch.full((B, T), -1, dtype=torch.long)  # (B, T)
    for b, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[b, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(_shifted_labels(ex), dtype=torch.long)
        attention_mask[b, :n] = 1
        example_index[b, :n] = b
    position_ids = torch.arange(T, dtype=torch.long).unsqueeze(0).expand(B, T).contiguous()  # (B, T)
    return Batch(
        input_ids=input_ids,
        labels=labels,
        attention_mask=attention_mask,
        position_ids=position_ids,
        example_index=example_index,
    )


def pack_rows(lengths: Sequence[int], max_row_tokens: int | None) -> list[list[int]]:
    """Group example indices into rows of at most ``max_row_tokens`` tokens (first-fit decreasing).

    ``None`` puts everything in one row. An example longer than the cap gets a row of its own.
    Deterministic: ties keep the input order.
    """
    if max_row_tokens is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_row_tokens - lengths[i])
    return sorted((sorted(r) for r in rows), key=lambda r: r[0])


def collate_packed(examples: Sequence[TokenizedExample], *, max_row_tokens: int | None = None, pad_token_id: int = 0) -> Batch:
    """Pack ``examples`` without padding between them: B rows of concatenated examples.

    With ``max_row_tokens=None`` everything goes in one row (B = 1, T = total length). With a cap, the
    examples are grouped into as few rows of at most that many tokens as first-fit decreasing finds,
    and the shorter rows get tail padding that forms a block of its own (positions restarting at 0,
    labels -100), so it never mixes with real tokens. Keeping rows short matters where attention
    is computed densely (CPU sdpa/eager): its cost grows with the square of the row length.

    position_ids restart at 0 for each example, which is how the model tells examples apart;
    attention_mask is None. Labels are shifted within each example, so an example's last token
    predicts nothing (-100) rather than the next example's first token.
    """
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    groups = pack_rows([len(ex.input_ids) for ex in examples], max_row_tokens)
    rows = []
    for group in groups:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        owner: list[int] = []
        for i in group:
            ex = examples[i]
            ids += ex.input_ids
            labels += _shifted_labels(ex)
            positions += range(len(ex.input_ids))
            owner += [i] * len(ex.input_ids)
        rows.append((ids, labels, positions, owner))
    T = max(len(r[0]) for r in rows)
    real = sum(len(r[0]) for r in rows)
    for ids, labels, positions, owner in rows:
        k = T - len(ids)
        ids += [pad_token_id] * k
        labels += [IGNORE_INDEX] * k
        positions += range(k)
        owner += [-1] * k
    return Batch(
        input_ids=torch.tensor([r[0] for r in rows], dtype=torch.long),  # (B, T)
        labels=torch.tensor([r[1] for r in rows], dtype=torch.long),  # (B, T)
        attention_mask=None,
        position_ids=torch.tensor([r[2] for r in rows], dtype=torch.long),  # (B, T)
        real_tokens=real if len(rows) > 1 else None,
        example_index=torch.tensor([r[3] for r in rows], dtype=torch.long),  # (B, T)
    )
