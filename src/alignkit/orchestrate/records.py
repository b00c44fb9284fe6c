"""The typed records the orchestrators pass around and write: a self-reward iteration's summary and its pieces,
the run summary, and the pipeline report. pydantic only (no torch, no transformers), so the report and any
reader of a run directory can load them cheaply.

Files keep the layout of the dicts they replace: ``iter-t/summary.json`` is an :class:`IterationSummary`,
``iter-t/state.json`` maps a step name to its piece (``prompts`` -> :class:`PromptStats`, ...), the run's
``summary.json`` is a :class:`RunSummary` and ``pipeline.json`` a :class:`PipelineReport`. A record writes only
the fields that were set (:meth:`Record.to_dict`): a figure the run did not measure (no reward model, no
previous iteration) is left out of the file as before, one it measured as None is written as ``null``.

Reading (:meth:`Record.from_dict`, :meth:`Record.from_json`) is strict about types and unknown keys, and
lenient about absence: every figure defaults to None, so a file from an older run that lacks one still loads,
while a wrong type (``"pairs": "x"``) or a misspelt key is a one-line :class:`RecordError` naming the file and
the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alignkit.config.base import dotted_key, format_errors
from alignkit.errors import UserError

__all__ = [
    "CI",
    "CandidateStats",
    "EvalFigures",
    "ExamplePair",
    "IterationSummary",
    "JudgingStats",
    "PairStats",
    "PipelineReport",
    "PromptStats",
    "Record",
    "RecordError",
    "RunSummary",
    "StageOutcome",
    "TrainOutcome",
]

CI = Annotated[list[float], Field(min_length=2, max_length=2, description="a 95% interval [low, high]")]


class RecordError(UserError, ValueError):
    """A record file or dict that does not fit its schema: ``"<source>: <field>: <problem> (got <value>)"``."""


class Record(BaseModel):
    """Base of the records: unknown keys and wrong types rejected, no coercion (``"3"`` is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    def to_dict(self) -> dict:
        """The fields that were set (given, read from a file or assigned), in declaration order, nested records
        as dicts: the JSON layout of the file."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "record"):
        """``data`` checked against the record; a mismatch is a one-line :class:`RecordError` naming ``source``
        and the first bad field (and how many more there are)."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:

            def name(loc: tuple) -> str:
                return dotted_key(loc) or cls.__name__

            raise RecordError(format_errors(err, source, name=name, one_line=True)) from None

    @classmethod
    def from_json(cls, path: str | Path):
        """The record in the JSON file ``path`` (see :meth:`from_dict`)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not JSON: {err}") from None
        return cls.from_dict(data, source=str(path))


# ---------------------------------------------------------------------------- self-reward iteration pieces


class PromptStats(Record):
    """Step 1 (``prompts``): the iteration's prompts and where they came from."""

    total: int | None = Field(None, description="prompts kept for the iteration")
    from_dataset: int | None = Field(None, description="of which from the prompt set")
    self_instruct_new: int | None = Field(None, description="of which written by the model (self-instruct)")
    self_instruct_requested: int | None = Field(None, description="self-instruct requests sent to the model")
    self_instruct_too_short: int | None = Field(None, description="written prompts under self_instruct.min_words")
    duplicates_removed: int | None = Field(None, description="repeats, and written prompts copying a held-out one")


class CandidateStats(Record):
    """Step 2 (``candidates``): the sampled answers."""

    prompts: int | None = Field(None, description="prompts sampled")
    samples: int | None = Field(None, description="answers sampled (prompts x generation.n)")
    unique: int | None = Field(None, description="answers kept: non-empty, not a repeat within their prompt")
    duplicates_removed: int | None = Field(None, description="repeated answers removed")
    empty_removed: int | None = Field(None, description="empty answers removed")


class JudgingStats(Record):
    """Step 3 (``judging``): the judge's scores of the candidates."""

    type: str | None = Field(None, description="judge.type: self, reward_model or function")
    judge: str | None = Field(None, description="the judge's display name")
    judgments: int | None = Field(None, description="candidates judged")
    unparseable: int | None = Field(None, description="candidates with no usable score")
    unparseable_rate: float | None = Field(None, description="unparseable / judgments (None without judgments)")
    judge_samples: int | None = Field(None, description="judge samples drawn (judge.samples per candidate)")
    unparseable_samples: int | None = Field(None, description="judge samples whose score could not be read")

    def rate(self) -> float | None:
        """``unparseable_rate``, else the rate from the counts, else None."""
        if self.unparseable_rate is not None:
            return self.unparseable_rate
        if self.unparseable is not None and self.judgments:
            return self.unparseable / self.judgments
        return None


class PairStats(Record):
    """Step 4 (``pairs``): training pairs built (best-of-n: best answers kept) and prompts skipped by reason."""

    SKIP_REASONS: ClassVar[tuple[str, ...]] = ("skipped_few_scores", "skipped_small_gap", "skipped_length_ratio")

    prompts: int | None = Field(None, description="prompts with candidates")
    skipped_few_scores: int | None = Field(None, description="prompts with fewer than two scored candidates")
    skipped_small_gap: int | None = Field(None, description="prompts whose best-worst gap was under pairs.min_gap")
    skipped_length_ratio: int | None = Field(None, description="prompts whose best answer was too long (max_length_ratio)")
    pairs: int | None = Field(None, description="pairs (best-of-n: answers) kept for training")
    mean_gap: float | None = Field(None, description="mean score_chosen - score_rejected of the pairs")
    mean_chosen_words: float | None = Field(None, description="mean words of the chosen answers")
    mean_rejected_words: float | None = Field(None, description="mean words of the rejected answers")


class TrainOutcome(Record):
    """Step 5 (``train``): the training run, or why there was none."""

    steps: int | None = Field(None, description="optimizer steps")
    train_loss: float | None = Field(None, description="the run's final training loss")
    seconds: float | None = Field(None, description="training wall time")
    skipped: str | None = Field(None, description="why nothing was trained (the model carried over), else None")
    model: str = Field(description="the iteration's model: the trained one, or the previous one when skipped")


class EvalFigures(Record):
    """Step 6 (``eval``): the evaluation on the held-out prompts (iteration 0: of the starting model)."""

    prompts: int | None = Field(None, description="held-out prompts answered")
    judge: str | None = Field(None, description="the eval judge's display name")
    unparseable: int | None = Field(None, description="answers the judge gave no usable score")
    mean_judge_score: float | None = Field(None, description="mean judge score of the scored answers")
    judge_score_ci: CI | None = Field(None, description="bootstrap interval of mean_judge_score")
    mean_response_words: float | None = Field(None, description="mean words of the answers")
    mean_reward: float | None = Field(None, description="mean reward-model (scorer) score; set only with a scorer")
    reward_ci: CI | None = Field(None, description="bootstrap interval of mean_reward")
    win_rate_vs_previous: float | None = Field(None, description="judge-score win rate against the previous iteration")
    win_rate_ci: CI | None = Field(None, description="bootstrap interval of win_rate_vs_previous")
    win_rate_prompts: int | None = Field(None, description="prompts both iterations' answers were scored on")
    reward_win_rate_vs_previous: float | None = Field(None, description="scorer win rate against the previous iteration")
    judge_agreement: float | None = Field(None, description="self-judge: share of human pairs it orders as the humans")
    agreement_pairs: int | None = Field(None, description="human pairs the judge scored both sides of")
    agreement_unscored_pairs: int | None = Field(None, description="human pairs with a side left unscored")


class IterationSummary(Record):
    """``iter-t/summary.json``. Iteration 0 (the starting model) has only ``iteration``, ``model``, ``eval``,
    ``mean_judge_score`` and ``seconds``; iterations 1..T also the pieces of their steps."""

    iteration: int = Field(ge=0, description="0 for the starting model, then 1..T")
    mode: str | None = Field(None, description="dpo or best-of-n (iterations 1..T)")
    model: str = Field(description="the model this iteration ends with")
    prompts: PromptStats | None = None
    candidates: CandidateStats | None = None
    judging: JudgingStats | None = None
    pairs: PairStats | None = None
    train: TrainOutcome | None = None
    eval: EvalFigures | None = None
    mean_judge_score: float | None = Field(None, description="eval.mean_judge_score, repeated at the top level")
    seconds: float | None = Field(None, description="wall time of the iteration (of this attempt, when resumed)")


class RunSummary(Record):
    """The self-reward run's ``summary.json``."""

    iterations: list[IterationSummary] = Field(description="iteration 0..T")
    final_model: str = Field(description="the model after the last iteration")
    seconds: float | None = Field(None, description="wall time of the run (of this attempt, when resumed)")


# ------------------------------------------------------------------------------------------------ pipeline


class StageOutcome(Record):
    """One stage of a pipeline run."""

    skipped: bool = Field(description="finished by an earlier run (its summary.json existed), so not run")
    seconds: float | None = Field(None, description="wall time; None when skipped")


class PipelineReport(Record):
    """``pipeline.json``: where the run is and what each stage did, in the order they ran."""

    output_dir: str
    stages: dict[str, StageOutcome]


class ExamplePair(Record):
    """A training pair shown in the self-reward report: one of the first pairs of an iteration's ``pairs.jsonl``."""

    iteration: int = Field(ge=1, description="the iteration that trained on it")
    prompt: str = Field(description="the prompt text (a message-list prompt as its JSON, as pairs.jsonl holds it)")
    chosen: str
    rejected: str
    score_chosen: float | None = Field(None, description="the judge's score of the chosen answer")
    score_rejected: float | None = Field(None, description="the judge's score of the rejected answer")
