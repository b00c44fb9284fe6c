"""LLM-as-a-judge for self-rewarding rounds: the rubric prompt, score parsing, and the judges.

The public names load on first use (module ``__getattr__``), so ``import alignkit.judge`` stays light: no torch,
no transformers until a model-backed judge runs.

- :data:`RUBRIC_PROMPT`, :data:`RUBRIC_VERSION`, :func:`judge_prompt`, :func:`parse_score` (``rubric``): the
  additive 5-point prompt of Yuan et al. 2024 and the parser for what judges write.
- :class:`Judge`, :class:`Judgment`, :class:`SelfJudge`, :class:`RewardModelJudge`, :class:`FunctionJudge`,
  :class:`JudgeError`, :func:`agreement`, :func:`count_unscored` (``judges``): who scores, and how often a judge
  agrees with human preference labels.
- ``rules``: rule-based judge functions (``alignkit.judge.rules:letter_score``) for tiny runs and as examples.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RUBRIC_PROMPT": "rubric",
    "RUBRIC_VERSION": "rubric",
    "judge_prompt": "rubric",
    "parse_score": "rubric",
    "Judge": "judges",
    "Judgment": "judges",
    "SelfJudge": "judges",
    "RewardModelJudge": "judges",
    "FunctionJudge": "judges",
    "JudgeError": "judges",
    "agreement": "judges",
    "count_unscored": "judges",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:  # AttributeError lets `from alignkit.judge import rules` fall back to the submodule
        raise AttributeError(f"module 'alignkit.judge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"alignkit.judge.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
