"""Preference pairs shared by the reward-model and preference-optimisation benchmarks (``rm_vs_trl``,
``dpo_vs_trl``): the pairs both frameworks train on, alignkit's batch plan, and the result of one run."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import HH_RLHF


@dataclass
class RunResult:
    name: str  # "alignkit" | "trl"
    pairs_per_second: float  # timed pairs / timed seconds (the headline)
    tokens_per_second: float  # non-pad tokens (both sides) of the timed steps / timed seconds
    timed_steps: int
    timed_seconds: float
    peak_rss_mib: float  # the subprocess's own peak RSS (os.wait4 ru_maxrss)
    losses: list[float]  # (steps,) per-step mean pair loss
    step_tokens: list[int]  # (steps,) non-pad tokens per step (chosen + rejected)
    step_pairs_per_second: list[float]  # (timed_steps,) each timed step alone: the spread shows noise
    process_seconds: float  # the whole subprocess, start-up included
    end_to_end_pairs_per_second: float | None = None  # TRL: step end -> step end
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchData:
    model_dir: str  # the init_model directory both runs load
    hh_path: str  # the chosen rows, raw hh-rlhf lines, in file order (alignkit reads this)
    trl_rows: list[dict]  # the same pairs as TRL conversational preference rows, in alignkit's batch order
    order: list[int]  # (steps * batch,) alignkit's plan: step k trains on order[k*B:(k+1)*B]
    lengths: list[tuple[int, int]]  # (pairs,) token lengths (chosen, rejected), file order
    ids_sha256: str  # of alignkit's token ids in plan order, compared with TRL's
    rows_scanned: int  # source rows read to find them
    passed_over: int  # usable source pairs passed over because a side is longer than max_length


CHUNK = 128  # pairs tokenised at a time by prepare_data


def ids_digest(pairs: list[list[list[int]]]) -> str:
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def prepare_data(model_dir: Path, work: Path, a: argparse.Namespace) -> BenchData:
    """The first ``steps x batch`` hh-rlhf pairs that alignkit keeps and whose both sides fit in max_length."""
    from alignkit.data.formats import load_examples
    from alignkit.data.pairs import tokenize_pairs
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.loading import load_tokenizer
    from alignkit.training.batching import step_micro_batches

    n = a.steps * a.batch_size
    tokenizer = load_tokenizer(str(model_dir))
    ensure_chat_template(tokenizer)
    examples = load_examples(str(HH_RLHF), fmt="hh_rlhf", on_error="skip").examples
    by_ref = {ex.ref: ex for ex in examples}
    kept, passed_over = [], 0
    # tokenised a chunk at a time (each pair on its own), only until n fit: not the whole file
    for start in range(0, len(examples), CHUNK):
        tok = tokenize_pairs(examples[start : start + CHUNK], tokenizer, template="chat", max_length=10**9, on_error="skip")
        for p in tok.pairs:
            if max(len(p.chosen_ids), len(p.rejected_ids)) > a.max_length:
                passed_over += 1
            elif len(kept) < n:
                kept.append(p)
            if len(kept) == n:
                break
        if len(kept) == n:
            break
    if len(kept) < n:
        raise SystemExit(f"only {len(kept)} pairs of {HH_RLHF} fit in max_length={a.max_length}; need {n}")
    with gzip.open(HH_RLHF, "rt") as f:
        lines = f.read().splitlines()
    hh_path = work / "pairs.jsonl"
    hh_path.write_text("".join(lines[p.ref.line - 1] + "\n" for p in kept))
    # the written file must give back exactly these pairs
    again = load_examples(str(hh_path), fmt="hh_rlhf", on_error="raise").examples
    if [(e.prompt, e.chosen, e.rejected) for e in again] != [
        (by_ref[p.ref].prompt, by_ref[p.ref].chosen, by_ref[p.ref].rejected) for p in kept
    ]:
        raise SystemExit(f"{hh_path}: the rows read back differ from the pairs chosen")
    plan = dict(num_examples=n, batch_size=a.batch_size, grad_accum=1, world_size=1, rank=0, seed=a.seed)
    order = [i for k in range(a.steps) for i in step_micro_batches(k, **plan)[0]]

    trl_rows = []  # conversational preference rows with an explicit prompt, in plan order
    for i in order:
        ex = again[i]
        trl_rows.append(
            {
                "prompt": [{"role": m.role, "content": m.content} for m in ex.prompt],
                "chosen": [{"role": "assistant", "content": ex.chosen}],
                "rejected": [{"role": "assistant", "content": ex.rejected}],
            }
        )
    return BenchData(
        str(model_dir),
        str(hh_path),
        trl_rows,
        order,
        [(len(p.chosen_ids), len(p.rejected_ids)) for p in kept],
        ids_digest([[kept[i].chosen_ids, kept[i].rejected_ids] for i in order]),
        kept[-1].ref.line,
        passed_over,
    )


def expected_step_tokens(data: BenchData, a) -> list[int]:
    """(steps,) non-pad tokens each step must see (both sides of its pairs), from the lengths and the plan."""
    B = a.batch_size
    return [sum(sum(data.lengths[i]) for i in data.order[k * B : (k + 1) * B]) for k in range(a.steps)]
