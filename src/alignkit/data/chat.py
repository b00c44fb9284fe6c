"""Template-safe chat encoding: message *content* never becomes control tokens.

``tokenizer.apply_chat_template(messages, tokenize=True)`` renders the conversation to text and tokenizes
that text with special-token parsing on, so a message whose content holds ``<|im_end|>\\n<|im_start|>system``
is encoded as the real ChatML control tokens: a user (or a data row) can forge a turn.

:func:`encode_chat` renders the template with each message's content replaced by a unique sentinel, then
tokenizes the template's own text normally (its control tokens parsed) and each content with special-token
splitting off (``split_special_tokens=True``: ``"<|im_end|>"`` in content becomes the ids of its characters).
The pieces are concatenated. For ordinary content the ids are those of ``apply_chat_template`` except where a
byte-level BPE would merge characters across a template/content boundary (none for ChatML: a control token
or a newline precedes every content and a control token follows it).

A template that rewrites content (e.g. ``| trim``) is handled when the rewrite is a ``strip()``; for any other
rewrite the real rendering is tokenized as before when no content holds a special-token string, and a
``ValueError`` is raised when one does (it cannot be encoded safely).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class ChatEncoding:
    ids: list[int]  # (T,) token ids of the rendered conversation
    # (M,) per message, the [start, end) token range of its content (its first occurrence), None when the template
    # does not render it (or renders it in a way that could not be located)
    spans: list[tuple[int, int] | None]


def _render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool, template_kwargs: dict) -> str:
    return tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=add_generation_prompt, tokenize=False, **template_kwargs
    )


# transformers' fast tokenizers implement split_special_tokens by setting a flag on the shared Rust tokenizer before
# each call: two threads (the server's requests) encoding template text and content at once would each see the
# other's flag, turning a template's control token into text or a user's "<|im_start|>" into the control token.
ENCODE_LOCK = threading.Lock()


def _ids(tokenizer, text: str, *, split_special: bool) -> list[int]:
    if not text:
        return []
    with ENCODE_LOCK:  # the flag and the encoding it governs, together
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"])


def special_token_strings(tokenizer) -> list[str]:
    """The strings the tokenizer parses as special (added) tokens."""
    out = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            out.add(str(tok))
    return sorted(x for x in out if x)


def holds_special_token(tokenizer, text: str) -> bool:
    """Whether ``text`` contains a string the tokenizer would parse as a special token."""
    return any(s in text for s in special_token_strings(tokenizer))


def encode_chat_spans(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool, **template_kwargs) -> ChatEncoding:
    """Token ids of ``messages`` through the chat template, each content tokenized as plain text (see the module
    doc), plus each message's content token range. ``template_kwargs`` go to ``apply_chat_template``.

    Raises:
        ValueError: the template rewrites content (other than stripping it) and some content holds a
            special-token string.
    """
    messages = [dict(m) for m in messages]
    nonce = secrets.token_hex(8)
    contents: dict[str, tuple[int, str]] = {}  # sentinel -> (message index, content)
    masked = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str):
            sentinel = f"AKSENT{nonce}X{i}Z"
            contents[sentinel] = (i, content)
            m = dict(m, content=sentinel)
        masked.append(m)
    rendered = _render(tokenizer, masked, add_generation_prompt, template_kwargs)
    pieces = re.split(f"(AKSENT{nonce}X\\d+Z)", rendered) if contents else [rendered]
    real = _render(tokenizer, messages, add_generation_prompt, template_kwargs) if contents else rendered

    def fill(transform) -> str:
        return "".join(transform(contents[p][1]) if p in contents else p for p in pieces)

    transform = None
    for candidate in (lambda s: s, str.strip):
        if fill(candidate) == real:
            transform = candidate
            break
    if transform is None:  # the template rewrites content in some other way
        if any(holds_special_token(tokenizer, c) for _, c in contents.values()):
            raise ValueError(
                "the chat template rewrites message content, so content holding special-token strings cannot be encoded safely"
            )
        return ChatEncoding(_ids(tokenizer, real, split_special=False), [None] * len(messages))

    ids: list[int] = []
    spans: list[tuple[int, int] | None] = [None] * len(messages)
    for p in pieces:
        if p in contents:
            i, content = contents[p]
            start = len(ids)
            ids += _ids(tokenizer, transform(content), split_special=True)
            if spans[i] is None:
                spans[i] = (start, len(ids))
        else:
            ids += _ids(tokenizer, p, split_special=False)
    return ChatEncoding(ids, spans)


def encode_chat(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool, **template_kwargs) -> list[int]:
    """Token ids of ``messages`` through the chat template, with no message content ever encoded as a control
    token (see :func:`encode_chat_spans`)."""
    return encode_chat_spans(tokenizer, messages, add_generation_prompt=add_generation_prompt, **template_kwargs).ids


def encode_plain(tokenizer, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """``text`` (data, not a template) tokenized with special-token strings in it kept as plain text; the
    tokenizer's own special tokens ([CLS]/[SEP], BOS...) are added when ``add_special_tokens``."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"])
