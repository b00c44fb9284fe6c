"""The one internal representation every data format is converted to."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.data.errors import RowRef


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Example:
    """A conversation plus the completion to learn.

    - chat rows: ``prompt`` is every turn before the last assistant turn, ``completion`` that turn;
    - preference rows: ``completion`` is the chosen reply and ``rejected`` the rejected one;
    - plain text rows: ``prompt`` is empty, ``completion`` is the text and ``templated`` is False
      (rendered raw, no chat template; the whole text is learned).
    """

    prompt: tuple[Message, ...]
    completion: str
    ref: RowRef
    rejected: str | None = None
    templated: bool = True
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def chosen(self) -> str:
        return self.completion

    @property
    def is_preference(self) -> bool:
        return self.rejected is not None


def as_messages(prompt) -> list[dict]:
    """A prompt given as a string (one user turn), ``Message``s or ``{"role", "content"}`` dicts -> a list
    of ``{"role", "content"}`` dicts, as chat templates take them. ``ValueError`` for anything else."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    out = []
    for m in prompt:
        if isinstance(m, Message):
            out.append({"role": m.role, "content": m.content})
        elif isinstance(m, dict) and "role" in m and "content" in m:
            out.append({"role": m["role"], "content": m["content"]})
        else:
            raise ValueError(f"a prompt must be a string or a list of messages, got an item {m!r}")
    return out


def compact_prompt(turns):
    """A prompt as files and reports keep it: the user's text for a single user turn, else ``{role, content}`` dicts."""
    messages = as_messages(turns)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages


ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def messages_as_text(messages: list[dict]) -> str:
    """``"User: …\n\nAssistant: …"``: a conversation as plain text (encoders' template, reward functions)."""
    return "\n\n".join(f"{ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)


def prompt_text(prompt) -> str:
    """A prompt as plain text: the user message itself for a one-turn prompt, else ``messages_as_text``."""
    messages = as_messages(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return messages_as_text(messages)
