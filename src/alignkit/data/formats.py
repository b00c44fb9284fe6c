"""Row formats: detect them and convert each row to the one internal ``Example``.

Formats (the names are the values of the config key ``data.format``):

- ``text``: ``{"text": str}``. Plain text, no chat template, the whole text is learned.
- ``prompt_completion``: ``{"prompt", "completion"}``, each a string or (TRL "conversational
  prompt-completion") a list of ``{role, content}`` messages. A string prompt becomes one user turn;
  a completion list must be exactly one assistant message. Unlike TRL, string rows are *templated*
  (rendered with the chat template as user → assistant), not concatenated as raw text.
- ``prompt_only``: ``{"prompt": str | [messages]}`` (TRL's prompt-only rows): prompts for RL and
  evaluation; the ``Example`` has an empty completion (nothing to learn: SFT refuses such data).
- ``unpaired``: ``{"prompt", "completion", "label": bool}`` (TRL's unpaired preference / KTO rows):
  one completion marked desirable (true) or undesirable (false), kept in ``Example.meta["label"]``.
- ``messages``: ``{"messages": [{role, content}, ...]}`` with roles system/user/assistant.
- ``sharegpt``: ``{"conversations": [{"from": human|gpt|system (also user/assistant), "value"}]}``.
- ``preference``: TRL style ``{prompt, chosen, rejected}`` (strings or message lists), or the
  implicit-prompt form ``{chosen, rejected}`` as whole conversations (message lists) that share
  every turn but the last, which must be the assistant's.
- ``hh_rlhf``: Anthropic hh-rlhf ``{chosen, rejected}`` whole ``"\\n\\nHuman: …\\n\\nAssistant: …"``
  transcripts. They are split at the last ``"\\n\\nAssistant:"`` that both share: before it is the
  prompt (parsed into user/assistant turns), after it the chosen / rejected replies (stripped).
- ``rm_static``: Dahoas ``{prompt, response, chosen, rejected}``; ``prompt`` is a Human/Assistant
  transcript ending in ``"Assistant:"``, ``chosen``/``rejected`` the replies. ``response`` is ignored
  (in Dahoas/rm-static it is a copy of ``chosen``) and need not be present.

Chat rows: the prompt is every turn before the last one, which must be the assistant's; its content
is the completion. Every problem is a ``DataError`` naming the file, the line and the field.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from alignkit.data.errors import DataError, RowRef, report_skipped
from alignkit.data.examples import Example, Message
from alignkit.data.mixture import DataSource
from alignkit.data.sources import read_rows_or_errors

FORMATS = ("text", "prompt_only", "prompt_completion", "unpaired", "messages", "sharegpt", "preference", "hh_rlhf", "rm_static")

_ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass
class LoadedData:
    """The result of ``load_examples``: ``rows_read == len(examples) + len(skipped)``."""

    examples: list[Example]
    format: str | None  # the format used for every row (detected from the first row when fmt="auto")
    rows_read: int
    skipped: list[DataError] = field(default_factory=list)  # with on_error="skip"


# ---------------------------------------------------------------------------------------- detection


def detect_format(row: dict, ref: RowRef) -> str:
    """The format of ``row`` from its keys and value types (see the module doc for each format)."""
    keys = set(row)
    if "conversations" in keys:
        return "sharegpt"
    if "messages" in keys:
        return "messages"
    if {"chosen", "rejected"} <= keys:
        prompt = row.get("prompt")
        if "prompt" in keys:
            if "response" in keys or (isinstance(prompt, str) and _is_hh_transcript_prompt(prompt)):
                return "rm_static"
            return "preference"
        if isinstance(row["chosen"], list):
            return "preference"
        if isinstance(row["chosen"], str) and "Assistant:" in row["chosen"]:
            return "hh_rlhf"
        raise DataError(
            ref,
            "cannot detect the format: 'chosen'/'rejected' without 'prompt' must be message lists "
            "(implicit-prompt preference) or Human/Assistant transcripts (hh_rlhf)",
        )
    if "prompt" in keys and not keys & {"completion", "chosen", "rejected", "response", "label"}:
        return "prompt_only"
    if {"prompt", "completion", "label"} <= keys:
        return "unpaired"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    found = ", ".join(sorted(map(str, keys))) or "none"
    raise DataError(
        ref,
        f"cannot detect the format from the keys found [{found}]; expected text | prompt+completion | "
        "messages | conversations | prompt+chosen+rejected | chosen+rejected (set data.format explicitly?)",
    )


def _is_hh_transcript_prompt(prompt: str) -> bool:
    stripped = prompt.rstrip()
    return "Human:" in stripped and stripped.endswith("Assistant:")


# ---------------------------------------------------------------------------------------- field checks


def _get(row: dict, key: str, ref: RowRef) -> object:
    if key not in row or row[key] is None:
        raise DataError(ref, "missing", field=key)
    return row[key]


def _str_value(value: object, ref: RowRef, name: str) -> str:
    if not isinstance(value, str):
        raise DataError(ref, f"expected a string, got {type(value).__name__}", field=name)
    if not value.strip():
        raise DataError(ref, "empty string", field=name)
    return value


def _get_str(row: dict, key: str, ref: RowRef) -> str:
    return _str_value(_get(row, key, ref), ref, key)


def _messages(value: object, ref: RowRef, name: str, *, sharegpt: bool = False) -> list[Message]:
    """Parse a list of ``{role, content}`` (or ShareGPT ``{from, value}``) dicts."""
    if not isinstance(value, list):
        raise DataError(ref, f"expected a list of messages, got {type(value).__name__}", field=name)
    if not value:
        raise DataError(ref, "empty list of messages", field=name)
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    out = []
    for i, turn in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(ref, f"expected a message object, got {type(turn).__name__}", field=where)
        if role_key not in turn:
            raise DataError(ref, "missing", field=f"{where}.{role_key}")
        if content_key not in turn or turn[content_key] is None:
            raise DataError(ref, "missing", field=f"{where}.{content_key}")
        role = turn[role_key]
        if sharegpt:
            if role not in _SHAREGPT_ROLES:
                raise DataError(
                    ref, f"unknown role {role!r}; expected one of {', '.join(_SHAREGPT_ROLES)}", field=f"{where}.from"
                )
            role = _SHAREGPT_ROLES[role]
        elif role not in _ROLES:
            raise DataError(ref, f"unknown role {role!r}; expected one of {', '.join(_ROLES)}", field=f"{where}.role")
        content = _str_value(turn[content_key], ref, f"{where}.{content_key}")
        out.append(Message(role, content))
    return out


def _split_last_assistant(turns: list[Message], ref: RowRef, name: str) -> tuple[tuple[Message, ...], str]:
    if turns[-1].role != "assistant":
        raise DataError(ref, f"the last turn must be the assistant's, got {turns[-1].role!r}", field=name)
    return tuple(turns[:-1]), turns[-1].content


def same_sides(ex: Example) -> DataError | None:
    """The error of a preference pair whose chosen and rejected replies are the same text, else None.

    Checked by the stages that rank the two sides (reward model, DPO, KTO from pairs), not by the format
    converters: SFT on the chosen replies, PPO and compare prompts read such rows fine."""
    if ex.is_preference and ex.chosen == ex.rejected:
        return DataError(ex.ref, "chosen equals rejected: a pair needs two different replies to rank", field="rejected")
    return None


def _pair_meta(row: dict, ref: RowRef) -> dict:
    """Optional per-pair columns: ``margin`` (a number: the reward gap required) and ``subset`` (a label)."""
    meta: dict = {}
    margin = row.get("margin")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise DataError(ref, f"expected a finite number, got {margin!r}", field="margin")
        meta["margin"] = float(margin)
    subset = row.get("subset")
    if subset is not None:
        meta["subset"] = str(subset)
    return meta


def _prompt(value: object, ref: RowRef, name: str = "prompt") -> tuple[Message, ...]:
    """A prompt given as a string (one user turn) or a message list (must not end with the assistant)."""
    if isinstance(value, str):
        return (Message("user", _str_value(value, ref, name)),)
    if not isinstance(value, list):
        raise DataError(ref, f"expected a string or a list of messages, got {type(value).__name__}", field=name)
    turns = _messages(value, ref, name)
    if turns[-1].role == "assistant":
        raise DataError(ref, "the prompt must not end with an assistant turn", field=name)
    return tuple(turns)


def _reply(value: object, ref: RowRef, name: str) -> str:
    """A reply given as a string or a list of exactly one assistant message."""
    if isinstance(value, str):
        return _str_value(value, ref, name)
    if not isinstance(value, list):
        raise DataError(ref, f"expected a string or a list of messages, got {type(value).__name__}", field=name)
    turns = _messages(value, ref, name)
    if len(turns) != 1 or turns[0].role != "assistant":
        raise DataError(ref, "expected exactly one assistant message", field=name)
    return turns[0].content


# ---------------------------------------------------------------------------------------- converters


def _from_text(row: dict, ref: RowRef) -> Example:
    return Example(prompt=(), completion=_get_str(row, "text", ref), ref=ref, templated=False)


def _from_prompt_completion(row: dict, ref: RowRef) -> Example:
    prompt = _prompt(_get(row, "prompt", ref), ref)
    completion = _reply(_get(row, "completion", ref), ref, "completion")
    return Example(prompt=prompt, completion=completion, ref=ref)


def _from_prompt_only(row: dict, ref: RowRef) -> Example:
    return Example(prompt=_prompt(_get(row, "prompt", ref), ref), completion="", ref=ref)


def _from_unpaired(row: dict, ref: RowRef) -> Example:
    ex = _from_prompt_completion(row, ref)
    label = _get(row, "label", ref)
    if not isinstance(label, bool):
        raise DataError(ref, f"expected true or false, got {label!r}", field="label")
    return Example(prompt=ex.prompt, completion=ex.completion, ref=ref, meta={"label": label})


def _from_messages(row: dict, ref: RowRef) -> Example:
    turns = _messages(_get(row, "messages", ref), ref, "messages")
    prompt, completion = _split_last_assistant(turns, ref, "messages")
    return Example(prompt=prompt, completion=completion, ref=ref)


def _from_sharegpt(row: dict, ref: RowRef) -> Example:
    turns = _messages(_get(row, "conversations", ref), ref, "conversations", sharegpt=True)
    prompt, completion = _split_last_assistant(turns, ref, "conversations")
    return Example(prompt=prompt, completion=completion, ref=ref)


def _from_preference(row: dict, ref: RowRef) -> Example:
    if "prompt" in row and row["prompt"] is not None:
        prompt = _prompt(row["prompt"], ref)
        chosen = _reply(_get(row, "chosen", ref), ref, "chosen")
        rejected = _reply(_get(row, "rejected", ref), ref, "rejected")
    else:  # implicit prompt: two whole conversations that differ only in the last (assistant) turn
        chosen_turns = _messages(_get(row, "chosen", ref), ref, "chosen")
        rejected_turns = _messages(_get(row, "rejected", ref), ref, "rejected")
        prompt, chosen = _split_last_assistant(chosen_turns, ref, "chosen")
        rejected_prompt, rejected = _split_last_assistant(rejected_turns, ref, "rejected")
        if prompt != rejected_prompt:
            raise DataError(ref, "chosen and rejected must share every turn but the last", field="rejected")
    return Example(prompt=prompt, completion=chosen, rejected=rejected, ref=ref, meta=_pair_meta(row, ref))


def _parse_hh_turns(text: str, ref: RowRef, name: str) -> tuple[Message, ...]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` → (user a, assistant b); a final empty turn is dropped."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise DataError(ref, "transcript must start with '\\n\\nHuman:'", field=name)
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        turns.append(Message("user" if speaker == "Human" else "assistant", content.strip()))
    if turns and turns[-1].role == "assistant" and not turns[-1].content:
        turns.pop()  # "...\n\nAssistant:" = the generation prompt
    if not turns:
        raise DataError(ref, "no Human/Assistant turns found", field=name)
    for i, turn in enumerate(turns):
        if not turn.content:
            raise DataError(ref, f"empty {turn.role} turn {i} in the transcript", field=name)
    if turns[-1].role != "user":
        raise DataError(ref, "the prompt must end with a Human turn", field=name)
    return tuple(turns)


def _from_hh_rlhf(row: dict, ref: RowRef) -> Example:
    chosen_text = _get_str(row, "chosen", ref)
    rejected_text = _get_str(row, "rejected", ref)
    shared = os.path.commonprefix([chosen_text, rejected_text])
    cut = shared.rfind(_HH_ASSISTANT)
    if cut < 0:
        raise DataError(ref, "chosen and rejected share no '\\n\\nAssistant:' prefix", field="rejected")
    prompt = _parse_hh_turns(chosen_text[:cut], ref, "chosen")
    chosen = chosen_text[cut + len(_HH_ASSISTANT) :].strip()
    rejected = rejected_text[cut + len(_HH_ASSISTANT) :].strip()
    if not chosen:
        raise DataError(ref, "empty reply after the last shared '\\n\\nAssistant:'", field="chosen")
    if not rejected:
        raise DataError(ref, "empty reply after the last shared '\\n\\nAssistant:'", field="rejected")
    return Example(prompt=prompt, completion=chosen, rejected=rejected, ref=ref, meta=_pair_meta(row, ref))


def _from_rm_static(row: dict, ref: RowRef) -> Example:
    prompt_text = _get_str(row, "prompt", ref)
    if not prompt_text.rstrip().endswith("Assistant:"):
        raise DataError(ref, "expected a Human/Assistant transcript ending in 'Assistant:'", field="prompt")
    prompt = _parse_hh_turns(prompt_text.rstrip(), ref, "prompt")
    chosen = _get_str(row, "chosen", ref).strip()
    rejected = _get_str(row, "rejected", ref).strip()
    return Example(prompt=prompt, completion=chosen, rejected=rejected, ref=ref, meta=_pair_meta(row, ref))


_CONVERTERS: dict[str, Callable[[dict, RowRef], Example]] = {
    "text": _from_text,
    "prompt_only": _from_prompt_only,
    "prompt_completion": _from_prompt_completion,
    "unpaired": _from_unpaired,
    "messages": _from_messages,
    "sharegpt": _from_sharegpt,
    "preference": _from_preference,
    "hh_rlhf": _from_hh_rlhf,
    "rm_static": _from_rm_static,
}


def _check_format_name(fmt: str, source: str, *, allow_auto: bool) -> None:
    names = (("auto",) if allow_auto else ()) + FORMATS
    if fmt not in names:
        raise DataError(source, f"unknown format {fmt!r}; expected one of {', '.join(names)}", field="format")


def to_example(row: dict, fmt: str, ref: RowRef) -> Example:
    """Convert one raw row of format ``fmt`` (not "auto") to an ``Example``; ``DataError`` if it doesn't fit."""
    _check_format_name(fmt, ref.source, allow_auto=False)
    return _CONVERTERS[fmt](row, ref)


# ---------------------------------------------------------------------------------------- loading


def load_examples(
    source: str | Sequence[DataSource],
    *,
    fmt: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    max_rows: int | None = None,
) -> LoadedData:
    """Read ``source`` (see ``read_rows``) and convert every row to an ``Example``.

    Args:
        fmt: a format name, or "auto" to detect it from the first row and use it for every row.
        on_error: "raise" stops at the first bad row; "skip" collects the ``DataError``s in
            ``skipped`` (``rows_read == len(examples) + len(skipped)``). A source that cannot be
            read at all (not found, unknown format name, no rows, no row whose format could be
            detected) always raises.
        max_rows: read at most this many rows (of each source, unless the source sets its own).

    A list of ``DataSource`` (``alignkit.data.mixture``) is read source by source and concatenated; each
    example's ``meta["subset"]`` is its source's name unless the row names a subset itself. The format is
    detected per source. ``format`` in the result is the sources' formats joined by ``+`` when they differ.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(source, str):
        parts = [load_examples(s.path, fmt=fmt, split=split, on_error=on_error, max_rows=s.max_rows or max_rows) for s in source]
        for s, part in zip(source, parts):
            for ex in part.examples:
                ex.meta.setdefault("subset", s.name)
        formats = list(dict.fromkeys(p.format for p in parts))
        return LoadedData(
            examples=[ex for p in parts for ex in p.examples],
            format="+".join(formats),
            rows_read=sum(p.rows_read for p in parts),
            skipped=[e for p in parts for e in p.skipped],
        )
    _check_format_name(fmt, source, allow_auto=True)
    loaded = convert_rows(source, fmt=fmt, split=split, max_rows=max_rows, stop_on_error=on_error == "raise")
    if loaded.format is None:  # every row was skipped before a format could be detected
        raise loaded.skipped[0]
    return loaded


NO_PROMPT = "a {format!r} row has no prompt (give prompts, chats or pairs)"


def load_prompt_examples(
    source: str | Sequence[DataSource],
    *,
    fmt: str = "auto",
    split: str = "train",
    on_error: str = "raise",
    max_rows: int | None = None,
    log: Callable[[str], None] | None = None,
    no_prompt: str = NO_PROMPT,
    no_prompt_field: str | None = None,
) -> LoadedData:
    """The rows of ``source`` for a stage that reads prompts (PPO/GRPO, self-reward, compare): ``load_examples``
    (same arguments), the skipped rows reported to ``log`` when one is given, then every example checked to have
    a prompt (``ex.prompt``, the turns before the answer).

    A row without one raises ``DataError(row's file:line, no_prompt, field=no_prompt_field)``; ``no_prompt`` may
    name the detected format as ``{format}``. Callers turn ``ex.prompt`` into what they need (message lists,
    ``compact_prompt``) from the returned ``LoadedData``.
    """
    loaded = load_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    if log is not None:
        report_skipped(loaded.skipped, log)
    for ex in loaded.examples:
        if not ex.prompt:
            raise DataError(ex.ref, no_prompt.format(format=loaded.format), field=no_prompt_field)
    return loaded


def convert_rows(source: str, *, fmt: str, split: str, max_rows: int | None, stop_on_error: bool) -> LoadedData:
    """The row loop of ``load_examples``: bad rows are raised (``stop_on_error``) or collected.

    ``format`` is None in the result when no row's format could be detected (callers decide).
    """
    examples: list[Example] = []
    skipped: list[DataError] = []
    rows_read = 0
    used = None if fmt == "auto" else fmt
    for row, ref in read_rows_or_errors(source, split=split):
        if max_rows is not None and rows_read >= max_rows:
            break
        rows_read += 1
        try:
            if isinstance(row, DataError):
                raise row
            if used is None:
                used = detect_format(row, ref)  # the first readable row decides for every row
            examples.append(_CONVERTERS[used](row, ref))
        except DataError as err:
            if stop_on_error:
                raise
            skipped.append(err)
    if rows_read == 0:
        raise DataError(source, "no rows found (empty file?)")
    return LoadedData(examples=examples, format=used, rows_read=rows_read, skipped=skipped)
