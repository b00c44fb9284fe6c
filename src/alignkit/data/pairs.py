"""Preference pairs for reward models: render prompt + response as text, tokenize, collate.

A reward model scores a whole conversation that ends with the response. The text is rendered

- ``template="chat"``: with the tokenizer's chat template (prompt turns + one assistant turn), or
- ``template="plain"``: as ``"User: …\\n\\nAssistant: …"`` text (encoders such as BERT have no chat
  template), tokenized with the tokenizer's own special tokens ([CLS] … [SEP]).

Conversations longer than ``max_length`` tokens are truncated **from the left**: the earliest turns
go first and the end of the response, the thing being judged, is always kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alignkit.data.chat import ENCODE_LOCK, encode_chat_spans
from alignkit.data.errors import DataError, RowRef
from alignkit.data.examples import Example, as_messages, messages_as_text
from alignkit.data.formats import same_sides

TEMPLATES = ("chat", "plain")
if TYPE_CHECKING:
    import torch


def render_text(prompt: str | Sequence, response: str, tokenizer, template: str) -> str:
    """The text a reward model scores: the prompt's turns followed by ``response`` as the assistant's."""
    messages = as_messages(prompt) + [{"role": "assistant", "content": response}]
    if template == "chat":
        return tokenizer.apply_chat_template(messages, tokenize=False)
    if template == "plain":
        return messages_as_text(messages)
    raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")


@dataclass
class Encoded:
    """Conversations as a reward model reads them."""

    ids: list[list[int]]  # (N, T_i) token ids, left-truncated to max_length
    # (N,) index of each sequence's first response token (0 if truncation cut into it; the last token for an empty
    # response), or -1 when the response cannot be located: its text is not in the rendered conversation (the
    # template changed it) or truncation left none of its tokens
    starts: list[int]
    truncated: list[bool]  # (N,) whether the sequence was cut


def _response_start(offsets, char_start: int, char_end: int) -> int:
    """The first token overlapping the response's characters ``[char_start, char_end)`` (special tokens have empty
    spans); -1 when none does or ``char_start`` is -1 (not found). An empty response is its sequence's last token."""
    if char_start < 0:
        return -1
    if char_start == char_end:
        return max(len(offsets) - 1, 0)  # an empty response: the end-of-sequence token stands for it
    for i, (a, b) in enumerate(offsets):
        if b > a and b > char_start and a < char_end:
            return i
    return -1


def _find_response(text: str, response: str) -> tuple[int, int]:
    """``(start, end)`` characters of ``response`` in the rendered ``text`` (its last occurrence; a template that trims
    the reply is allowed for), ``(len(text), len(text))`` for an empty one, ``(-1, -1)`` when it is not there."""
    if not response:
        return len(text), len(text)
    for r in (response, response.strip()):
        at = text.rfind(r) if r else -1
        if at >= 0:
            return at, at + len(r)
    return -1, -1


def _encode_chat_one(prompt, response: str, tokenizer, max_length: int) -> tuple[list[int], int, bool]:
    """``(ids left-truncated to max_length, index of the response's first token, was it cut)`` through the chat
    template, message content tokenized as text (``alignkit.data.chat``)."""
    messages = as_messages(prompt) + [{"role": "assistant", "content": response}]
    enc = encode_chat_spans(tokenizer, messages, add_generation_prompt=False)
    cut = max(len(enc.ids) - max_length, 0)
    ids = enc.ids[cut:]
    span = enc.spans[-1]
    if not response:
        start = max(len(ids) - 1, 0)  # an empty response: the end-of-sequence token stands for it
    elif span is None or span[1] - cut <= 0:  # the template changed it, or truncation left none of it
        start = -1
    else:
        start = max(span[0] - cut, 0)
    return ids, start, cut > 0


def encode_conversations(
    prompts, responses, tokenizer, *, template: str, max_length: int, refs: Sequence[RowRef] | None = None
) -> Encoded:
    """Render (``render_text``) and tokenize each (prompt, response), left-truncated to ``max_length``.

    Message content is tokenized as text: a special-token string in it (``<|im_end|>``, ``[SEP]``) never becomes the
    control token. ``chat`` goes through ``alignkit.data.chat.encode_chat_spans`` (the template writes its own
    special tokens); ``plain`` adds the tokenizer's ([CLS]/[SEP], BOS ...), which truncation keeps.

    Raises:
        ValueError (a ``DataError`` naming the row when ``refs`` is given): the chat template rewrites content
            holding a special-token string.
    """
    if template == "chat":
        ids, starts, flags = [], [], []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            try:
                x, start, cut = _encode_chat_one(p, r, tokenizer, max_length)
            except ValueError as err:
                if refs is None:
                    raise
                raise DataError(refs[i], str(err)) from None
            ids.append(x)
            starts.append(start)
            flags.append(cut)
        return Encoded(ids=ids, starts=starts, truncated=flags)
    texts = [render_text(p, r, tokenizer, template) for p, r in zip(prompts, responses)]
    spans = [_find_response(t, r) for t, r in zip(texts, responses)]
    kw = {"add_special_tokens": True, "return_offsets_mapping": True, "split_special_tokens": True}
    with ENCODE_LOCK:  # the tokenizer's split-special flag and truncation side are shared state (data.chat)
        enc = tokenizer(texts, **kw)
        ids = [list(x) for x in enc["input_ids"]]
        offsets = list(enc["offset_mapping"])
        over = [i for i, x in enumerate(ids) if len(x) > max_length]
        if over:
            side = tokenizer.truncation_side
            tokenizer.truncation_side = "left"
            try:
                cut = tokenizer([texts[i] for i in over], truncation=True, max_length=max_length, **kw)
            finally:
                tokenizer.truncation_side = side
        for j, i in enumerate(over):
            ids[i], offsets[i] = list(cut["input_ids"][j]), cut["offset_mapping"][j]
    flags = [False] * len(texts)
    for i in over:
        flags[i] = True
    starts = [_response_start(o, a, b) for o, (a, b) in zip(offsets, spans)]
    return Encoded(ids=ids, starts=starts, truncated=flags)


@dataclass
class TokenizedPair:
    chosen_ids: list[int]  # (Tc,) prompt + chosen response, left-truncated
    rejected_ids: list[int]  # (Tr,) prompt + rejected response, left-truncated
    margin: float  # required reward gap (0 when the row has none)
    ref: RowRef
    subset: str | None = None
    chosen_start: int = 0  # index of the chosen response's first token in chosen_ids
    rejected_start: int = 0  # index of the rejected response's first token in rejected_ids


@dataclass
class TokenizedPairs:
    pairs: list[TokenizedPair]
    truncated: int  # pairs with at least one side cut from the left
    skipped: list[DataError]  # pairs whose two sides are the same tokens (with on_error="skip")


def pair_margin(ex: Example) -> float:
    return float(ex.meta.get("margin", 0.0))


def tokenize_pairs(
    examples: Sequence[Example], tokenizer, *, template: str, max_length: int, on_error: str = "raise"
) -> TokenizedPairs:
    """Tokenize preference examples (``Example.rejected`` set) for reward modelling.

    A pair whose chosen and rejected replies are the same text, or give the same ids (e.g. they differ only in
    the part cut by truncation), cannot be ranked: a ``DataError``, or with ``on_error="skip"`` counted in
    ``skipped``.
    """
    skipped: list[DataError] = []
    kept = []
    for ex in examples:
        if not ex.is_preference:
            raise DataError(ex.ref, "not a preference pair (no rejected response)", field="rejected")
        err = same_sides(ex)
        if err is not None:
            if on_error == "raise":
                raise err
            skipped.append(err)
            continue
        kept.append(ex)
    examples = kept
    prompts = [ex.prompt for ex in examples]
    kw = {"template": template, "max_length": max_length, "refs": [ex.ref for ex in examples]}
    chosen = encode_conversations(prompts, [ex.chosen for ex in examples], tokenizer, **kw)
    rejected = encode_conversations(prompts, [ex.rejected for ex in examples], tokenizer, **kw)
    pairs: list[TokenizedPair] = []
    truncated = 0
    for k, (ex, c, r, cc, rc) in enumerate(zip(examples, chosen.ids, rejected.ids, chosen.truncated, rejected.truncated)):
        if c == r:
            err = DataError(
                ex.ref, f"chosen and rejected are the same {len(c)} tokens after tokenization/truncation", field="rejected"
            )
            if on_error == "raise":
                raise err
            skipped.append(err)
            continue
        truncated += cc or rc
        pairs.append(TokenizedPair(c, r, pair_margin(ex), ex.ref, ex.meta.get("subset"), chosen.starts[k], rejected.starts[k]))
    return TokenizedPairs(pairs=pairs, truncated=truncated, skipped=skipped)


@dataclass
class PairBatch:
    """B pairs scored in one forward pass: sequences [0, B) are the chosen sides, [B, 2B) the rejected.

    Padded: one row per sequence. Packed (padding-free, decoders): the 2B sequences concatenated into
    R rows of at most ``max_row_tokens`` (first-fit decreasing; tail padding of a short row is a block
    of its own), positions restarting at 0 for each sequence, and ``ends`` the flat index (row * T +
    column) of each sequence's last token.
    """

    input_ids: torch.Tensor  # padded (2B, T) right-padded with the pad id | packed (R, T)
    attention_mask: torch.Tensor | None  # padded (2B, T) 1 on real tokens | packed None
    margin: torch.Tensor  # (B,) float32 required reward gaps
    num_pairs: int  # B
    position_ids: torch.Tensor | None = None  # packed (R, T) position within each sequence
    ends: torch.Tensor | None = None  # packed (2B,) flat index of each sequence's last token
    real_tokens: int | None = None  # packed: tokens that are not row-tail padding
    pool_mask: torch.Tensor | None = None  # padded (2B, T) 1 on response tokens (pooling "response_mean")

    def to(self, device) -> PairBatch:
        def move(t):
            return None if t is None else t.to(device)

        return PairBatch(
            self.input_ids.to(device),
            move(self.attention_mask),
            self.margin.to(device),
            self.num_pairs,
            move(self.position_ids),
            move(self.ends),
            self.real_tokens,
            move(self.pool_mask),
        )

    @property
    def num_tokens(self) -> int:
        if self.attention_mask is not None:
            return int(self.attention_mask.sum())
        return self.real_tokens if self.real_tokens is not None else self.input_ids.numel()

    def model_inputs(self) -> dict:
        """Keyword arguments of ``RewardScorer.forward``."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "ends": self.ends,
            "pool_mask": self.pool_mask,
        }


def response_mask(lengths: Sequence[int], starts: Sequence[int], width: int):
    """(N, width) 1 on positions [start, length) of each sequence: its response tokens (none for a start of -1, a
    response that could not be located)."""
    import torch

    pos = torch.arange(width)
    start = torch.tensor(starts)[:, None]
    return ((pos >= start) & (start >= 0) & (pos < torch.tensor(lengths)[:, None])).long()


def check_responses_located(pairs: Sequence[TokenizedPair]) -> None:
    """For ``response_mean`` pooling: a ``DataError`` naming the first pair whose chosen or rejected response cannot
    be located in its tokens (it would otherwise be pooled over nothing, or over the whole conversation)."""
    for p in pairs:
        for side, start in (("chosen", p.chosen_start), ("rejected", p.rejected_start)):
            if start < 0:
                raise DataError(
                    p.ref,
                    "pooling 'response_mean' cannot locate this response in the tokenized conversation (the chat "
                    "template changed its text, or truncation to data.max_length left none of it); fix the data or "
                    "template, raise data.max_length, or use another pooling",
                    field=side,
                )


def pad_sequences(seqs: Sequence[Sequence[int]], pad_token_id: int):
    """``(input_ids, attention_mask)``, both (N, T_max), right-padded."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def collate_pairs(
    pairs: Sequence[TokenizedPair], pad_token_id: int, packed: bool = False, max_row_tokens: int | None = None
) -> PairBatch:
    """Padded (2B, T) rows, or with ``packed`` padding-free rows of at most ``max_row_tokens`` (None: one row)."""
    import torch

    from alignkit.data.collate import pack_rows

    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    margin = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    if not packed:
        ids, mask = pad_sequences(seqs, pad_token_id)
        starts = [p.chosen_start for p in pairs] + [p.rejected_start for p in pairs]
        pool = response_mask([len(x) for x in seqs], starts, ids.shape[1])
        return PairBatch(ids, mask, margin, len(pairs), pool_mask=pool)
    groups = pack_rows([len(s) for s in seqs], max_row_tokens)
    width = max(sum(len(seqs[i]) for i in g) for g in groups)
    ids, positions, ends = [], [], [0] * len(seqs)
    for r, group in enumerate(groups):
        row_ids: list[int] = []
        row_pos: list[int] = []
        for i in group:
            row_ids += seqs[i]
            row_pos += range(len(seqs[i]))
            ends[i] = r * width + len(row_ids) - 1
        k = width - len(row_ids)
        ids.append(row_ids + [pad_token_id] * k)
        positions.append(row_pos + list(range(k)))  # the tail padding is a sequence of its own
    return PairBatch(
        torch.tensor(ids, dtype=torch.long),
        None,
        margin,
        len(pairs),
        position_ids=torch.tensor(positions, dtype=torch.long),
        ends=torch.tensor(ends, dtype=torch.long),
        real_tokens=sum(len(s) for s in seqs),
    )


def write_preference_jsonl(examples: Sequence[Example], path) -> None:
    """Write pairs as ``{prompt: [messages], chosen, rejected, source[, margin, subset]}`` JSON lines
    (the ``preference`` format, readable by every alignkit command)."""
    from alignkit.io_atomic import write_jsonl

    rows = []
    for ex in examples:
        row = {"prompt": as_messages(ex.prompt), "chosen": ex.chosen, "rejected": ex.rejected, "source": str(ex.ref)}
        row.update({k: ex.meta[k] for k in ("margin", "subset") if k in ex.meta})
        rows.append(row)
    write_jsonl(path, rows)
