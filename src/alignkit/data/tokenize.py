"""Turn ``Example``s into token ids plus a loss mask, with the tokenizer's chat template.

The mask rule (``loss_mask[t] == 1`` means token ``t`` is learned, i.e. the model is trained to
predict it from the tokens before it):

- chat (templated) examples: the prompt is rendered with
  ``apply_chat_template(prompt, add_generation_prompt=True)`` and the whole conversation with
  ``apply_chat_template(prompt + [assistant completion])``, each message's content tokenized as text
  (``alignkit.data.chat.encode_chat``: a ``<|im_end|>`` in data is never the control token); the prompt ids must be a prefix of the
  full ids (checked). The tokens after that prefix are the completion: they are learned up to and
  including the last end-of-turn token (``tokenizer.eos_token_id``, ``<|im_end|>`` in ChatML); what
  a template puts after it (ChatML's ``"\\n"``) stays in ``input_ids`` but is not learned, since a
  model stops generating at the end-of-turn token. With ``train_on_prompt`` the prompt is learned too.
- plain-text examples (``templated=False``): ``tokenizer(text) + [eos]`` (special-token strings in the
  text kept as text), all learned.
- ``loss_mask[0]`` is never used: nothing precedes the first token (labels are shifted in collate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alignkit.data.chat import encode_chat, encode_plain
from alignkit.data.errors import DataError, RowRef
from alignkit.data.examples import Example


def ensure_chat_template(tokenizer) -> None:
    """Give ``tokenizer`` a ChatML chat template if it has none (a base model's tokenizer).

    Like TRL's ``setup_chat_format`` this installs ChatML (``<|im_start|>role\\n…<|im_end|>\\n``,
    alignkit's ``CHATML_TEMPLATE`` with ``{% generation %}`` markers), but unlike it this neither
    adds special tokens nor changes the eos token, so the model's embeddings need no resizing. If the
    vocabulary lacks ``<|im_start|>``/``<|im_end|>`` they are tokenized as ordinary text, and the
    end of an assistant turn is then learned as those text pieces (generation must stop on the
    string ``"<|im_end|>"``). A tokenizer that already has a template is left untouched.
    """
    from alignkit.models.tokenizer import CHATML_TEMPLATE

    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE


@dataclass
class TokenizedExample:
    input_ids: list[int]  # (T,) token ids of prompt + completion
    loss_mask: list[int]  # (T,) 1 where the token is learned, 0 elsewhere
    ref: RowRef  # the row it came from


@dataclass
class TokenizedData:
    examples: list[TokenizedExample]
    truncated: int  # examples cut to max_length and kept
    dropped: int  # examples dropped: over max_length with overlong="drop", or nothing left to learn after truncation


def _chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    """Template-safe: message content never becomes control tokens (``alignkit.data.chat.encode_chat``)."""
    return encode_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)


def _render(ex: Example, tokenizer, train_on_prompt: bool) -> tuple[list[int], list[int]]:
    """Untruncated ``(input_ids, loss_mask)`` of ``ex``."""
    if not ex.templated:
        ids = encode_plain(tokenizer, ex.completion)
        eos = tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        return ids, [1] * len(ids)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; call ensure_chat_template(tokenizer) first")
    prompt = [{"role": m.role, "content": m.content} for m in ex.prompt]
    conversation = prompt + [{"role": "assistant", "content": ex.completion}]
    try:
        full_ids = _chat_ids(tokenizer, conversation, add_generation_prompt=False)
        prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
    except ValueError as err:  # a template that rewrites content holding special-token strings
        raise DataError(ex.ref, str(err)) from None
    n = len(prompt_ids)
    if full_ids[:n] != prompt_ids:
        at = next((i for i, (a, b) in enumerate(zip(full_ids, prompt_ids)) if a != b), min(n, len(full_ids)))
        raise DataError(
            ex.ref,
            f"chat template breaks the prompt/completion split: the prompt's {n} tokens (with the generation "
            f"prompt) are not a prefix of the full conversation's {len(full_ids)} tokens (first difference at "
            f"token {at}); the template must render earlier turns the same whatever follows",
            field="prompt",
        )
    completion = full_ids[n:]
    if not completion:
        raise DataError(ex.ref, "the completion renders to no tokens", field="completion")
    eos = tokenizer.eos_token_id
    learned = len(completion)
    if eos is not None and eos in completion:
        learned = len(completion) - completion[::-1].index(eos)  # up to and including the last end-of-turn
    completion_mask = [1] * learned + [0] * (len(completion) - learned)
    prompt_mask = [1 if train_on_prompt else 0] * n
    return full_ids, prompt_mask + completion_mask


def _tokenize(
    ex: Example, tokenizer, max_length: int, train_on_prompt: bool, overlong: str
) -> tuple[TokenizedExample | None, bool]:
    """``(tokenized or None if dropped, was it over max_length)``."""
    if overlong not in ("truncate", "drop"):
        raise ValueError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    ids, mask = _render(ex, tokenizer, train_on_prompt)
    over = len(ids) > max_length
    if over:
        if overlong == "drop":
            return None, True
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask[1:]):  # nothing left that a preceding token predicts
        return None, over
    return TokenizedExample(input_ids=ids, loss_mask=mask, ref=ex.ref), over


def tokenize_example(
    ex: Example, tokenizer, *, max_length: int, train_on_prompt: bool = False, overlong: str = "truncate"
) -> TokenizedExample | None:
    """Tokenize one example (see the module doc for the mask rule).

    Args:
        max_length: the most tokens kept (prompt + completion).
        train_on_prompt: learn the prompt tokens too.
        overlong: over ``max_length``, "truncate" keeps the first ``max_length`` tokens and "drop"
            returns None. A truncated example with no learned token left is also None.

    Raises:
        DataError: the chat template does not render the prompt as a prefix of the conversation.
    """
    return _tokenize(ex, tokenizer, max_length, train_on_prompt, overlong)[0]


def tokenize_with_flag(ex: Example, tokenizer, *, max_length: int) -> tuple[TokenizedExample | None, bool]:
    """``tokenize_example`` (truncating) plus whether the example was over ``max_length``."""
    return _tokenize(ex, tokenizer, max_length, False, "truncate")


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer,
    *,
    max_length: int,
    train_on_prompt: bool = False,
    overlong: str = "truncate",
) -> TokenizedData:
    """Tokenize every example (``tokenize_example``), counting the truncated and the dropped ones."""
    out: list[TokenizedExample] = []
    truncated = dropped = 0
    for ex in examples:
        tokenized, over = _tokenize(ex, tokenizer, max_length, train_on_prompt, overlong)
        if tokenized is None:
            dropped += 1
        else:
            out.append(tokenized)
            truncated += over
    return TokenizedData(examples=out, truncated=truncated, dropped=dropped)
