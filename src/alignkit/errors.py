"""The one base of every error the CLI reports as a single line, and what those errors share.

``UserError`` marks a mistake the user can fix (a config key, a data row, a model path, a reward function...):
``alignkit`` prints ``alignkit: error: <message>`` and exits with code 2. Anything else is a bug and keeps its
traceback. Each layer keeps its own subclass, so a caller can still catch one kind:

- ``alignkit.config.base.ConfigError`` (also a ``ValueError``), ``alignkit.data.errors.DataError`` (``ValueError``),
  ``alignkit.models.errors.ModelError`` (``ValueError``), ``alignkit.training.errors.TrainingError``
  (``RuntimeError``), ``alignkit.rl.rewards.RewardError`` (``ValueError``), ``alignkit.judge.judges.JudgeError``
  (``ValueError``), ``alignkit.rag.errors.RagError``, ``alignkit.scoring.ScoreError`` (``ValueError``).

This module imports nothing: every layer may import it.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; ``str(err)`` is one line saying what and where. The CLI prints it and exits 2."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (a library's multi-line error, cut for a one-line report), or its
    type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
