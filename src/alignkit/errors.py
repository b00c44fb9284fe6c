"""What every layer's one-line user errors share."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (a library's multi-line error, cut for a one-line report), or its
    type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
