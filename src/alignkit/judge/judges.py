"""Judges: who scores (prompt, response) pairs in a self-rewarding round.

Every judge is an ``alignkit.scoring.Scorer``: ``judge(prompts, responses) -> list[float | None]``, prompts being
chat prompts (a str, or a list of ``Message``s or ``{"role", "content"}`` dicts) and responses decoded text, None
where the judge could not score a response. ``judge.judgments(prompts, responses) -> list[Judgment]`` gives the
same scores with each verdict's samples and raw text (what ``judgments.jsonl`` records). Three kinds:

- :class:`SelfJudge`: a language model reads the rubric prompt (:data:`~alignkit.judge.rubric.RUBRIC_PROMPT`),
  ``samples`` times per pair, and the parsed scores are averaged (Yuan et al. 2024, Self-Rewarding LMs, sec. 2.2);
- :class:`RewardModelJudge`: a trained reward model's score;
- :class:`FunctionJudge`: a Python function ``fn(prompts, responses, **kwargs) -> list[float | None]``
  (see :mod:`alignkit.judge.rules` for examples).

A response the judge could not score has ``Judgment.score is None`` (and a None score): callers count and skip it, it
never crashes a run. Torch and transformers are imported only inside the judges that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from alignkit.data.examples import prompt_text
from alignkit.errors import UserError
from alignkit.judge.rubric import judge_prompt, parse_score
from alignkit.scoring import Scorer, checked_scores, scorer_name


class JudgeError(UserError, ValueError):
    """A judge that cannot be loaded or returned something unusable (one line for the user)."""


@dataclass(frozen=True)
class Judgment:
    """One response's verdict."""

    score: float | None  # the mean of the parsed sample scores; None when no sample gave a usable score
    samples: tuple[float | None, ...]  # each sample's parsed score (one entry for reward-model/function judges)
    raw: tuple[str, ...]  # the judge's raw texts, one per sample (empty for reward-model/function judges)


class Judge(Protocol):
    """A ``Scorer`` that also keeps its verdicts: ``judgments(prompts, responses)`` -> one Judgment per pair, and
    ``judge(prompts, responses)`` -> their scores (None where unscored)."""

    name: str

    def judgments(self, prompts: Sequence, responses: Sequence[str]) -> list[Judgment]: ...

    def __call__(self, prompts: Sequence, responses: Sequence[str]) -> list[float | None]: ...


class _Scores(Scorer):
    """What every judge shares: called as a ``Scorer``, it returns its judgments' scores."""

    def __call__(self, prompts: Sequence, responses: Sequence[str]) -> list[float | None]:
        return [j.score for j in self.judgments(prompts, responses)]


def _check_lengths(name: str, prompts: Sequence, responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise JudgeError(f"judge {name}: {len(prompts)} prompts for {len(responses)} responses")


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


class SelfJudge(_Scores):
    """A language model as its own judge: the rubric prompt, ``samples`` sampled verdicts per pair, parsed, averaged.

    ``generate_fn(prompts: list[str], seed: int) -> list[str]`` returns one completion per judge prompt (each sent
    as one user message). All ``len(pairs) * samples`` judge prompts go to ``generate_fn`` in **one** call (each
    pair's prompt repeated ``samples`` times, consecutively), so the generator batches them however it likes.
    The seed of the n-th call (from 0) is ``seed + n``: repeated calls draw fresh samples, and a rerun that makes
    the same calls gets the same seeds. Samples whose text has no usable score (:func:`parse_score`) are kept
    as ``None`` in ``Judgment.samples``; the score is the mean of the others, ``None`` when none parsed.
    """

    def __init__(
        self,
        generate_fn: Callable[[list[str], int], list[str]],
        *,
        samples: int = 3,
        name: str = "self",
        seed: int = 0,
    ):
        if samples < 1:
            raise JudgeError(f"judge.samples must be >= 1, got {samples}")
        self.generate_fn = generate_fn
        self.samples = samples
        self.name = name
        self.seed = seed
        self.calls = 0  # generate_fn calls made so far: the next call's seed is seed + calls

    def judgments(self, prompts: Sequence, responses: Sequence[str]) -> list[Judgment]:
        _check_lengths(self.name, prompts, responses)
        if not responses:
            return []
        k = self.samples
        judge_prompts = [judge_prompt(prompt_text(p), r) for p, r in zip(prompts, responses) for _ in range(k)]
        seed = self.seed + self.calls
        self.calls += 1
        texts = list(self.generate_fn(judge_prompts, seed))
        if len(texts) != len(judge_prompts):
            raise JudgeError(f"judge {self.name}: {len(texts)} completions for {len(judge_prompts)} judge prompts")
        out = []
        for i in range(len(responses)):
            raw = tuple(str(t) for t in texts[i * k : (i + 1) * k])
            samples = tuple(parse_score(t) for t in raw)
            out.append(Judgment(score=_mean_or_none(samples), samples=samples, raw=raw))
        return out


class RewardModelJudge(_Scores):
    """A trained reward model as the judge (``alignkit.rl.rewards.RewardSource``): every pair gets a finite score,
    on the reward model's own scale (not the rubric's 0..5)."""

    def __init__(self, model_dir: str, *, device="cpu", batch_size: int = 16, name: str | None = None):
        from alignkit.rl.rewards import RewardSource

        self.source = RewardSource(model_dir=model_dir, device=device, batch_size=batch_size)
        self.name = name or f"reward_model {model_dir}"

    def judgments(self, prompts: Sequence, responses: Sequence[str]) -> list[Judgment]:
        from alignkit.rl.rewards import RewardError

        _check_lengths(self.name, prompts, responses)
        if not responses:
            return []
        try:
            scores = self.source(prompts, responses)
        except RewardError as err:
            raise JudgeError(f"judge {self.name}: {err}") from None
        return [Judgment(score=float(s), samples=(float(s),), raw=()) for s in scores]


class FunctionJudge(_Scores):
    """A Python function as the judge: ``spec`` is ``"path/to/file.py:fn"`` or ``"package.module:fn"``.

    ``fn(prompts: list[str], responses: list[str], **kwargs) -> list[float | None]`` gets each prompt as plain text
    (``prompt_text``: the user message of a one-turn prompt). ``None`` and non-finite values mean "no score" (the
    caller counts them); a non-number (a string, a bool) or a result of the wrong length is a one-line
    :class:`JudgeError`. Exceptions raised inside ``fn`` propagate unchanged, with their traceback.
    """

    def __init__(self, spec: str, kwargs: dict | None = None):
        from alignkit.rl.rewards import RewardError, load_reward_function

        try:
            self.fn = load_reward_function(spec)
        except RewardError as err:
            raise JudgeError(str(err).replace("reward.function", "judge.function", 1)) from None
        self.kwargs = dict(kwargs or {})
        self.name = spec + (f" {self.kwargs}" if self.kwargs else "")

    def judgments(self, prompts: Sequence, responses: Sequence[str]) -> list[Judgment]:
        _check_lengths(self.name, prompts, responses)
        if not responses:
            return []
        result = self.fn([prompt_text(p) for p in prompts], list(responses), **self.kwargs)
        if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
            raise JudgeError(f"judge.function {self.name}: expected a list of scores, got {type(result).__name__}")
        if len(result) != len(responses):
            raise JudgeError(f"judge.function {self.name}: {len(result)} scores for {len(responses)} responses")
        out = []
        for i, s in enumerate(result):
            score = _as_score(self.name, i, s)
            out.append(Judgment(score=score, samples=(score,), raw=()))
        return out


def _as_score(name: str, i: int, s) -> float | None:
    """A function judge's value -> a finite float or None; a non-number is a JudgeError naming the response."""
    if s is None:
        return None
    if isinstance(s, (str, bytes, bool)) or not hasattr(s, "__float__"):
        raise JudgeError(f"judge.function {name}: returned a non-number for response {i} ({s!r:.60}); return a float or None")
    try:
        value = float(s)
    except (TypeError, ValueError) as err:  # e.g. a tensor with more than one element
        raise JudgeError(f"judge.function {name}: returned a non-number for response {i} ({err})") from None
    return value if math.isfinite(value) else None


def count_unscored(judgments: Sequence[Judgment]) -> int:
    """How many judgments have no usable score."""
    return sum(j.score is None for j in judgments)


def agreement(judge: Scorer, prompts: Sequence, chosen: Sequence[str], rejected: Sequence[str]) -> dict:
    """How often ``judge`` (any ``Scorer``: a judge, a reward model, a function) prefers the human-chosen answer of
    preference pairs.

    The chosen answers are judged in one call, the rejected ones in another. A pair counts only when both got a
    score: a higher chosen score is 1, a tie 1/2, a lower one 0, averaged over the ``scored_pairs``. Returns
    ``{"agreement": float | None (None when no pair was scored), "pairs", "scored_pairs", "unscored_pairs",
    "ties"}``; 0.5 is what a judge with no preference (or a coin) gets.
    """
    if not len(prompts) == len(chosen) == len(rejected):
        raise JudgeError(f"agreement: {len(prompts)} prompts, {len(chosen)} chosen, {len(rejected)} rejected answers")
    name = scorer_name(judge)
    jc = checked_scores(judge(prompts, chosen), len(chosen), name=name)
    jr = checked_scores(judge(prompts, rejected), len(rejected), name=name)
    wins = ties = scored = 0
    for c, r in zip(jc, jr):
        if c is None or r is None:
            continue
        scored += 1
        if c > r:
            wins += 1
        elif c == r:
            ties += 1
    n = len(prompts)
    return {
        "agreement": (wins + 0.5 * ties) / scored if scored else None,
        "pairs": n,
        "scored_pairs": scored,
        "unscored_pairs": n - scored,
        "ties": ties,
    }
