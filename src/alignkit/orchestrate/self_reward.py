"""Self-rewarding rounds (``alignkit self-reward``; Yuan et al. 2024), and best-of-n fine-tuning.

The loop, top to bottom. Iteration 0 evaluates the starting model. Then for t = 1..T, from the model of
iteration t-1:

1. **prompts**: the iteration's share of the prompt set, plus prompts the model writes from few-shot
   examples (self-instruct), duplicates removed -> ``iter-t/prompts.jsonl``;
2. **candidates**: ``generation.n`` samples per prompt, duplicates and empty answers removed ->
   ``candidates.jsonl``;
3. **judging**: every candidate scored by the judge (the model itself with the rubric prompt, sampled
   ``judge.samples`` times and averaged; a reward model; or a Python function); unparseable judgments are
   kept, counted and never crash the run -> ``judgments.jsonl`` (raw judge text, parsed scores);
4. **pairs**: per prompt the best- vs the worst-scored candidate when their gap is >= ``pairs.min_gap``
   (mode best-of-n: the best candidate) -> ``pairs.jsonl``; skipped prompts are counted by reason;
5. **training**: the DPO stage on the pairs, its reference being the previous iteration's model (best-of-n:
   the SFT stage on the best candidates) -> ``iter-t/train/final``;
6. **evaluation** on the held-out prompts: mean judge score, mean reward-model score, win rate against
   the previous iteration, and for a self-judge its agreement with human preference labels -> ``eval.json``.

``iter-t/summary.json`` closes an iteration. Every step writes its file atomically and records its figures
(the typed records of :mod:`alignkit.orchestrate.records`: ``PromptStats``, ``CandidateStats``, ``JudgingStats``,
``PairStats``, ``TrainOutcome``, ``EvalFigures``; the summary is an ``IterationSummary``) in ``iter-t/state.json``; a re-run skips the finished steps and iterations, and the training step resumes
from its own checkpoints, so an interrupted run continues where it stopped. At the end the table across
iterations is printed and written, with plots, to ``report.html``.
"""

from __future__ import annotations

import gc
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alignkit.config.self_reward import SelfRewardConfig
from alignkit.io_atomic import write_jsonl, write_text
from alignkit.orchestrate.records import (
    CandidateStats,
    EvalFigures,
    ExamplePair,
    IterationSummary,
    JudgingStats,
    PairStats,
    PromptStats,
    Record,
    RecordError,
    RunSummary,
    TrainOutcome,
)
from alignkit.scoring import Scorer


@dataclass
class SelfRewardResult:
    output_dir: Path
    final_model: str  # the model after the last iteration
    summaries: list[IterationSummary]  # iter-0 .. iter-T (their summary.json)


# ------------------------------------------------------------------------------------------- files


def write_json(path: Path, obj) -> None:
    """``obj`` (a record: its :meth:`Record.to_dict`) as indented JSON, written atomically."""
    if isinstance(obj, Record):
        obj = obj.to_dict()
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class StepState:
    """``iter-t/state.json``: the record of each finished step (a step is finished once it is here). ``STEPS`` maps
    each step to its record type. The file is read once, when the state is opened: every entry is checked then
    (a corrupt resumed state fails before any step runs), and written whole on each :meth:`record`."""

    STEPS: dict[str, type[Record]] = {
        "prompts": PromptStats,
        "candidates": CandidateStats,
        "judging": JudgingStats,
        "pairs": PairStats,
        "train": TrainOutcome,
        "eval": EvalFigures,
    }

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, Record] = {}
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not JSON: {err}") from None
        if not isinstance(data, dict):
            raise RecordError(f"{path}: must map each finished step to its figures, got {type(data).__name__}")
        for step, entry in data.items():
            if step not in self.STEPS:
                raise RecordError(f"{path}: unknown step {step!r} (steps: {', '.join(self.STEPS)})")
            self.records[step] = self.STEPS[step].from_dict(entry, source=f"{path}: {step}")

    def done(self, step: str) -> bool:
        return step in self.records

    def record(self, step: str, figures: Record) -> None:
        """Keep ``figures`` (a ``STEPS[step]``) as the finished ``step``'s record and write the file."""
        if not isinstance(figures, self.STEPS[step]):
            raise TypeError(f"step {step!r} records a {self.STEPS[step].__name__}, not {type(figures).__name__}")
        self.records[step] = figures
        write_json(self.path, {s: r.to_dict() for s, r in self.records.items()})

    def get(self, step: str):
        """The finished ``step``'s record."""
        return self.records[step]


# ----------------------------------------------------------------------------------------- prompts


def norm_text(text: str) -> str:
    """The duplicate key of a prompt or answer: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())


def dedupe(items: Sequence, key: Callable[[object], str]) -> tuple[list, int]:
    """``(items in order without repeats of key(item), how many were removed)``."""
    seen: set[str] = set()
    out = []
    for x in items:
        k = key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out, len(items) - len(out)


def load_prompt_set(source: str, *, fmt: str, split: str, on_error: str, max_rows: int | None, log) -> list:
    """The prompt part of every row of ``source`` (a str for one user turn, else a message list), duplicates removed."""
    from alignkit.data.examples import compact_prompt
    from alignkit.data.formats import load_prompt_examples

    loaded = load_prompt_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows, log=log)
    prompts = [compact_prompt(ex.prompt) for ex in loaded.examples]
    prompts, dropped = dedupe(prompts, key=lambda p: norm_text(json.dumps(p, ensure_ascii=False)))
    log(
        f"{source}: format {loaded.format}, {loaded.rows_read} rows, {len(loaded.skipped)} skipped, "
        f"{dropped} duplicate prompts removed -> {len(prompts)} prompts"
    )
    return prompts


SELF_INSTRUCT_TEMPLATE = (
    "Below are some example requests that users sent to an AI assistant.\n\n{examples}\n\n"
    "Write one new request that a user could send, different from the examples. Reply with the request only."
)


def self_instruct_requests(pool: Sequence[str], n: int, few_shot: int, rng: random.Random) -> list[str]:
    """``n`` requests, each showing ``few_shot`` example prompts drawn from ``pool`` (numbered)."""
    out = []
    for _ in range(n):
        shots = rng.sample(list(pool), min(few_shot, len(pool)))
        out.append(SELF_INSTRUCT_TEMPLATE.format(examples="\n".join(f"{i + 1}. {s}" for i, s in enumerate(shots))))
    return out


def clean_new_prompt(text: str) -> str:
    """The first non-empty line of a model-written request, without list numbering or quotes."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = re.sub(r"^(?:\d+[.)]|[-*•]|request:)\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip('"“”').strip()


# --------------------------------------------------------------------------------------------- pairs


def words(text: str) -> int:
    return len(text.split())


def build_pairs(groups: Sequence[dict], *, min_gap: float, max_length_ratio: float | None) -> tuple[list[dict], PairStats]:
    """Best vs worst candidate of each prompt.

    ``groups``: ``{"prompt_id", "prompt", "candidates": [str], "scores": [float | None]}``. A prompt with fewer
    than two scored candidates is skipped (``skipped_few_scores``), one whose best and worst differ by less
    than ``min_gap`` (or not at all) too (``skipped_small_gap``), and, with ``max_length_ratio``, one whose best
    answer has more than that many times the worst one's words (``skipped_length_ratio``). The first
    candidate wins a tie for best, the last a tie for worst."""
    pairs: list[dict] = []
    few, small, long = 0, 0, 0
    for g in groups:
        scored = [(s, c) for s, c in zip(g["scores"], g["candidates"]) if s is not None]
        if len(scored) < 2:
            few += 1
            continue
        best = max(scored, key=lambda x: x[0])
        worst = min(reversed(scored), key=lambda x: x[0])
        gap = best[0] - worst[0]
        if gap <= 0 or gap < min_gap:
            small += 1
            continue
        if max_length_ratio is not None and words(best[1]) > max_length_ratio * max(1, words(worst[1])):
            long += 1
            continue
        pairs.append(
            {
                "prompt": g["prompt"],
                "chosen": best[1],
                "rejected": worst[1],
                "score_chosen": best[0],
                "score_rejected": worst[0],
                "prompt_id": g["prompt_id"],
            }
        )
    stats = PairStats(
        prompts=len(groups),
        skipped_few_scores=few,
        skipped_small_gap=small,
        skipped_length_ratio=long,
        pairs=len(pairs),
        mean_gap=_mean([p["score_chosen"] - p["score_rejected"] for p in pairs]),
        mean_chosen_words=_mean([words(p["chosen"]) for p in pairs]),
        mean_rejected_words=_mean([words(p["rejected"]) for p in pairs]),
    )
    return pairs, stats


def best_of_n(groups: Sequence[dict]) -> tuple[list[dict], PairStats]:
    """The best-scored candidate of each prompt with at least one score, as prompt/completion rows."""
    rows = []
    skipped = 0
    for g in groups:
        scored = [(s, c) for s, c in zip(g["scores"], g["candidates"]) if s is not None]
        if not scored:
            skipped += 1
            continue
        s, c = max(scored, key=lambda x: x[0])
        rows.append({"prompt": g["prompt"], "completion": c, "score": s, "prompt_id": g["prompt_id"]})
    stats = PairStats(
        prompts=len(groups),
        pairs=len(rows),
        skipped_few_scores=skipped,
        skipped_small_gap=0,
        skipped_length_ratio=0,
        mean_chosen_words=_mean([words(r["completion"]) for r in rows]),
    )
    return rows, stats


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# ------------------------------------------------------------------------------------------- models


class Models:
    """Loads models for generation one at a time (the previous one is freed), on the GPU when there is one.
    ``backend``: ``transformers`` (the model in this process, ``generate``) or ``vllm`` (a vLLM engine per model,
    :class:`alignkit.models.rollout_engine.EngineTexts`)."""

    def __init__(self, dtype: str, backend: str = "transformers"):
        import torch

        self.dtype, self.backend = dtype, backend
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.path: str | None = None
        self.model = self.tokenizer = None

    def get(self, path: str):
        if path != self.path:
            from alignkit.data.tokenize import ensure_chat_template
            from alignkit.models.loading import load_for_inference

            self.free()
            if self.backend == "vllm":
                from alignkit.models.rollout_engine import EngineTexts

                self.model = EngineTexts(path, dtype=self.dtype)
                self.tokenizer = self.model.tokenizer
            else:
                self.model, self.tokenizer = load_for_inference(path, dtype=self.dtype, device=self.device)
                ensure_chat_template(self.tokenizer)
            self.path = path
        return self.model, self.tokenizer

    def generate(
        self, path: str, prompts: list, *, max_new_tokens: int, temperature: float, top_p: float = 1.0, seed: int, batch_size: int
    ) -> list[str]:
        """One answer per prompt from the model at ``path`` (loaded if it is not the current one)."""
        from alignkit.models.generation import generate

        model, tok = self.get(path)
        if self.backend == "vllm":
            return model.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        return generate(
            model,
            tok,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size,
        )

    def free(self) -> None:
        self.model = self.tokenizer = None
        self.path = None
        gc.collect()


def make_judge(cfg: SelfRewardConfig, models: Models, judge_model: str | None, seed: int):
    """The configured judge; for ``self``, ``judge_model`` judges (loaded on first use)."""
    from alignkit.judge.judges import FunctionJudge, RewardModelJudge, SelfJudge

    j = cfg.judge
    if j.type == "reward_model":
        return RewardModelJudge(j.model, device=models.device, batch_size=j.batch_size)
    if j.type == "function":
        return FunctionJudge(j.function, j.kwargs)

    def generate_fn(prompts: list[str], seed: int) -> list[str]:
        return models.generate(
            judge_model, prompts, max_new_tokens=j.max_new_tokens, temperature=j.temperature, seed=seed, batch_size=j.batch_size
        )

    return SelfJudge(generate_fn, samples=j.samples, seed=seed, name=f"self ({judge_model})")


# ---------------------------------------------------------------------------------------- evaluation


def evaluate(
    cfg: SelfRewardConfig,
    models: Models,
    model_path: str,
    heldout: list,
    out: Path,
    *,
    prev_answers: Path | None,
    judge_model: str | None,
    human_pairs: list[dict] | None,
    seed: int,
    log,
    scorer: Callable[[], Scorer] | None = None,
) -> EvalFigures:
    """Answers of ``model_path`` to the held-out prompts (``out/eval_answers.jsonl``), scored by the eval judge
    (and by ``scorer()``, the outside check: a reward model), compared with the previous iteration's answers;
    judge agreement for a self-judge. ``scorer`` is called for each evaluation, so a scorer it loads is freed
    after."""
    from alignkit.eval.stats import bootstrap_ci, mean, win_rate
    from alignkit.judge.judges import agreement

    e = cfg.eval
    answers = models.generate(
        model_path,
        heldout,
        max_new_tokens=e.max_new_tokens or cfg.generation.max_new_tokens,
        temperature=e.temperature,
        top_p=cfg.generation.top_p,
        seed=seed,
        batch_size=cfg.generation.batch_size,
    )
    judge = make_judge(cfg, models, judge_model, seed=seed + 17)
    judged = judge.judgments(heldout, answers)
    rewards: list[float | None] = [None] * len(answers)
    rm = scorer() if scorer is not None else None
    if rm is not None:
        from alignkit.scoring import checked_scores, scorer_name

        rewards = checked_scores(rm(heldout, answers), len(answers), name=scorer_name(rm), allow_missing=False)
        del rm
    rows = [
        {"prompt": p, "response": a, "score": j.score, "samples": list(j.samples), "raw": list(j.raw), "reward": r}
        for p, a, j, r in zip(heldout, answers, judged, rewards)
    ]
    write_jsonl(out / "eval_answers.jsonl", rows)

    scores = [r["score"] for r in rows if r["score"] is not None]
    # figures that were not measured (no scorer, no previous answers, not a self-judge) stay unset: left out of the file
    res = EvalFigures(
        prompts=len(rows),
        judge=judge.name,
        unparseable=len(rows) - len(scores),
        mean_judge_score=mean(scores) if scores else None,
        judge_score_ci=list(bootstrap_ci(mean, scores, n_boot=e.n_boot, seed=seed)) if scores else None,
        mean_response_words=_mean([words(a) for a in answers]),
    )
    if scorer is not None:
        res.mean_reward = mean(rewards)
        res.reward_ci = list(bootstrap_ci(mean, rewards, n_boot=e.n_boot, seed=seed))
    if prev_answers is not None and prev_answers.exists():
        prev = read_jsonl(prev_answers)
        both = [(r["score"], p["score"]) for r, p in zip(rows, prev) if r["score"] is not None and p["score"] is not None]
        if both:
            a, b = [x for x, _ in both], [y for _, y in both]
            res.win_rate_vs_previous = win_rate(a, b)
            res.win_rate_ci = list(bootstrap_ci(win_rate, a, b, n_boot=e.n_boot, seed=seed))
            res.win_rate_prompts = len(both)
        if scorer is not None and all(p.get("reward") is not None for p in prev):
            a, b = [r["reward"] for r in rows], [p["reward"] for p in prev]
            res.reward_win_rate_vs_previous = win_rate(a, b)
    if cfg.judge.type == "self" and human_pairs:
        # How well this model judges: it is the judge of the next iteration.
        own = make_judge(cfg, models, model_path, seed=seed + 29)
        agree = agreement(
            own, [p["prompt"] for p in human_pairs], [p["chosen"] for p in human_pairs], [p["rejected"] for p in human_pairs]
        )
        res.judge_agreement = agree["agreement"]
        res.agreement_pairs = agree["scored_pairs"]
        res.agreement_unscored_pairs = agree["unscored_pairs"]
    models.get(model_path)  # leave the evaluated model loaded: the next step samples from it
    return res


def _eval_scorer(cfg: SelfRewardConfig, models: Models, scorer: Scorer | None) -> Callable[[], Scorer] | None:
    """What scores the held-out answers at each evaluation: the given ``scorer``, else ``eval.reward_model``
    loaded for that evaluation (and freed after it), else nothing."""
    if scorer is not None:
        return lambda: scorer
    if not cfg.eval.reward_model:
        return None
    path = cfg.eval.reward_model

    def load() -> Scorer:
        from alignkit.models.reward import RewardModel

        return RewardModel.load(path, device=models.device)

    return load


def load_human_pairs(cfg: SelfRewardConfig, log) -> list[dict] | None:
    if not (cfg.eval.human_pairs and cfg.judge.type == "self"):
        return None
    from alignkit.data.examples import as_messages
    from alignkit.data.formats import load_examples

    loaded = load_examples(cfg.eval.human_pairs, max_rows=cfg.eval.max_pairs)
    pairs = [
        {"prompt": as_messages(ex.prompt), "chosen": ex.chosen, "rejected": ex.rejected}
        for ex in loaded.examples
        if ex.is_preference
    ]
    if not pairs:
        from alignkit.data.errors import DataError

        raise DataError(cfg.eval.human_pairs, "eval.human_pairs: no preference pairs (prompt, chosen, rejected) found")
    log(f"judge agreement: {len(pairs)} human preference pairs from {cfg.eval.human_pairs}")
    return pairs


# ----------------------------------------------------------------------------------------------- run


def run(cfg: SelfRewardConfig, scorer: Scorer | None = None) -> SelfRewardResult:
    """The self-rewarding rounds of the module doc. ``scorer`` scores the held-out answers at every evaluation
    (the outside check next to the judge); without one, ``eval.reward_model`` (when set) is loaded as a
    ``RewardModel`` for each evaluation and freed after it."""
    from alignkit.config.base import write_config
    from alignkit.data.errors import DataError
    from alignkit.data.examples import prompt_text
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import load_tokenizer
    from alignkit.orchestrate.report import print_iteration_table, write_report_html

    quiet_libraries()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out / "config.yaml")
    log = _logger(out / "log.txt")
    t_start = time.time()
    m = cfg.model
    if m.init is not None and not Path(m.name_or_path).exists():
        from alignkit.models.init_model import init_model

        log(f"{m.name_or_path} does not exist: creating a {m.init.arch}/{m.init.size} model (model.init)")
        init_model(
            m.init.arch, m.init.size, m.init.tokenizer_from, m.name_or_path, vocab_size=m.init.vocab_size, seed=m.init.seed
        )

    # --- prompts ------------------------------------------------------------------------------------
    p = cfg.prompts
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    pool = load_prompt_set(p.train, fmt=p.format, split=p.split, on_error=p.on_error, max_rows=p.max_rows, log=log)
    fits = [q for q in pool if len(tokenizer(prompt_text(q), add_special_tokens=False)["input_ids"]) <= p.max_length]
    if len(fits) < len(pool):
        log(f"{len(pool) - len(fits)} prompts longer than prompts.max_length={p.max_length} tokens dropped")
        pool = fits
    if p.heldout:
        heldout = load_prompt_set(p.heldout, fmt="auto", split=p.split, on_error=p.on_error, max_rows=p.heldout_rows, log=log)
        heldout = heldout[: p.heldout_rows]
    else:
        if len(pool) <= p.heldout_rows:
            raise DataError(
                p.train, f"{len(pool)} prompts: not enough to hold out prompts.heldout_rows={p.heldout_rows} and train"
            )
        pool, heldout = pool[: -p.heldout_rows], pool[-p.heldout_rows :]
    held_keys = {norm_text(prompt_text(q)) for q in heldout}
    pool = [q for q in pool if norm_text(prompt_text(q)) not in held_keys]
    write_jsonl(out / "heldout_prompts.jsonl", [{"prompt": q} for q in heldout])
    log(f"{len(pool)} training prompts, {len(heldout)} held-out prompts (out/heldout_prompts.jsonl)")
    human_pairs = load_human_pairs(cfg, log)

    models = Models(m.dtype, cfg.generation.backend)
    eval_judge = lambda current: current if cfg.eval.judge == "current" else m.name_or_path  # noqa: E731
    eval_scorer = _eval_scorer(cfg, models, scorer)

    # --- iteration 0: the starting model ---------------------------------------------------------------
    summaries: list[IterationSummary] = []
    d0 = out / "iter-0"
    d0.mkdir(exist_ok=True)
    if (d0 / "summary.json").exists():
        summaries.append(IterationSummary.from_json(d0 / "summary.json"))
    else:
        log("\n=== iteration 0: evaluating the starting model")
        t0 = time.time()
        ev = evaluate(
            cfg,
            models,
            m.name_or_path,
            heldout,
            d0,
            prev_answers=None,
            judge_model=eval_judge(m.name_or_path),
            human_pairs=human_pairs,
            seed=cfg.seed,
            log=log,
            scorer=eval_scorer,
        )
        s0 = IterationSummary(
            iteration=0,
            model=m.name_or_path,
            eval=ev,
            mean_judge_score=ev.mean_judge_score,
            seconds=round(time.time() - t0, 1),
        )
        write_json(d0 / "summary.json", s0)
        summaries.append(s0)
        log(_eval_line(s0))

    current = summaries[0].model
    for t in range(1, cfg.iterations + 1):
        d = out / f"iter-{t}"
        if (d / "summary.json").exists():
            s = IterationSummary.from_json(d / "summary.json")
            summaries.append(s)
            current = s.model
            log(f"\n=== iteration {t}: finished earlier ({d / 'summary.json'}), skipped")
            continue
        d.mkdir(exist_ok=True)
        state = StepState(d / "state.json")
        t0 = time.time()
        seed = cfg.seed + 1000 * t
        log(f"\n=== iteration {t}: from {current}")

        # 1. prompts
        if not state.done("prompts"):
            k = p.per_iteration or len(pool)
            start = ((t - 1) * k) % len(pool)
            chosen = [pool[(start + i) % len(pool)] for i in range(min(k, len(pool)))]
            rows = [{"prompt": q, "source": "dataset"} for q in chosen]
            new_stats = {"requested": 0, "too_short": 0}
            if p.self_instruct.new_prompts:
                si = p.self_instruct
                texts = [prompt_text(q) for q in pool if isinstance(q, str)] or [prompt_text(q) for q in pool]
                requests = self_instruct_requests(texts, si.new_prompts, si.few_shot, random.Random(seed))
                written = models.generate(
                    current,
                    requests,
                    max_new_tokens=si.max_new_tokens,
                    temperature=si.temperature,
                    top_p=cfg.generation.top_p,
                    seed=seed,
                    batch_size=cfg.generation.batch_size,
                )
                cleaned = [clean_new_prompt(w) for w in written]
                kept = [c for c in cleaned if words(c) >= si.min_words]
                new_stats = {"requested": len(requests), "too_short": len(cleaned) - len(kept)}
                rows += [{"prompt": c, "source": "self_instruct"} for c in kept]
            before = len(rows)
            rows, _ = dedupe(rows, key=lambda r: norm_text(prompt_text(r["prompt"])))
            rows = [r for r in rows if r["source"] == "dataset" or norm_text(r["prompt"]) not in held_keys]
            dup = before - len(rows)  # repeats, and written prompts that copy a held-out one
            for i, r in enumerate(rows):
                r["id"] = i
            write_jsonl(d / "prompts.jsonl", rows)
            state.record(
                "prompts",
                PromptStats(
                    total=len(rows),
                    from_dataset=sum(r["source"] == "dataset" for r in rows),
                    self_instruct_new=sum(r["source"] == "self_instruct" for r in rows),
                    self_instruct_requested=new_stats["requested"],
                    self_instruct_too_short=new_stats["too_short"],
                    duplicates_removed=dup,
                ),
            )
            log(f"prompts: {state.get('prompts').to_dict()}")
        prompt_rows = read_jsonl(d / "prompts.jsonl")

        # 2. candidates
        if not state.done("candidates"):
            g = cfg.generation
            flat = [r["prompt"] for r in prompt_rows for _ in range(g.n)]
            texts = models.generate(
                current,
                flat,
                max_new_tokens=g.max_new_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                seed=seed + 1,
                batch_size=g.batch_size,
            )
            groups, dup, empty = [], 0, 0
            for i, r in enumerate(prompt_rows):
                cands = [c.strip() for c in texts[i * g.n : (i + 1) * g.n]]
                nonempty = [c for c in cands if c]
                empty += len(cands) - len(nonempty)
                uniq, removed = dedupe(nonempty, key=norm_text)
                dup += removed
                groups.append({"prompt_id": r["id"], "prompt": r["prompt"], "candidates": uniq})
            write_jsonl(d / "candidates.jsonl", groups)
            state.record(
                "candidates",
                CandidateStats(
                    prompts=len(groups),
                    samples=len(flat),
                    unique=sum(len(x["candidates"]) for x in groups),
                    duplicates_removed=dup,
                    empty_removed=empty,
                ),
            )
            log(f"candidates: {state.get('candidates').to_dict()}")
        groups = read_jsonl(d / "candidates.jsonl")

        # 3. judging
        if not state.done("judging"):
            judge = make_judge(cfg, models, current, seed=seed + 2)
            flat_p = [x["prompt"] for x in groups for _ in x["candidates"]]
            flat_c = [c for x in groups for c in x["candidates"]]
            judged = judge.judgments(flat_p, flat_c) if flat_c else []
            rows, k = [], 0
            for x in groups:
                for j, c in enumerate(x["candidates"]):
                    jd = judged[k]
                    k += 1
                    rows.append(
                        {
                            "prompt_id": x["prompt_id"],
                            "candidate": j,
                            "response": c,
                            "score": jd.score,
                            "samples": list(jd.samples),
                            "raw": list(jd.raw),
                        }
                    )
            write_jsonl(d / "judgments.jsonl", rows)
            unparseable = sum(r["score"] is None for r in rows)
            samples = sum(len(r["samples"]) for r in rows)
            bad_samples = sum(s is None for r in rows for s in r["samples"])
            state.record(
                "judging",
                JudgingStats(
                    type=cfg.judge.type,
                    judge=judge.name,
                    judgments=len(rows),
                    unparseable=unparseable,
                    unparseable_rate=unparseable / len(rows) if rows else None,
                    judge_samples=samples,
                    unparseable_samples=bad_samples,
                ),
            )
            log(f"judging: {state.get('judging').to_dict()}")
            if unparseable:
                log(
                    f"  {unparseable} of {len(rows)} candidates got no usable score ({bad_samples} of {samples} judge samples unparseable)"
                )
        judgments = read_jsonl(d / "judgments.jsonl")

        # 4. pairs
        if not state.done("pairs"):
            by_prompt: dict[int, list] = {}
            for r in judgments:
                by_prompt.setdefault(r["prompt_id"], []).append(r["score"])
            scored = [{**x, "scores": by_prompt.get(x["prompt_id"], [])} for x in groups]
            if cfg.mode == "dpo":
                rows, stats = build_pairs(scored, min_gap=cfg.pairs.min_gap, max_length_ratio=cfg.pairs.max_length_ratio)
            else:
                rows, stats = best_of_n(scored)
            write_jsonl(d / "pairs.jsonl", rows)
            state.record("pairs", stats)
            log(f"pairs: {state.get('pairs').to_dict()}")

        # 5. training
        if not state.done("train"):
            n_pairs = state.get("pairs").pairs
            if n_pairs == 0:
                log(
                    f"iteration {t}: no training {'pairs' if cfg.mode == 'dpo' else 'answers'} "
                    f"({state.get('pairs').to_dict()}); the model is carried over unchanged"
                )
                state.record("train", TrainOutcome(skipped="no pairs", model=current))
            else:
                models.free()  # training loads its own copies
                tr = time.time()
                result = _train(cfg, current, d, seed)
                state.record(
                    "train",
                    TrainOutcome(
                        steps=result.steps,
                        train_loss=result.train_loss,
                        seconds=round(time.time() - tr, 1),
                        model=str(result.final_dir),
                    ),
                )
        new_model = state.get("train").model

        # 6. evaluation
        if not state.done("eval"):
            ev = evaluate(
                cfg,
                models,
                new_model,
                heldout,
                d,
                prev_answers=out / f"iter-{t - 1}" / "eval_answers.jsonl",
                judge_model=eval_judge(new_model),
                human_pairs=human_pairs,
                seed=cfg.seed,
                log=log,
                scorer=eval_scorer,
            )
            state.record("eval", ev)
        ev = state.get("eval")
        s = IterationSummary(
            iteration=t,
            mode=cfg.mode,
            model=new_model,
            prompts=state.get("prompts"),
            candidates=state.get("candidates"),
            judging=state.get("judging"),
            pairs=state.get("pairs"),
            train=state.get("train"),
            eval=ev,
            mean_judge_score=ev.mean_judge_score,
            seconds=round(time.time() - t0, 1),
        )
        write_json(d / "summary.json", s)
        summaries.append(s)
        current = new_model
        log(_eval_line(s))

    models.free()
    print_iteration_table(summaries)
    examples = _examples(out, cfg.iterations)
    write_report_html(out / "report.html", summaries, config_yaml=(out / "config.yaml").read_text(), examples=examples)
    write_json(
        out / "summary.json", RunSummary(iterations=summaries, final_model=current, seconds=round(time.time() - t_start, 1))
    )
    log(f"\nwrote {out / 'report.html'} and {out / 'summary.json'}; final model: {current}")
    return SelfRewardResult(output_dir=out, final_model=current, summaries=summaries)


def _train(cfg: SelfRewardConfig, current: str, d: Path, seed: int):
    """The iteration's training run in ``d/train`` (resumes from its checkpoints when interrupted)."""
    model = cfg.model.model_copy(update={"name_or_path": current, "init": None})
    common = {"output_dir": str(d / "train"), "resume": "auto", "tensorboard": cfg.tensorboard, "model": model.model_dump()}
    if cfg.mode == "dpo":
        from alignkit.algorithms.dpo import run as run_dpo
        from alignkit.config.dpo import DPOConfig

        x = cfg.dpo
        dpo_cfg = DPOConfig.model_validate(
            {
                **common,
                "loss": x.loss.model_dump(by_alias=True),
                "train": x.train.model_dump(),
                "data": {
                    "train": str(d / "pairs.jsonl"),
                    "format": "preference",
                    "max_length": x.max_length,
                    "packing": x.packing,
                },
                "ref": {"model": None, "precompute": x.precompute_ref},
            }
        )
        return run_dpo(dpo_cfg)
    from alignkit.algorithms.sft import run as run_sft
    from alignkit.config.sft import SFTConfig

    x = cfg.sft
    sft_cfg = SFTConfig.model_validate(
        {
            **common,
            "train": x.train.model_dump(),
            "data": {
                "train": str(d / "pairs.jsonl"),
                "format": "prompt_completion",
                "max_length": x.max_length,
                "packing": x.packing,
            },
        }
    )
    return run_sft(sft_cfg)


def _eval_line(s: IterationSummary) -> str:
    e = s.eval or EvalFigures()
    parts = [f"iteration {s.iteration}: mean judge score {_f(e.mean_judge_score)} on {e.prompts} held-out prompts"]
    if e.mean_reward is not None:
        parts.append(f"mean reward {_f(e.mean_reward)}")
    if e.win_rate_vs_previous is not None:
        parts.append(f"win rate vs previous {_f(e.win_rate_vs_previous)}")
    if e.judge_agreement is not None:
        parts.append(f"judge agreement {_f(e.judge_agreement)} ({e.agreement_pairs} pairs)")
    return ", ".join(parts)


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _examples(out: Path, iterations: int, per_iteration: int = 3) -> list[ExamplePair]:
    """The first ``per_iteration`` training pairs of each iteration (none in best-of-n mode), for the report."""
    rows = []
    for t in range(1, iterations + 1):
        path = out / f"iter-{t}" / "pairs.jsonl"
        if path.exists():
            for r in read_jsonl(path)[:per_iteration]:
                if "chosen" in r:
                    rows.append(
                        ExamplePair(
                            iteration=t,
                            prompt=r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]),
                            chosen=r["chosen"],
                            rejected=r["rejected"],
                            score_chosen=r["score_chosen"],
                            score_rejected=r["score_rejected"],
                        )
                    )
    return rows


def _logger(path: Path) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(msg, flush=True)
        with path.open("a") as f:
            f.write(msg + "\n")

    return log
