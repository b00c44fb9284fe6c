"""The one thing every stage that needs scores takes: a ``Scorer`` (plain Python, no torch).

A scorer is anything called as ``scorer(prompts, responses)`` that returns one score per response, in order:

- a trained reward model: ``alignkit.models.reward.RewardModel`` (``RewardModel.load(DIR)``);
- a reward source of an RL stage: ``alignkit.rl.rewards.RewardSource`` (a reward model dir or a
  ``"file.py:fn"`` function);
- a judge: ``alignkit.judge.judges.SelfJudge`` / ``RewardModelJudge`` / ``FunctionJudge`` (their ``judgments``
  method keeps the raw verdicts);
- a plain function ``fn(prompts, responses) -> list[float]``.

``prompts`` are chat prompts: a string (one user turn) or a list of ``{"role", "content"}`` messages (or
``alignkit.data.examples.Message``); ``responses`` are decoded text.

**Missing scores.** A score is a finite float, or ``None`` when the scorer could not score that response (a
judge whose verdict did not parse). Reward models and reward functions always return finite floats. A
consumer that cannot use a missing score (PPO's rewards) passes the result through
``checked_scores(..., allow_missing=False)``, which turns a ``None`` into a one-line ``ScoreError``; consumers
that can (compare, self-reward's evaluation) count and skip them. ``NaN`` is never a score: ``checked_scores``
reads a non-finite value as missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from alignkit.errors import UserError

Prompt = str | Sequence[Any]  # one user turn, or {"role", "content"} messages (dicts or data.examples.Message)


@runtime_checkable
class Scorer(Protocol):
    """Prompts and responses in, one score each out (a finite float, or None: "could not score this one")."""

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> Sequence[float | None]: ...


class ScoreError(UserError, ValueError):
    """A scorer returned something unusable (wrong count, a non-number, a missing score where one is needed)."""


def scorer_name(scorer: object) -> str:
    """A label for ``scorer`` in logs and summaries: its ``name`` attribute, a function's qualified name, or
    its type's name."""
    name = getattr(scorer, "name", None)
    if isinstance(name, str) and name:
        return name
    qualname = getattr(scorer, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{getattr(scorer, '__module__', '?')}.{qualname}"
    return type(scorer).__name__


def checked_scores(scores: Sequence[object], n: int, *, name: str = "scorer", allow_missing: bool = True) -> list[float | None]:
    """``scores`` as a list of finite floats and Nones (non-finite values read as None), checked to hold ``n``.

    A wrong count, a non-number (a string, a bool) or - with ``allow_missing=False`` - a missing score is a
    one-line ``ScoreError`` naming ``name`` and the first offending response.
    """
    if isinstance(scores, (str, bytes)) or not hasattr(scores, "__len__"):
        raise ScoreError(f"{name}: expected a list of scores, got {type(scores).__name__}")
    if len(scores) != n:
        raise ScoreError(f"{name}: {len(scores)} scores for {n} responses")
    out: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            value = None
        elif isinstance(s, (str, bytes, bool)) or not hasattr(s, "__float__"):
            raise ScoreError(f"{name}: score {i} is not a number ({s!r:.60})")
        else:
            value = float(s)
            value = value if math.isfinite(value) else None
        if value is None and not allow_missing:
            raise ScoreError(f"{name}: no usable score for response {i} ({s!r}); this stage needs a finite score for each")
        out.append(value)
    return out
