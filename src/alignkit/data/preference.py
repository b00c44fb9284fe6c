"""Preference data for policy optimisation (DPO family, KTO): completions with a loss mask, as sequences.

Every sequence is tokenized like an SFT example (``tokenize_example``: the prompt with the chat
template, the completion learned up to its end-of-turn token); one longer than ``max_length`` loses
its prompt's earliest tokens first, then its completion's last ones (``fit_length``).
A :class:`SequenceSet` holds them flat, and names them by role:

- pairs: ``first[i]`` is pair i's chosen sequence, ``second[i]`` its rejected one;
- unpaired (KTO): ``first[i]`` is row i's completion, ``second[i]`` its *KL partner* — row i's prompt
  with another row's completion (a fixed seeded derangement), whose log-ratio estimates KL(π‖π_ref).

Sequence ids index the flat list, which is what cached reference log-probs are keyed by.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from alignkit.data.errors import DataError, RowRef
from alignkit.data.examples import Example
from alignkit.data.formats import same_sides
from alignkit.data.tokenize import TokenizedExample, tokenize_with_flag


@dataclass
class SequenceSet:
    sequences: list[TokenizedExample]  # (S,) every sequence a loss reads
    first: list[int]  # (N,) pairs: chosen sequence id | unpaired: the row's completion
    second: list[int]  # (N,) pairs: rejected sequence id | unpaired: the row's KL partner
    refs: list[RowRef]  # (N,) the source row of each unit
    desirable: list[bool] | None = None  # (N,) unpaired only: the row's label
    truncated: int = 0  # units with a sequence cut at max_length
    skipped: list[DataError] = field(default_factory=list)  # units left out (with on_error="skip")

    @property
    def paired(self) -> bool:
        return self.desirable is None

    def __len__(self) -> int:
        return len(self.first)

    def learned_tokens(self, seq_id: int) -> int:
        """Tokens whose log-prob is summed for this sequence (the loss mask after the first position)."""
        return sum(self.sequences[seq_id].loss_mask[1:])

    def subset(self, units: Sequence[int]) -> SequenceSet:
        """The units ``units`` only (sequence ids are renumbered; KL partners stay the same sequences)."""
        seqs: list[TokenizedExample] = []
        new_id: dict[int, int] = {}

        def take(i: int) -> int:
            if i not in new_id:
                new_id[i] = len(seqs)
                seqs.append(self.sequences[i])
            return new_id[i]

        first, second = [], []
        for u in units:  # unit by unit, so the full range gives back the same sequence order
            first.append(take(self.first[u]))
            second.append(take(self.second[u]))
        desirable = None if self.desirable is None else [self.desirable[u] for u in units]
        return SequenceSet(seqs, first, second, [self.refs[u] for u in units], desirable)

    def fingerprint(self) -> str:
        """sha256 of every sequence's ids and loss mask: cached log-probs are valid for exactly this data."""
        h = hashlib.sha256()
        for s in self.sequences:
            h.update(json.dumps([s.input_ids, s.loss_mask]).encode())
        return h.hexdigest()


def fit_length(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Cut a sequence to ``max_length``: first the prompt's earliest tokens (keeping at least half the budget
    for the prompt), then the completion's end. The prompt is what precedes the first learned token."""
    excess = len(ids) - max_length
    if excess <= 0:
        return ids, mask
    n_prompt = next((i for i, m in enumerate(mask) if m), len(mask))
    cut = min(excess, max(n_prompt - max_length // 2, 0))
    return ids[cut:][:max_length], mask[cut:][:max_length]


def _tokenize_one(ex: Example, completion: str, tokenizer, max_length: int) -> tuple[TokenizedExample | None, bool]:
    """``(tokenized, was it cut)`` (see ``fit_length``); None when nothing learnable is left."""
    one = Example(prompt=ex.prompt, completion=completion, ref=ex.ref, templated=ex.templated)
    full, _ = tokenize_with_flag(one, tokenizer, max_length=10**9)
    if full is None:
        return None, False
    ids, mask = fit_length(full.input_ids, full.loss_mask, max_length)
    if not any(mask[1:]):
        return None, True
    return TokenizedExample(ids, mask, ex.ref), len(ids) < len(full.input_ids)


def tokenize_pairs_for_policy(examples: Sequence[Example], tokenizer, *, max_length: int, on_error: str = "raise") -> SequenceSet:
    """Pairs (``Example.rejected`` set) as chosen/rejected sequences. A pair is left out (a ``DataError``,
    or counted in ``skipped`` with ``on_error="skip"``) when its two replies are the same text, or truncation
    leaves a side with no completion token or makes both sides the same tokens."""
    out = SequenceSet([], [], [], [])
    for ex in examples:
        if not ex.is_preference:
            raise DataError(ex.ref, "not a preference pair (no rejected response)", field="rejected")
        same = same_sides(ex)
        if same is not None:
            if on_error == "raise":
                raise same
            out.skipped.append(same)
            continue
        chosen, cut_c = _tokenize_one(ex, ex.chosen, tokenizer, max_length)
        rejected, cut_r = _tokenize_one(ex, ex.rejected, tokenizer, max_length)
        problem = None
        if chosen is None or rejected is None:
            side = "chosen" if chosen is None else "rejected"
            problem = (f"no {side} token left to learn within max_length={max_length}", side)
        elif chosen.input_ids == rejected.input_ids:
            problem = (f"chosen and rejected are the same {len(chosen.input_ids)} tokens after truncation", "rejected")
        if problem:
            err = DataError(ex.ref, problem[0], field=problem[1])
            if on_error == "raise":
                raise err
            out.skipped.append(err)
            continue
        out.first.append(len(out.sequences))
        out.second.append(len(out.sequences) + 1)
        out.sequences += [chosen, rejected]
        out.refs.append(ex.ref)
        out.truncated += cut_c or cut_r
    return out


def unpair(examples: Sequence[Example], *, on_error: str = "raise", skipped: list[DataError] | None = None) -> list[Example]:
    """Preference pairs -> unpaired rows: ``(prompt, chosen, label=True)`` and ``(prompt, rejected, label=False)``.
    A pair whose two replies are the same text is a ``DataError``, or with ``on_error="skip"`` left out and
    appended to ``skipped``."""
    out = []
    for ex in examples:
        same = same_sides(ex)
        if same is not None:
            if on_error == "raise" or skipped is None:
                raise same
            skipped.append(same)
            continue
        out.append(Example(prompt=ex.prompt, completion=ex.chosen, ref=ex.ref, templated=ex.templated, meta={"label": True}))
        out.append(Example(prompt=ex.prompt, completion=ex.rejected, ref=ex.ref, templated=ex.templated, meta={"label": False}))
    return out


def kl_partners(n: int, seed: int) -> list[int]:
    """A seeded derangement of range(n): row i's KL partner is another row's completion (n >= 2)."""
    if n < 2:
        raise ValueError("KTO needs at least two rows (each row's KL estimate uses another row's completion)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partner = [0] * n
    for k, i in enumerate(order):  # a cycle through the shuffled order: nobody is their own partner
        partner[i] = order[(k + 1) % n]
    return partner


def tokenize_unpaired(
    examples: Sequence[Example], tokenizer, *, max_length: int, seed: int, on_error: str = "raise"
) -> SequenceSet:
    """Unpaired rows (``meta["label"]``) as completion sequences plus KL-partner sequences."""
    kept: list[tuple[Example, TokenizedExample]] = []
    out = SequenceSet([], [], [], [], desirable=[])
    for ex in examples:
        if "label" not in ex.meta:
            raise DataError(ex.ref, "unpaired rows need a boolean label (desirable or not)", field="label")
        tok, cut = _tokenize_one(ex, ex.completion, tokenizer, max_length)
        if tok is None:
            err = DataError(ex.ref, f"no completion token left within max_length={max_length}", field="completion")
            if on_error == "raise":
                raise err
            out.skipped.append(err)
            continue
        kept.append((ex, tok))
        out.truncated += cut
    partners = kl_partners(len(kept), seed)
    for i, (ex, tok) in enumerate(kept):
        out.sequences.append(tok)
        out.first.append(i)
        out.refs.append(ex.ref)
        out.desirable.append(bool(ex.meta["label"]))
    for i, (ex, _) in enumerate(kept):
        other = kept[partners[i]][0]
        kl, _ = _tokenize_one(ex, other.completion, tokenizer, max_length)
        if kl is None:  # the prompt leaves no room for the other completion: use the row's own, cut
            kl = out.sequences[i]
        out.second.append(len(out.sequences))
        out.sequences.append(kl)
    return out
