"""``alignkit compare``: several models answer the same prompts; a scorer (a reward model) scores every answer.

Each model is loaded in turn (a full model dir, a Hub id or a PEFT adapter dir), answers every prompt
with the same generation settings and the same seed, and is freed before the next one is loaded.
Then the ``Scorer`` (``alignkit.scoring``: a ``RewardModel``, a judge, a function) scores all the answers.
The statistics (``eval.stats``) are paired over prompts: mean reward with its standard error and bootstrap
CI, and each model's win rate against the first model (the reference) with a percentile bootstrap CI.
Next to them, the signs of collapse and reward hacking (``eval.diversity``): the share of distinct answers,
the share of the most frequent one, distinct-2, and the mean length relative to the reference's, with a
warning for each model that looks collapsed or whose reward rose while its answers shrank.

``write_results`` writes compare.jsonl and summary.json; ``print_side_by_side`` the terminal view.
``eval.report`` (which imports this module, never the other way round) adds the self-contained
report.html: ``eval.report.write_outputs`` writes all three.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.eval import diversity, stats
from alignkit.io_atomic import write_jsonl, write_text
from alignkit.scoring import Scorer, checked_scores, scorer_name

Prompt = str | list[dict]  # one user turn, or {"role", "content"} messages ending with a user/system turn

COMPARE_FILE = "compare.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
METRICS_FILE = "metrics.jsonl"


@dataclass
class CompareResult:
    """What ``compare_models`` found; ``write_outputs`` saves it."""

    models: dict[str, str]  # name -> model dir / Hub id, in the given order; the first is the reference
    prompts: list[Prompt]
    # One row per (prompt, model), prompt-major in model order:
    # {prompt_index, prompt, model, response, reward (float | None), length_tokens}; length_tokens is the
    # answer re-encoded by the model's own tokenizer (can differ slightly from the tokens generated)
    rows: list[dict]
    # Per model (see ``summarise``): n, n_scored, mean_reward, reward_se, reward_ci_low/high, win_rate_vs_first,
    # win_rate_ci_low/high, ties_vs_first, win_rate_vs, mean_length_tokens, mean_length_chars, distinct_share,
    # top_answer_share, top_answer, distinct_2, length_ratio, warnings, rm_truncated.
    summary: dict[str, dict]
    settings: dict = field(default_factory=dict)  # generation settings, scorer, bootstrap
    out_dir: Path | None = None

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def reference(self) -> str:
        return self.names[0]

    @property
    def has_rewards(self) -> bool:
        return any(r["reward"] is not None for r in self.rows)

    @property
    def warnings(self) -> dict[str, list[str]]:
        """``{model: its collapse / reward-hacking warnings}`` for the models that have any, in model order."""
        return {n: self.summary[n]["warnings"] for n in self.names if self.summary[n].get("warnings")}

    def by_prompt(self) -> list[dict[str, dict]]:
        """For each prompt, ``{model name: its row}``."""
        out: list[dict[str, dict]] = [{} for _ in self.prompts]
        for r in self.rows:
            out[r["prompt_index"]][r["model"]] = r
        return out

    def column(self, model: str, key: str) -> list:
        """``key`` of every row of ``model``, in prompt order."""
        return [r[key] for r in self.rows if r["model"] == model]


# ------------------------------------------------------------------------------------------ inputs


def parse_model_specs(specs: Sequence[str]) -> dict[str, str]:
    """``["base=DIR", "sft=DIR"]`` -> ``{"base": "DIR", "sft": "DIR"}`` (order kept); ``ConfigError`` if malformed."""
    from alignkit.config.base import ConfigError

    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ConfigError(f"--model {spec!r}: expected NAME=DIR (e.g. sft=runs/sft/final)")
        if name in models:
            raise ConfigError(f"--model {spec!r}: the name {name!r} is given twice")
        models[name] = path
    if not models:
        raise ConfigError("compare: give at least one --model NAME=DIR")
    return models


def display_prompt(prompt: Prompt) -> str:
    """A prompt for display: the string itself, or one ``role: content`` line per message."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def load_prompts(path: str, max_prompts: int | None = None, *, fmt: str = "auto", split: str = "train") -> list[Prompt]:
    """The prompts of ``path``, in file order (duplicates kept), at most ``max_prompts`` of them.

    - ``.txt``: one prompt per line (blank lines skipped).
    - anything ``alignkit.data.formats.load_examples`` reads (prompt-completion, messages, ShareGPT,
      preference, hh-rlhf, prompt-only ``{"prompt": ...}`` rows ...): the prompt part of each row, i.e. every turn before the answer.

    A prompt that is one user turn comes back as a string, others as ``{role, content}`` message lists.
    """
    from alignkit.data.errors import DataError
    from alignkit.data.examples import compact_prompt
    from alignkit.data.formats import load_prompt_examples

    if max_prompts is not None and max_prompts < 1:
        raise DataError(path, f"max_prompts must be >= 1, got {max_prompts}")
    p = Path(path).expanduser()
    prompts: list[Prompt] = []
    if p.suffix.lower() == ".txt":
        if not p.is_file():
            raise DataError(path, "not found")
        from alignkit.data.errors import RowRef
        from alignkit.data.sources import not_utf8

        for n, line in enumerate(p.read_text(encoding="utf-8", errors="surrogateescape").splitlines(), 1):
            problem = not_utf8(line, " of the line")
            if problem:
                raise DataError(RowRef(path, n), problem)
            if line.strip():
                prompts.append(line)
    else:  # every format the data layer reads, prompt-only rows included
        loaded = load_prompt_examples(path, fmt=fmt, split=split, max_rows=max_prompts)
        prompts.extend(compact_prompt(ex.prompt) for ex in loaded.examples)
    if not prompts:
        raise DataError(path, "no prompts found (empty file?)")
    return prompts[:max_prompts] if max_prompts is not None else prompts


def find_runs(models: dict[str, str], extra: Sequence[str] = ()) -> dict[str, Path]:
    """Training runs whose curves the report can plot: ``name -> RUN`` (the run's ``output_dir``).

    A model at ``RUN/final`` or ``RUN/checkpoints/step-N[/model]`` whose ``RUN`` holds ``metrics.jsonl``
    maps its name to ``RUN``; models elsewhere (a Hub id, an init-model dir) have no run. ``extra``
    are run directories given explicitly (``--runs``), named by their folder; each must hold
    ``metrics.jsonl`` (else a ``DataError``).
    """
    from alignkit.data.errors import DataError

    runs: dict[str, Path] = {}
    for name, path in models.items():
        p = Path(path).expanduser()
        if not p.is_dir():
            continue
        p = p.resolve()
        candidates = []
        if p.name == "final":
            candidates.append(p.parent)
        if p.name == "model":
            p = p.parent
        if p.name.startswith("step-") and p.parent.name == "checkpoints":
            candidates.append(p.parent.parent)
        for run in candidates:
            if (run / METRICS_FILE).is_file():
                runs[name] = run
                break
    for d in extra:
        run = Path(d).expanduser()
        if not (run / METRICS_FILE).is_file():
            raise DataError(str(d), f"no {METRICS_FILE} here (expected a training run's output_dir)")
        name = run.resolve().name
        while name in runs:
            name += "'"
        runs[name] = run.resolve()
    return runs


# ------------------------------------------------------------------------------------------ running


def _free_memory(device) -> None:
    import torch

    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare_models(
    models: dict[str, str],
    prompts: Sequence[Prompt],
    *,
    scorer: Scorer | None = None,
    scorer_label: str | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    n_boot: int = 2000,
    min_distinct_share: float = 0.5,
    backend: str = "transformers",
    log: Callable[[str], None] = print,
) -> CompareResult:
    """Every model answers every prompt (same settings, same ``seed``); ``scorer`` scores the answers.

    Models are loaded one at a time with ``load_for_inference`` (full or adapter dirs) and freed after
    generating. Sampling is seeded identically for each model, so two identical models give identical
    answers. ``seed`` also seeds the bootstrap (``n_boot`` replicates) behind the confidence intervals.

    ``scorer`` is any ``alignkit.scoring.Scorer`` (``RewardModel.load(DIR)``, a judge, a function); it is
    called once, on each distinct (prompt, answer), so equal answers get exactly equal scores (a tie). A
    scorer may leave an answer unscored (None); the reward statistics then use the prompts whose answers
    every model got a score for (``n_scored``). A scorer with ``RewardModel``'s ``encode`` also reports how
    many answers it cut at its maximum length (``rm_truncated``). ``scorer_label`` names it in the settings
    (default: its ``name``, or its type). Without a scorer the rewards are None and only lengths and
    diversity are summarised.

    ``backend``: ``transformers`` (``generate`` in batches of ``batch_size``) or ``vllm`` (each model in a vLLM
    engine, LoRA adapters merged first, row i seeded ``seed + i``: see
    :class:`alignkit.models.rollout_engine.EngineTexts`). The two backends sample differently, so compare models
    with one backend.
    """
    from alignkit.models.generation import generate
    from alignkit.models.loading import load_for_inference

    if not models:
        raise ValueError("compare_models needs at least one model")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("compare_models needs at least one prompt")
    gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size)
    responses: dict[str, list[str]] = {}
    lengths: dict[str, list[int]] = {}
    for name, path in models.items():
        t0 = time.perf_counter()
        if backend == "vllm":
            from alignkit.models.rollout_engine import EngineTexts

            model = EngineTexts(path, dtype=dtype)
            tokenizer = model.tokenizer
        else:
            model, tokenizer = load_for_inference(path, dtype=dtype, device=device)
        try:
            if backend == "vllm":
                answers = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
            else:
                answers = generate(model, tokenizer, prompts, **gen)
            lengths[name] = [len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
        finally:
            del model, tokenizer
            _free_memory(device)
        responses[name] = answers
        log(f"{name}: {len(answers)} answers from {path} in {time.perf_counter() - t0:.1f}s")

    label = scorer_label or (scorer_name(scorer) if scorer is not None else None)
    rewards: dict[str, list[float | None]] = {name: [None] * len(prompts) for name in models}
    truncated: dict[str, int | None] = {name: None for name in models}
    if scorer is not None:
        rewards, truncated = score_answers(scorer, prompts, responses, name=label)
        n_distinct = len({(i, r) for answers in responses.values() for i, r in enumerate(answers)})
        log(f"scorer {label}: {n_distinct} distinct answers scored")

    rows = [
        {
            "prompt_index": i,
            "prompt": prompt,
            "model": name,
            "response": responses[name][i],
            "reward": rewards[name][i],
            "length_tokens": lengths[name][i],
        }
        for i, prompt in enumerate(prompts)
        for name in models
    ]
    settings = {
        "models": dict(models),
        "scorer": label,
        "n_prompts": len(prompts),
        **gen,
        "dtype": dtype,
        "backend": backend,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95, "resampled": "prompts"},
        "length_unit": "length_tokens: the answer re-encoded by the model's own tokenizer; length_chars: characters",
        "length_ratio": "mean characters per answer / the reference (first) model's",
    }
    summary = summarise(rows, list(models), n_boot=n_boot, seed=seed, min_distinct_share=min_distinct_share)
    for name in models:
        summary[name]["rm_truncated"] = truncated[name]
    return CompareResult(models=dict(models), prompts=prompts, rows=rows, summary=summary, settings=settings)


def score_answers(
    scorer: Scorer, prompts: Sequence[Prompt], responses: dict[str, list[str]], *, name: str | None = None
) -> tuple[dict[str, list[float | None]], dict[str, int | None]]:
    """``(rewards, truncated)``: each model's scores (None where ``scorer`` gave none), and how many of its
    answers the scorer cut (None unless the scorer has ``RewardModel``'s ``encode``).

    Each distinct (prompt index, answer) is scored once, in one call, so equal answers get exactly equal
    scores whatever else shares a padded batch.
    """
    name = name or scorer_name(scorer)
    pairs = list(dict.fromkeys((i, r) for answers in responses.values() for i, r in enumerate(answers)))
    pair_prompts, pair_answers = [prompts[i] for i, _ in pairs], [r for _, r in pairs]
    scores = dict(zip(pairs, checked_scores(scorer(pair_prompts, pair_answers), len(pairs), name=name)))
    encode = getattr(scorer, "encode", None)
    cut = dict(zip(pairs, encode(pair_prompts, pair_answers).truncated)) if callable(encode) else None
    rewards, truncated = {}, {}
    for model, answers in responses.items():
        keys = list(enumerate(answers))
        rewards[model] = [scores[k] for k in keys]
        truncated[model] = sum(bool(cut[k]) for k in keys) if cut is not None else None
    return rewards, truncated


def summarise(
    rows: list[dict], names: list[str], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95, min_distinct_share: float = 0.5
) -> dict[str, dict]:
    """Per-model statistics over prompts, paired with the first model (the reference).

    - ``n``: answers; ``n_scored``: prompts whose answers every model got a score for (the reward
      statistics below are over those; all of them with a reward model);
    - ``mean_reward``, ``reward_se`` (s / sqrt(n)), ``reward_ci_low/high`` (bootstrap CI of the mean);
    - ``win_rate_vs_first`` (ties count 1/2), ``win_rate_ci_low/high`` (bootstrap CI), ``ties_vs_first``:
      None for the first model itself;
    - ``win_rate_vs``: ``{earlier model: {win_rate, ci_low, ci_high}}`` against every model listed before it;
    - ``mean_length_tokens`` (each model's own tokenizer) and ``mean_length_chars``;
    - ``distinct_share``, ``top_answer_share``, ``top_answer``, ``distinct_2`` (``eval.diversity``) and
      ``length_ratio``: mean characters per answer / the reference's (characters, so that models with
      different tokenizers compare);
    - ``warnings``: ``eval.diversity.warnings`` in plain sentences (collapsed: top answer > 20% or distinct <
      50%; reward hacking?: the reward rose over the reference's while the length fell below half of it);
    - ``rm_truncated``: left None here; ``compare_models`` fills in how many answers the scorer cut.
    Reward fields are None when no prompt was scored.
    """
    by_model = {name: sorted((r for r in rows if r["model"] == name), key=lambda r: r["prompt_index"]) for name in names}
    ref_name = names[0]
    n_prompts = len(by_model[ref_name])
    # the prompts every model's answer was scored on: the pairs behind every paired statistic
    kept = [i for i in range(n_prompts) if all(by_model[n][i]["reward"] is not None for n in names)]
    rewards_of = {name: [by_model[name][i]["reward"] for i in kept] for name in names}
    ref = rewards_of[ref_name]
    ref_chars = [len(r["response"]) for r in by_model[ref_name]]
    out: dict[str, dict] = {}
    for name in names:
        own = by_model[name]
        s: dict = {
            "n": len(own),
            "n_scored": len(kept),
            "mean_reward": None,
            "reward_se": None,
            "reward_ci_low": None,
            "reward_ci_high": None,
            "win_rate_vs_first": None,
            "win_rate_ci_low": None,
            "win_rate_ci_high": None,
            "ties_vs_first": None,
            "mean_length_tokens": stats.mean([r["length_tokens"] for r in own]),
            "mean_length_chars": stats.mean([len(r["response"]) for r in own]),
            "rm_truncated": None,
        }
        if kept:
            rewards = rewards_of[name]
            s["mean_reward"], s["reward_se"] = stats.mean_se(rewards)
            s["reward_ci_low"], s["reward_ci_high"] = stats.bootstrap_ci(
                stats.mean, rewards, n_boot=n_boot, seed=seed, level=level
            )
            if name != ref_name:
                s["win_rate_vs_first"] = stats.win_rate(rewards, ref)
                s["win_rate_ci_low"], s["win_rate_ci_high"] = stats.bootstrap_ci(
                    stats.win_rate, rewards, ref, n_boot=n_boot, seed=seed, level=level
                )
                s["ties_vs_first"] = sum(a == b for a, b in zip(rewards, ref))
            s["win_rate_vs"] = {}  # against every model listed before it (e.g. ppo vs sft, not only vs base)
            for other in names[: names.index(name)]:
                theirs = rewards_of[other]
                low, high = stats.bootstrap_ci(stats.win_rate, rewards, theirs, n_boot=n_boot, seed=seed, level=level)
                s["win_rate_vs"][other] = {"win_rate": stats.win_rate(rewards, theirs), "ci_low": low, "ci_high": high}
        d = diversity.diversity([r["response"] for r in own], [len(r["response"]) for r in own], ref_chars)
        s.update(
            distinct_share=d.distinct_share,
            top_answer_share=d.top_answer_share,
            top_answer=d.top_answer,
            distinct_2=d.distinct_2,
            length_ratio=d.length_ratio,
        )
        gain = None if not kept or name == ref_name else s["mean_reward"] - out[ref_name]["mean_reward"]
        s["warnings"] = diversity.warnings(d, reward_gain=gain, min_distinct_share=min_distinct_share)
        out[name] = s
    return out


# ------------------------------------------------------------------------------------------ outputs


def summary_json(result: CompareResult, runs: dict[str, Path] | None = None) -> dict:
    """What summary.json holds: the reference, every model's ``summary`` (``summarise``; diversity figures and
    ``warnings`` included), every warning as ``"model: sentence"`` in ``warnings``, the settings and the runs."""
    return {
        "reference": result.reference,
        "models": result.summary,
        "warnings": [f"{name}: {w}" for name, ws in result.warnings.items() for w in ws],
        "settings": result.settings,
        "runs": {name: str(path) for name, path in (runs or {}).items()},
    }


def write_results(result: CompareResult, out_dir: str | Path, *, runs: dict[str, Path] | None = None) -> Path:
    """``out_dir``/compare.jsonl (one row per prompt and model) and summary.json (``summary_json``).

    ``eval.report.write_outputs`` calls this and adds report.html. Sets ``result.out_dir`` and returns it.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / COMPARE_FILE, result.rows)
    write_text(out / SUMMARY_FILE, json.dumps(summary_json(result, runs), indent=2, ensure_ascii=False) + "\n")
    result.out_dir = out
    return out


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def summary_table_rows(result: CompareResult) -> list[tuple[str, ...]]:
    """One tuple of display strings per model, in ``SUMMARY_HEADERS`` order."""
    out = []
    for name in result.names:
        s = result.summary[name]
        reward = _fmt(s["mean_reward"]) + (f" ± {_fmt(s['reward_se'])}" if s["reward_se"] is not None else "")
        if name == result.reference:
            win = "reference" if result.has_rewards else "-"
        elif s["win_rate_vs_first"] is None:
            win = "-"
        else:
            win = f"{s['win_rate_vs_first']:.3f} [{s['win_rate_ci_low']:.3f}, {s['win_rate_ci_high']:.3f}]"
        length = f"{s['mean_length_tokens']:.1f} tok / {s['mean_length_chars']:.0f} ch"
        ratio = _fmt(s.get("length_ratio"), ".2f") + ("x" if s.get("length_ratio") is not None else "")
        out.append(
            (
                name,
                reward,
                win,
                length,
                ratio,
                _fmt(s.get("distinct_share"), ".0%"),
                _fmt(s.get("top_answer_share"), ".0%"),
                _fmt(s.get("distinct_2"), ".2f"),
                str(s["n"]),
            )
        )
    return out


SUMMARY_HEADERS = (
    "model",
    "mean reward ± se",
    "win rate vs first [95% CI]",
    "mean length",
    "length vs ref",
    "distinct",
    "top answer",
    "distinct-2",
    "n",
)

WARNINGS_TITLE = "Warning: collapse or reward hacking"


def print_side_by_side(result: CompareResult, console=None, *, max_prompts: int | None = None) -> None:
    """Rich console output: each prompt, then every model's answer with its reward; then the summary table and,
    in red, every model's collapse / reward-hacking warnings."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    # a log file or pipe gets rich's 80 columns, which wraps every cell of the summary: give it 160
    console = console or Console(width=None if Console().is_terminal else 160)
    console.rule("[bold]Comparing Model Outputs")
    n = len(result.prompts) if max_prompts is None else min(max_prompts, len(result.prompts))
    for i, cells in enumerate(result.by_prompt()[:n]):
        console.print(Panel(Text(display_prompt(result.prompts[i])), title=f"prompt {i + 1}", title_align="left", style="cyan"))
        for row in cells.values():
            head = Text(f"{row['model']}", style="bold")
            if row["reward"] is not None:
                head.append(f"  reward {row['reward']:+.3f}", style="green" if row["reward"] >= 0 else "red")
            console.print(head)
            answer = row["response"]
            console.print(Text(answer) if answer.strip() else Text("(empty answer)", style="dim"))
        console.print()
    if n < len(result.prompts):
        console.print(Text(f"... {len(result.prompts) - n} more prompts (see compare.jsonl / report.html)", style="dim"))
    table = Table(
        title=f"Summary over {len(result.prompts)} prompts (reference: {result.reference})",
        caption="length vs ref: mean characters / the reference's; distinct: distinct answers; top answer: share of "
        "the most frequent one; distinct-2: distinct word bigrams / bigrams",
    )
    for h in SUMMARY_HEADERS:
        table.add_column(h, justify="left" if h == "model" else "right")
    for cells in summary_table_rows(result):
        table.add_row(*cells)
    console.print(table)
    for name in result.names[2:]:  # the pairs the vs-first column leaves out
        for other, w in result.summary[name].get("win_rate_vs", {}).items():
            if other != result.reference:
                console.print(f"win rate {name} vs {other}: {w['win_rate']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]")
    if not result.has_rewards:
        console.print(Text("no reward model given (--reward-model): rewards and win rates are not computed", style="yellow"))
    found = result.warnings
    if found:
        lines = [f"WARNING {name}: {w}" for name, ws in found.items() for w in ws]
        body = Text("\n".join(lines), style="bold red")
        console.print(Panel(body, title=WARNINGS_TITLE, title_align="left", border_style="red"))
