"""``alignkit rm-eval``, ``score`` and ``compare``: each an options schema (pydantic only at import) and the entry
point that takes it (the heavy imports inside). Registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from alignkit.commands import Opt
from alignkit.config.base import Closed, ConfigError


class RmEvalOptions(Closed):
    """``alignkit rm-eval``: a reward model's pairwise accuracy, margin and calibration on preference pairs."""

    model: str = Field(description="reward model directory (alignkit rm's final/)")
    data: str = Field(description="preference pairs (any preference format; optional 'subset' column)")
    out: str | None = Field(None, description="write each pair's two scores as JSONL here")
    format: str = Field("auto", description="row format (auto: detect)")
    split: str = Field("train", description="split of a datasets directory or hub dataset")
    on_error: Literal["raise", "skip"] = Field("raise", description="a malformed row: stop, or skip it")
    max_rows: int | None = Field(None, description="read at most this many rows (default: all)")
    batch_size: int = Field(16, description="pairs scored per forward pass")


def rm_eval(opts: RmEvalOptions) -> int:
    import json

    from alignkit.eval.reward_eval import evaluate_reward_model

    result = evaluate_reward_model(
        opts.model,
        opts.data,
        fmt=opts.format,
        split=opts.split,
        on_error=opts.on_error,
        max_rows=opts.max_rows,
        batch_size=opts.batch_size,
        out=opts.out,
    )
    print(json.dumps(result))
    return 0


class ScoreOptions(Closed):
    """``alignkit score``: reward-model scores of a file of prompt/response rows, or of one prompt and response."""

    model: str = Field(description="reward model directory")
    data: str | None = Field(None, description="prompt/response rows (jsonl, json, parquet, csv)")
    out: str | None = Field(None, description="with --data: write the scored rows as JSONL here (default: stdout)")
    prompt: str | None = Field(None, description="one user message")
    response: str | None = Field(None, description="the reply to score")
    batch_size: int = Field(16, description="rows scored per forward pass")

    @model_validator(mode="after")
    def _one_source(self) -> ScoreOptions:
        if bool(self.data) == (self.prompt is not None or self.response is not None):
            raise ConfigError("score: give either --data FILE or both --prompt and --response")
        if not self.data and (self.prompt is None or self.response is None):
            raise ConfigError("score: --prompt and --response go together")
        return self


def score(opts: ScoreOptions) -> int:
    import json

    if opts.data:
        from alignkit.eval.reward_eval import score_rows

        rows = score_rows(opts.model, opts.data, batch_size=opts.batch_size)
        lines = [json.dumps(r) for r in rows]
        if opts.out:
            from alignkit.io_atomic import write_text

            write_text(opts.out, "".join(line + "\n" for line in lines))
            print(f"scored {len(rows)} rows -> {opts.out}")
        else:
            print("\n".join(lines))
        return 0
    from alignkit.models.reward import RewardModel

    print(RewardModel.load(opts.model).score([opts.prompt], [opts.response])[0])
    return 0


def check_out_dir(path: str, flag: str = "--out") -> None:
    """A ConfigError unless ``path`` is, or can be created as, a writable directory: checked before the work."""
    import os

    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ConfigError(f"{flag} {path}: {q} is a file, not a directory")
            if not os.access(q, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag} {path}: {q} is not writable")
            return


class CompareOptions(Closed):
    """``alignkit compare``: several models' answers to the same prompts, side by side, optionally scored."""

    model: Annotated[list[str], Opt(metavar="NAME=DIR")] = Field(
        description="a model to compare (repeat; the first is the reference)"
    )
    prompts: str = Field(description="prompts: .txt (one per line) or any data format (the prompt part)")
    reward_model: str | None = Field(None, description="reward model directory scoring every answer")
    reward_function: str | None = Field(
        None,
        description="or a reward function scoring every answer ('file.py:fn' or 'module:fn', e.g. a verifier: its "
        "mean is the exact match)",
    )
    reward_kwargs: Annotated[str | None, Opt(metavar="YAML")] = Field(
        None, description="keyword arguments of --reward-function as a YAML/JSON mapping, e.g. '{tolerance: 0.01}'"
    )
    out: str | None = Field(None, description="write compare.jsonl, summary.json and report.html here")
    max_prompts: int | None = Field(None, ge=1, description="use the first N prompts (default: all)")
    min_distinct_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="warn of collapse below this share of distinct answers (lower it where right answers repeat, e.g. sums)",
    )
    max_new_tokens: int = Field(64, ge=1, description="most tokens per answer")
    temperature: float = Field(0.7, ge=0, description="sampling temperature, 0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: off)")
    seed: int = Field(0, description="sampling and bootstrap seed (the same for every model)")
    batch_size: int = Field(8, ge=1, description="prompts generated per batch")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="generate with transformers or vLLM (CUDA)")
    runs: Annotated[list[str] | None, Opt(nargs="+", metavar="DIR")] = Field(
        None, description="more run directories (with metrics.jsonl) to plot"
    )

    @model_validator(mode="after")
    def _one_scorer(self) -> CompareOptions:
        if self.reward_model and self.reward_function:
            raise ConfigError("compare: give one of --reward-model and --reward-function")
        if self.reward_kwargs is not None and not self.reward_function:
            raise ConfigError("compare: --reward-kwargs goes with --reward-function")
        self.function_kwargs()  # a bad mapping is an error now, before any model loads
        return self

    def function_kwargs(self) -> dict:
        """``--reward-kwargs`` parsed (YAML, so JSON too) into a mapping; a one-line ConfigError otherwise."""
        if self.reward_kwargs is None:
            return {}
        import yaml

        try:
            value = yaml.safe_load(self.reward_kwargs)
        except yaml.YAMLError as err:
            raise ConfigError(f"compare --reward-kwargs: not YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"compare --reward-kwargs: a mapping like '{{k: v}}', got {self.reward_kwargs!r}")
        return value


def compare(opts: CompareOptions) -> int:
    from alignkit.eval.compare import parse_model_specs
    from alignkit.eval.report import compare_scorer, run_compare

    if opts.out:
        check_out_dir(opts.out)  # before any model is loaded, not after all generation
    models = parse_model_specs(opts.model)
    scorer, label = compare_scorer(opts.reward_model, opts.reward_function, opts.function_kwargs())
    run_compare(
        models,
        opts.prompts,
        max_prompts=opts.max_prompts,
        scorer=scorer,
        scorer_label=label,
        out=opts.out,
        extra_runs=opts.runs,
        max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        top_p=opts.top_p,
        seed=opts.seed,
        batch_size=opts.batch_size,
        min_distinct_share=opts.min_distinct_share,
        backend=opts.backend,
    )
    return 0
