"""Benchmark: alignkit's preference-optimisation stage against TRL's ``DPOTrainer`` and ``ORPOTrainer`` on CPU.

Claims measured (stated again in the output), for each mode:
  - ``dpo``: alignkit ``dpo`` with ``ref.precompute: true`` trains at >= 1.5x the pairs/s of the faster of TRL's two
    ``DPOTrainer`` runs (reference copy, ``precompute_ref_log_probs=True``) with <= 0.8x the peak RSS of the leaner;
  - ``orpo``: alignkit ``orpo`` (``loss: {type: orpo, lambda, nll: token}``) against TRL's experimental
    ``trl.experimental.orpo.ORPOTrainer``, the same goals;
  - and in both, the first-step losses agree to 1e-4 (relative), on quantities that tell the two apart.

Runs (each its own subprocess, so its peak RSS, from ``os.wait4``, is its own):
  dpo:  alignkit-dpo-precompute (``ref.precompute: true``, the headline), alignkit-dpo-copy (``ref.precompute:
        false``: a frozen copy of the policy), trl-dpo-copy (``ref_model=None``, full fine-tuning: TRL loads a copy),
        trl-dpo-precompute (``precompute_ref_log_probs=True``). Sigmoid loss, beta 0.1.
  orpo: alignkit-orpo (``python -m alignkit orpo``, the alias), trl-orpo (``beta`` = ORPO's lambda, 0.1).

Held equal: one randomly initialised llama/--size (``init_model``, built once, float32, sdpa attention), the same
hh-rlhf harmless pairs in the same batches in the same order (alignkit's plan from ``step_micro_batches``; TRL reads
the rows in that order with ``train_sampling_strategy="sequential"``, which is a ``SequentialSampler``), batch size,
steps, learning rate with a linear schedule and no warm-up, ``max_grad_norm`` 1.0, no weight decay, AdamW, dropout
off, no gradient checkpointing, no bf16/fp16, the torch thread count, logging every step, no eval, no checkpoints,
no tensorboard. Only pairs whose prompt+chosen and prompt+rejected both fit in ``--max-length`` are used, so neither
framework truncates or drops anything (checked: alignkit's ``summary.json``, TRL's dataset size).

Tokens (checked in every run: sha256 of the token ids and of the learned-token masks, against alignkit's
``tokenize_example``: the conversation with the ChatML chat template, the completion learned up to and including its
last ``<|im_end|>``; the ``"\\n"`` the template writes after it is in the input but not learned):
  - TRL ``DPOTrainer`` tokenizes prompt+chosen with ``apply_chat_template`` too: the same input ids, but its
    completion is everything after the prompt, so it also learns that trailing ``"\\n"`` (one more token per side).
  - TRL ``ORPOTrainer`` renders the chat template to text and re-tokenizes: the same ids, plus a BOS
    (``<|endoftext|>``) it prepends and an EOS (``<|im_end|>``) it appends after the ``"\\n"`` (2 more tokens per
    sequence), and it learns ``"\\n"`` + the extra EOS (2 more learned tokens per side).
  With ``--trl-tokens alignkit`` (the default) TRL is given alignkit's tokens exactly: its DPO collator's
  ``completion_mask`` stops at the last ``<|im_end|>`` of each sequence, and ORPO's ``tokenize_row`` output has the
  added BOS/EOS taken off and the ``"\\n"`` label set to -100. Only which ids go in changes (TRL's loss code is
  untouched), and it gives TRL slightly less work than stock, so it is conservative for the speed claim.
  ``--trl-tokens stock`` runs TRL as shipped (then the discriminating loss checks are expected to differ).

Losses (what is compared):
  - DPO: step 1 is log 2 in every run whatever the tokens (policy == reference), so the checks also compare step 1's
    ``logps/chosen`` and ``logps/rejected`` (both frameworks: mean over pairs of the completion's summed log-probs)
    and report step 2's loss (after one AdamW step: TRL's default ``adamw_torch_fused`` vs alignkit's
    ``torch.optim.AdamW``, so it agrees less tightly).
  - ORPO: TRL's SFT term is NOT alignkit's. TRL computes ``nn.CrossEntropyLoss`` over every non-pad token of the
    chosen sequences: prompt AND completion ("orpo chosen nll loss is computed over the full prompt and response"),
    a token mean over the batch; alignkit's ``nll: token`` is the token mean over the chosen *completion* tokens of the
    step (``nll: sequence``: per-pair mean, then the mean over pairs, as in the paper). The odds-ratio term agrees:
    both use per-token mean log-probs over the completion tokens (TRL ``get_batch_logps(average_log_prob=True)``),
    ``log odds = (lc - lr) - (log1mexp(lc) - log1mexp(lr))``, loss ``-logsigmoid``, weighted by lambda (TRL ``beta``),
    and rewards ``lambda * mean logp``. So the TRL ORPO run also measures, on its own step-1 forward (no gradient, a
    warm-up step), the token-mean NLL of the chosen completion tokens; the check compares alignkit's step-1 loss
    with ``TRL loss - TRL nll_loss + that NLL``, and the raw TRL loss is reported beside it. Note also that TRL
    logs ``logps/*`` as per-token means for ORPO, alignkit as sums: the ORPO check compares ``rewards/*`` (lambda x
    mean logp in both), the log odds (alignkit ``log_odds_ratio`` = TRL ``log_odds_chosen``) and the NLL.

Throughput is pairs of the timed steps over the wall time of those steps; the first ``--warmup`` steps (>= 1) and
all start-up are left out:
  - alignkit: ``metrics.jsonl`` (``log_every=1``): each step's time is ``batch_size / pairs_per_second`` and runs from
    planning and collating its batch to the optimizer step. The reference precompute pass runs before step 1 and is
    NOT timed (its own time, from alignkit's log, and the whole-process wall time are reported);
  - TRL: a ``TrainerCallback`` stamps ``on_step_begin``/``on_step_end``: the headline sums begin->end, which leaves
    out fetching and collating the batch (TRL's best case); step end -> step end (e2e) is reported beside it. TRL's
    precompute runs in ``DPOTrainer.__init__``, also outside the timed steps (trainer construction time reported).

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.dpo_vs_trl [--modes dpo orpo --steps N --warmup W
      --batch-size B --max-length L --size tiny|small|medium --threads T --repeats R --trl-tokens alignkit|stock --out PATH]
      [--smoke: 2 tiny steps, one repeat, no import probes, no -copy runs (the -precompute ones with the
      reference pass off), the runs two at a time, a temporary folder: a check that it runs]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import HH_RLHF, REPO, child_env, module_cmd, run_child, timed_window, versions
from benchmarks.pairs import BenchData, RunResult, expected_step_tokens, ids_digest
from benchmarks.pairs import prepare_data as prepare_pairs

GOAL_PAIRS_RATIO = 1.5  # alignkit / TRL, pairs/s (at least)
GOAL_MEMORY_RATIO = 0.8  # alignkit / TRL, peak RSS (at most)
LOSS_RTOL = 1e-4  # first-step agreement, relative
STEP2_RTOL = 1e-3  # step 2 (after one AdamW step, different AdamW implementations): informational

# mode -> runs: (name, framework, variant)
RUNS = {
    "dpo": [
        ("alignkit-dpo-precompute", "alignkit", "precompute"),
        ("alignkit-dpo-copy", "alignkit", "copy"),
        ("trl-dpo-copy", "trl", "copy"),
        ("trl-dpo-precompute", "trl", "precompute"),
    ],
    "orpo": [("alignkit-orpo", "alignkit", "orpo"), ("trl-orpo", "trl", "orpo")],
}
HEADLINE = {"dpo": "alignkit-dpo-precompute", "orpo": "alignkit-orpo"}


@dataclass
class PrefRunResult(RunResult):
    """``pairs.RunResult`` plus what a preference run logs."""

    step_metrics: list[dict] = field(default_factory=list)  # (steps,) every number logged at each step
    setup_seconds: float | None = None  # alignkit: its reference pass (log); TRL: trainer construction (+ its pass)
    checks: dict = field(default_factory=dict)  # TRL: token digests, ORPO's completion NLL at step 1


@dataclass
class PrefBenchData(BenchData):
    """``pairs.BenchData`` plus alignkit's policy-optimisation masks of the same pairs."""

    masks_sha256: str  # of alignkit's learned-token masks [chosen, rejected] in plan order
    learned: list[tuple[int, int]]  # (pairs,) learned tokens (chosen, rejected), file order


# ------------------------------------------------------------------------------------------ data


def prepare_child(a: argparse.Namespace) -> None:
    """``--prepare``: build the model, pick the pairs (``pairs.prepare_data``), add alignkit's DPO tokenisation.

    In a child so that the launcher stays small (a child's ``ru_maxrss`` starts at its parent's RSS when spawned).
    """
    import dataclasses

    import torch

    torch.set_num_threads(a.threads)
    from alignkit.data.formats import load_examples
    from alignkit.data.tokenize import ensure_chat_template, tokenize_example
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.init_model import init_model
    from alignkit.models.loading import load_tokenizer

    quiet_libraries()
    work = Path(a.work_dir).resolve()
    model_dir = init_model("llama", a.size, [str(HH_RLHF)], str(work / f"model-{a.size}"), seed=0, overwrite=True)
    base = prepare_pairs(model_dir, work, a)  # pairs whose both sides fit, pairs.jsonl, plan, TRL rows
    tokenizer = load_tokenizer(str(model_dir))
    ensure_chat_template(tokenizer)
    examples = load_examples(base.hh_path, fmt="hh_rlhf", on_error="raise").examples
    seqs = []  # (pairs,) alignkit's policy tokenisation (alignkit.data.preference does exactly this per side)
    for ex in examples:
        sides = [
            tokenize_example(dataclasses.replace(ex, completion=c), tokenizer, max_length=a.max_length, overlong="drop")
            for c in (ex.chosen, ex.rejected)
        ]
        if None in sides:
            raise SystemExit(f"{ex.ref}: a side does not fit in max_length={a.max_length} or learns nothing")
        seqs.append(sides)
    ids = ids_digest([[seqs[i][0].input_ids, seqs[i][1].input_ids] for i in base.order])
    if ids != base.ids_sha256:  # the reward-model rendering (text, then tokenize) and apply_chat_template agree
        raise SystemExit("alignkit's policy tokenisation differs from its reward-model tokenisation of the same pairs")
    masks = ids_digest([[seqs[i][0].loss_mask, seqs[i][1].loss_mask] for i in base.order])
    learned = [(sum(c.loss_mask[1:]), sum(r.loss_mask[1:])) for c, r in seqs]
    data = PrefBenchData(**asdict(base), masks_sha256=masks, learned=learned)
    (work / "data.json").write_text(json.dumps(asdict(data)))


# ------------------------------------------------------------------------------------------ alignkit


def alignkit_config(a, out: Path, data: PrefBenchData, variant: str) -> dict:
    if variant == "orpo":
        loss = {"type": "orpo", "lambda": a.orpo_lambda, "nll": a.orpo_nll}
    else:
        loss = {"type": "sigmoid", "beta": a.beta}
    cfg = {
        "output_dir": str(out),
        "resume": "never",
        "tensorboard": False,
        "disable_dropout": True,
        "model": {
            "name_or_path": data.model_dir,
            "finetune": "full",
            "dtype": "float32",
            "gradient_checkpointing": False,
            "attn_implementation": "sdpa",
        },
        "data": {
            "train": str(data.hh_path),
            "format": "hh_rlhf",
            "max_length": a.max_length,
            "eval_fraction": 0.0,
            "on_error": "skip",
            "max_rows": a.steps * a.batch_size,
            "packing": a.alignkit_packing == "true",
        },
        "loss": loss,
        **({} if variant == "orpo" else {"ref": {"precompute": variant == "precompute"}}),
        "train": {
            "seed": a.seed,
            "max_steps": a.steps,
            "batch_size": a.batch_size,
            "grad_accum": 1,
            "learning_rate": a.lr,
            "weight_decay": 0.0,
            "lr_scheduler": "linear",
            "warmup_steps": 0,
            "max_grad_norm": 1.0,
            "mixed_precision": "no",
            "log_every": 1,
            "eval_every": None,
            "save_every": None,
            "group_by_length": False,
        },
    }
    return cfg


def run_alignkit(a, work: Path, data: PrefBenchData, name: str, variant: str) -> PrefRunResult:
    import yaml

    out = work / name
    shutil.rmtree(out, ignore_errors=True)  # also its ref_logps/ cache: every run computes its reference pass
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(alignkit_config(a, out, data, variant), sort_keys=False))
    stage = "orpo" if variant == "orpo" else "dpo"  # `alignkit orpo` is the alias that presets the loss
    log = work / f"{name}.log"
    rss, wall = run_child([sys.executable, "-m", "alignkit", stage, str(cfg_path)], env=child_env(a.threads), log=log)
    n = a.steps * a.batch_size
    stats = json.loads((out / "summary.json").read_text())["data"]
    if (stats.get("pairs"), stats.get("skipped"), stats.get("truncated")) != (n, 0, 0):
        raise SystemExit(f"{name}: alignkit loaded {stats}; expected {n} pairs, none skipped or truncated")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows if "pairs_per_second" in r}
    if sorted(by_step) != list(range(1, a.steps + 1)):
        raise SystemExit(f"{out}/metrics.jsonl: expected steps 1..{a.steps}, got {sorted(by_step)}")
    steps = sorted(by_step)
    secs = {s: a.batch_size / by_step[s]["pairs_per_second"] for s in steps}  # the step's dt
    window = list(timed_window(a.steps, a.warmup))
    seconds = sum(secs[s] for s in window)
    ref_pass = re.findall(r"reference log-probs \(train\): \d+ sequences computed in ([\d.]+)s", log.read_text())
    notes = []
    if variant == "precompute":
        notes.append(
            f"reference pass before step 1 (not timed): {ref_pass[-1]}s"
            if ref_pass
            else "reference pass time not found in the log"
        )
    return PrefRunResult(
        name,
        len(window) * a.batch_size / seconds,
        sum(by_step[s]["tokens_per_second"] * secs[s] for s in window) / seconds,
        len(window),
        seconds,
        rss,
        losses=[by_step[s]["loss"] for s in steps],
        step_tokens=[round(by_step[s]["tokens_per_second"] * secs[s]) for s in steps],  # tokens = rate x dt
        step_pairs_per_second=[by_step[s]["pairs_per_second"] for s in window],
        process_seconds=wall,
        notes=notes,
        step_metrics=[by_step[s] for s in steps],
        setup_seconds=float(ref_pass[-1]) if ref_pass else None,
    )


# ------------------------------------------------------------------------------------------ TRL


def trim_after_last_eos(input_ids, mask, eos_token_id: int):
    """(N, T) ``mask`` with every position after the last ``eos_token_id`` it covers set to 0 (rows with none kept):
    alignkit's rule, the completion is learned up to and including its last end-of-turn token."""
    import torch

    pos = torch.arange(input_ids.shape[1])
    is_eos = (input_ids == eos_token_id) & (mask == 1)
    last = torch.where(is_eos, pos, torch.full_like(pos, -1)).max(dim=1).values  # (N,)
    keep = (pos[None, :] <= last[:, None]) | (last[:, None] < 0)
    return mask * keep.to(mask.dtype)


def trl_child(spec_path: str) -> None:
    """``--run-trl SPEC``: one TRL DPOTrainer or ORPOTrainer run in this process; writes a JSON result file."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    import torch.nn.functional as F
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])  # <|pad|>, eos <|im_end|>, alignkit's ChatML template
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    aligned = spec["tokens"] == "alignkit"
    eos = tokenizer.eos_token_id

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begin, self.end, self.tokens, self.logs, self.pending = {}, {}, {}, {}, 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin[state.global_step + 1] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end[state.global_step] = time.perf_counter()
            self.tokens[state.global_step], self.pending = self.pending, 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.logs[state.global_step] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}

    clock = StepClock()
    common = dict(
        output_dir=spec["output_dir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=spec["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        max_length=spec["max_length"],  # every pair fits: nothing is truncated or dropped (checked)
        disable_dropout=True,
        # float32, no activation recomputation, as alignkit runs (TRL defaults: bf16=True, gradient_checkpointing=True)
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        train_sampling_strategy="sequential",  # rows come in alignkit's batch order; no reshuffle
        dataloader_num_workers=0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
    )
    rows = Dataset.from_list(spec["rows"])
    checks: dict = {}
    t0 = time.perf_counter()
    if spec["algo"] == "dpo":
        from trl import DPOConfig, DPOTrainer
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        @dataclass
        class CollatorLearnedToEos(DataCollatorForPreference):
            """TRL's collator, its completion_mask stopped at the last <|im_end|> (alignkit's learned tokens)."""

            eos_token_id: int = -1

            def torch_call(self, examples):
                out = super().torch_call(examples)
                mask = trim_after_last_eos(out["input_ids"], out["completion_mask"], self.eos_token_id)
                out["completion_mask"] = mask
                return out

        collator = None
        if aligned:  # the arguments DPOTrainer gives its own collator
            collator = CollatorLearnedToEos(
                pad_token_id=tokenizer.pad_token_id, max_length=spec["max_length"], truncation_mode="keep_start", eos_token_id=eos
            )
        config = DPOConfig(
            **common, beta=spec["beta"], loss_type=["sigmoid"], precompute_ref_log_probs=spec["variant"] == "precompute"
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=config,
            train_dataset=rows,
            processing_class=tokenizer,
            data_collator=collator,
            callbacks=[clock],
        )
        setup = time.perf_counter() - t0
        ds = trainer.train_dataset
        ids, masks = [], []
        for ex in ds:  # exactly what the collator hands the model, one pair at a time, padding cut off
            b = trainer.data_collator([{k: ex[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
            n = b["attention_mask"].sum(1).tolist()
            ids.append([b["input_ids"][i, : n[i]].tolist() for i in (0, 1)])
            masks.append([b["completion_mask"][i, : n[i]].tolist() for i in (0, 1)])
        checks["ref_model_loaded"] = trainer.ref_model is not None

        def count(inputs) -> int:
            return int(inputs["attention_mask"].sum())
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        class ORPOOnAlignkitTokens(ORPOTrainer):
            """TRL's ORPO tokenisation, less what it adds to alignkit's tokens: the BOS it prepends, the EOS it
            appends after the template's "\\n", and the "\\n" as a learned token."""

            def tokenize_row(self, feature, model=None):
                b = super().tokenize_row(feature, model)
                tok = self.processing_class
                added_bos = not feature["prompt"].startswith(tok.bos_token or "\0")
                for side in ("chosen", "rejected"):
                    ids, att, lab = (list(b[f"{side}_{k}"]) for k in ("input_ids", "attention_mask", "labels"))
                    if added_bos and ids[0] == tok.bos_token_id:
                        ids, att, lab = ids[1:], att[1:], lab[1:]
                    if not feature[side].endswith(tok.eos_token) and ids[-1] == tok.eos_token_id:
                        ids, att, lab = ids[:-1], att[:-1], lab[:-1]
                    last = max((i for i, (t, y) in enumerate(zip(ids, lab)) if y != -100 and t == tok.eos_token_id), default=None)
                    if last is not None:
                        lab = lab[: last + 1] + [-100] * (len(lab) - last - 1)
                    b[f"{side}_input_ids"], b[f"{side}_attention_mask"], b[f"{side}_labels"] = ids, att, lab
                if added_bos and b["prompt_input_ids"][:1] == [tok.bos_token_id]:
                    for k in ("prompt_input_ids", "prompt_attention_mask"):
                        b[k] = b[k][1:]
                return b

        # TRL's ORPO checks max_length with the BOS and EOS it adds counted (2 more tokens than alignkit's
        # sequences): give it that room, or the longest pairs get cut (the override then takes the two off).
        orpo_common = {**common, "max_length": spec["max_length"] + 2}
        config = ORPOConfig(**orpo_common, beta=spec["orpo_lambda"], remove_unused_columns=False)
        cls = ORPOOnAlignkitTokens if aligned else ORPOTrainer
        trainer = cls(model=model, args=config, train_dataset=rows, processing_class=tokenizer, callbacks=[clock])
        setup = time.perf_counter() - t0
        ds = trainer.train_dataset
        ids = [[c, r] for c, r in zip(ds["chosen_input_ids"], ds["rejected_input_ids"])]
        masks = [
            [[int(y != -100) for y in c], [int(y != -100) for y in r]] for c, r in zip(ds["chosen_labels"], ds["rejected_labels"])
        ]

        forward = trainer.concatenated_forward

        def concatenated_forward(model, batch):
            """TRL's forward; on the first training step also the NLL of the chosen *completion* tokens only."""
            out = forward(model, batch)
            if model.training and "step1_nll" not in checks:
                with torch.no_grad():
                    logits = out[2]  # (B, T-1, V): chosen logits, the last position dropped
                    labels = batch["chosen_labels"][:, 1:]  # (B, Tc-1): -100 off the completion
                    labels = F.pad(labels, (0, logits.shape[1] - labels.shape[1]), value=-100)
                    keep = labels != -100
                    tok_nll = F.cross_entropy(logits[keep].float(), labels[keep], reduction="none")  # (K,)
                    rows_ = keep.nonzero()[:, 0]
                    per_seq = torch.zeros(keep.shape[0]).index_add(0, rows_, tok_nll) / keep.sum(1).clamp(min=1)
                    checks["step1_nll"] = {
                        "trl_full_sequence": float(out[4]),
                        "completion_token_mean": float(tok_nll.mean()),
                        "completion_sequence_mean": float(per_seq.mean()),
                    }
            return out

        trainer.concatenated_forward = concatenated_forward

        def count(inputs) -> int:
            return int(inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum())

    compute_loss = trainer.compute_loss

    def counted_compute_loss(model, inputs, *args, **kwargs):  # non-pad tokens of each step, both sides
        clock.pending += count(inputs)
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = counted_compute_loss
    trainer.train()
    recompute = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    assert not trainer.args.bf16 and not recompute, "TRL ran in bf16 or with gradient checkpointing"
    checks.update(
        rows=len(ds),
        ids_sha256=ids_digest(ids),
        masks_sha256=ids_digest(masks),
        learned_per_pair=sum(sum(c[1:]) + sum(r[1:]) for c, r in masks) / max(len(masks), 1),
    )
    result = {
        "begin": clock.begin,
        "end": clock.end,
        "tokens": clock.tokens,
        "logs": clock.logs,
        "checks": checks,
        "setup_seconds": setup,
        "threads": torch.get_num_threads(),
        "optim": str(getattr(config.optim, "value", config.optim)),
    }
    Path(spec["result"]).write_text(json.dumps(result))


def run_trl(a, work: Path, data: PrefBenchData, name: str, variant: str) -> PrefRunResult:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {
        "algo": "orpo" if variant == "orpo" else "dpo",
        "variant": variant,
        "tokens": a.trl_tokens,
        "model": data.model_dir,
        "rows": data.trl_rows,
        "output_dir": str(out / "trainer"),
        "result": str(out / "result.json"),
        "steps": a.steps,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "lr": a.lr,
        "seed": a.seed,
        "threads": a.threads,
        "beta": a.beta,
        "orpo_lambda": a.orpo_lambda,
    }
    (out / "spec.json").write_text(json.dumps(spec))
    cmd = module_cmd(__spec__.name, "--run-trl", str(out / "spec.json"))
    rss, wall = run_child(cmd, env=child_env(a.threads), log=work / f"{name}.log")
    res = json.loads((out / "result.json").read_text())
    begin, end, tokens, logs = ({int(k): v for k, v in res[key].items()} for key in ("begin", "end", "tokens", "logs"))
    steps = list(range(1, a.steps + 1))
    if sorted(end) != steps or sorted(logs) != steps:
        raise SystemExit(f"{name}: expected steps 1..{a.steps}, got ends {sorted(end)} and logs {sorted(logs)}")
    window = list(timed_window(a.steps, a.warmup))
    seconds = sum(end[s] - begin[s] for s in window)
    chk = res["checks"]
    notes = [
        f"optim={res['optim']}",
        f"torch threads {res['threads']}",
        f"--trl-tokens {a.trl_tokens}",
        f"trainer construction {res['setup_seconds']:.1f}s (tokenisation"
        + (", reference pass)" if variant == "precompute" else ")"),
    ]
    if chk.get("ref_model_loaded") is not (variant == "copy") and variant != "orpo":
        notes.append(f"unexpected: TRL {'kept' if chk.get('ref_model_loaded') else 'did not load'} a reference model")
    if chk["rows"] != len(data.trl_rows):
        notes.append(f"TRL kept {chk['rows']} of {len(data.trl_rows)} pairs (max_length filter)")
    if chk["ids_sha256"] != data.ids_sha256:
        notes.append("TRL's token ids differ from alignkit's")
    if chk["masks_sha256"] != data.masks_sha256:
        notes.append(
            f"TRL's learned tokens differ from alignkit's ({chk['learned_per_pair']:.1f} per pair vs "
            f"{sum(c + r for c, r in data.learned) / len(data.learned):.1f})"
        )
    return PrefRunResult(
        name,
        len(window) * a.batch_size / seconds,
        sum(tokens[s] for s in window) / seconds,
        len(window),
        seconds,
        rss,
        losses=[logs[s]["loss"] for s in steps],
        step_tokens=[tokens[s] for s in steps],
        step_pairs_per_second=[a.batch_size / (end[s] - begin[s]) for s in window],
        process_seconds=wall,
        end_to_end_pairs_per_second=len(window) * a.batch_size / (end[a.steps] - end[a.warmup]),
        notes=notes,
        step_metrics=[logs[s] for s in steps],
        setup_seconds=res["setup_seconds"],
        checks=chk,
    )


# ------------------------------------------------------------------------------------------ import baseline

PROBES = {  # what each run imports before it loads anything: the memory floor of the framework alone
    "alignkit": [
        "alignkit.cli",
        "alignkit.config.dpo",
        "alignkit.algorithms.dpo",
        "accelerate",
        "alignkit.models.loading",
        "alignkit.models.logprobs",
        "alignkit.data.formats",
        "alignkit.data.preference",
        "alignkit.data.collate",
        "transformers.models.llama.modeling_llama",
    ],
    "trl-dpo": ["datasets", "transformers", "trl", "trl.trainer.dpo_trainer", "transformers.models.llama.modeling_llama"],
    "trl-orpo": ["datasets", "transformers", "trl", "trl.experimental.orpo", "transformers.models.llama.modeling_llama"],
}


def probe_of(run: str) -> str:
    return "alignkit" if run.startswith("alignkit") else "trl-orpo" if run == "trl-orpo" else "trl-dpo"


# ------------------------------------------------------------------------------------------ report


def rel(x: float | None, y: float | None) -> float | None:
    if x is None or y is None:
        return None
    return abs(x - y) / max(abs(y), 1e-12)


def metric(r: PrefRunResult, step: int, key: str) -> float | None:
    v = r.step_metrics[step - 1].get(key) if len(r.step_metrics) >= step else None
    return None if v is None else float(v)


def loss_checks(mode: str, res: dict[str, PrefRunResult], a) -> dict:
    """Step-1 agreement of every alignkit run with every TRL run of the mode, on discriminating quantities."""
    out = {}
    aks = [n for n in res if n.startswith("alignkit")]
    trls = [n for n in res if n.startswith("trl")]
    for ak_name in aks:
        ak = res[ak_name]
        for trl_name in trls:
            trl = res[trl_name]
            c: dict = {}
            if mode == "dpo":
                c["step1_loss"] = (ak.losses[0], trl.losses[0], rel(ak.losses[0], trl.losses[0]))
                for key in ("logps/chosen", "logps/rejected"):
                    x, y = metric(ak, 1, key), metric(trl, 1, key)
                    c[f"step1_{key}"] = (x, y, rel(x, y))
                agree = [v[2] for v in c.values()]
                if a.steps >= 2:
                    c["step2_loss (informational)"] = (ak.losses[1], trl.losses[1], rel(ak.losses[1], trl.losses[1]))
            else:
                nll = trl.checks.get("step1_nll", {})
                trl_nll = metric(trl, 1, "nll_loss")
                comp = nll.get("completion_token_mean" if a.orpo_nll == "token" else "completion_sequence_mean")
                trl_as_ak = None if comp is None or trl_nll is None else trl.losses[0] - trl_nll + comp
                c["step1_loss (TRL with alignkit's NLL)"] = (ak.losses[0], trl_as_ak, rel(ak.losses[0], trl_as_ak))
                c["step1_loss (raw TRL: NLL over prompt + completion, not a check)"] = (
                    ak.losses[0],
                    trl.losses[0],
                    rel(ak.losses[0], trl.losses[0]),
                )
                for key in ("rewards/chosen", "rewards/rejected"):  # lambda x per-token mean log-prob, in both
                    x, y = metric(ak, 1, key), metric(trl, 1, key)
                    c[f"step1_{key}"] = (x, y, rel(x, y))
                x = metric(ak, 1, "nll")
                c["step1_nll (completion tokens)"] = (x, comp, rel(x, comp))
                x, y = metric(ak, 1, "log_odds_ratio"), metric(trl, 1, "log_odds_chosen")  # mean log odds, in both
                c["step1_log_odds (not a check: a difference of near-equal numbers)"] = (x, y, rel(x, y))
                agree = [v[2] for k, v in c.items() if "not a check" not in k]
            c["max_abs_loss_difference_per_step"] = max(abs(x - y) for x, y in zip(ak.losses, trl.losses))
            c["agree"] = all(v is not None and v <= LOSS_RTOL for v in agree)
            out[f"{ak_name} vs {trl_name}"] = c
    return out


def mode_report(mode: str, a, res: dict[str, PrefRunResult], floors: dict[str, float], data: PrefBenchData) -> dict:
    head = res[HEADLINE[mode]]
    trls = {n: r for n, r in res.items() if n.startswith("trl")}
    fastest = max(trls, key=lambda n: trls[n].pairs_per_second)
    leanest = min(trls, key=lambda n: trls[n].peak_rss_mib)
    ratios = {
        f"{head.name} / {fastest} (fastest TRL) pairs/s": head.pairs_per_second / trls[fastest].pairs_per_second,
        f"{head.name} / {fastest} e2e pairs/s": head.pairs_per_second / trls[fastest].end_to_end_pairs_per_second,
        f"{head.name} / {leanest} (leanest TRL) peak RSS": head.peak_rss_mib / trls[leanest].peak_rss_mib,
    }
    for ak_name, trl_name in (("alignkit-dpo-copy", "trl-dpo-copy"), ("alignkit-dpo-precompute", "trl-dpo-precompute")):
        if ak_name in res and trl_name in res:  # like for like
            ratios[f"{ak_name} / {trl_name} pairs/s"] = res[ak_name].pairs_per_second / res[trl_name].pairs_per_second
            ratios[f"{ak_name} / {trl_name} peak RSS"] = res[ak_name].peak_rss_mib / res[trl_name].peak_rss_mib
    checks = loss_checks(mode, res, a)
    goals = {
        f"{mode}: {head.name} >= {GOAL_PAIRS_RATIO}x TRL pairs/s ({fastest})": head.pairs_per_second
        / trls[fastest].pairs_per_second
        >= GOAL_PAIRS_RATIO,
        f"{mode}: {head.name} peak RSS <= {GOAL_MEMORY_RATIO}x TRL ({leanest})": head.peak_rss_mib / trls[leanest].peak_rss_mib
        <= GOAL_MEMORY_RATIO,
        f"{mode}: first-step losses agree to {LOSS_RTOL:g} relative (every alignkit/TRL pair)": all(
            c["agree"] for c in checks.values()
        ),
    }
    expected = expected_step_tokens(data, a)
    extra = 4 * a.batch_size if (mode == "orpo" and a.trl_tokens == "stock") else 0  # stock ORPO: +BOS +EOS per side
    same = {n: r.step_tokens == [e + (extra if n.startswith("trl") else 0) for e in expected] for n, r in res.items()}
    token_checks = {
        n: {
            "same_ids": r.checks.get("ids_sha256") == data.ids_sha256,
            "same_learned_tokens": r.checks.get("masks_sha256") == data.masks_sha256,
        }
        for n, r in trls.items()
    }

    print(
        f"\n=== {mode}: alignkit vs TRL {versions()['trl']} {'DPOTrainer' if mode == 'dpo' else 'experimental ORPOTrainer'} ===\n"
    )
    hdr = (
        f"{'run':<25}{'pairs/s':>9}{'step min-max':>14}{'e2e pairs/s':>12}{'tokens/s':>10}{'peak RSS MiB':>13}"
        f"{'import MiB':>11}{'setup s':>9}{'process s':>10}{'loss 1':>9}{'loss 2':>9}{'last loss':>10}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for n, r in res.items():
        e2e = f"{r.end_to_end_pairs_per_second:.2f}" if r.end_to_end_pairs_per_second else "-"
        spread = f"{min(r.step_pairs_per_second):.1f}-{max(r.step_pairs_per_second):.1f}"
        setup = f"{r.setup_seconds:.1f}" if r.setup_seconds is not None else "-"
        loss2 = f"{r.losses[1]:.4f}" if len(r.losses) > 1 else "-"
        print(
            f"{n:<25}{r.pairs_per_second:>9.2f}{spread:>14}{e2e:>12}{r.tokens_per_second:>10,.0f}"
            f"{r.peak_rss_mib:>13,.0f}{'-' if floors[probe_of(n)] is None else f'{floors[probe_of(n)]:,.0f}':>11}{setup:>9}{r.process_seconds:>10.1f}"
            f"{r.losses[0]:>9.4f}{loss2:>9}{r.losses[-1]:>10.4f}"
        )
    print()
    width = max(len(k) for k in ratios) + 2
    for k, x in ratios.items():
        print(f"ratio {k:<{width}}{x:.2f}x")
    harness.print_goals(goals, 86)
    for pair, c in checks.items():
        print(
            f"check {pair}: {'AGREE' if c['agree'] else 'DIFFER'} (max |loss diff| over steps "
            f"{c['max_abs_loss_difference_per_step']:.2e})"
        )
        for k, v in c.items():
            if isinstance(v, tuple):
                x, y, d = v
                fx = "-" if x is None else f"{x:.6f}"
                fy = "-" if y is None else f"{y:.6f}"
                print(f"    {k:<64} alignkit {fx:>12}  TRL {fy:>12}  rel diff {'-' if d is None else f'{d:.1e}'}")
    print(f"check same batches (per-step non-pad tokens equal the plan): {same}")
    print(f"check TRL tokens vs alignkit's: {token_checks}")
    for n, r in res.items():
        print(f"loss {n}: {' '.join(f'{x:.3f}' for x in r.losses)}")
        for note in r.notes:
            print(f"  note {n}: {note}")
    return {
        "results": {n: asdict(r) for n, r in res.items()},
        "ratios": ratios,
        "goals": goals,
        "loss_checks": {k: {kk: list(vv) if isinstance(vv, tuple) else vv for kk, vv in c.items()} for k, c in checks.items()},
        "same_batches": same,
        "token_checks": token_checks,
        "fastest_trl": fastest,
        "leanest_trl": leanest,
    }


def report(a, res: dict[str, dict[str, PrefRunResult]], floors, data: PrefBenchData, launcher_mib: float) -> dict:
    v = versions()
    setup = {
        "model": f"llama/{a.size} (alignkit.models.init_model, seed 0), float32, sdpa attention, full fine-tuning",
        "data": f"{HH_RLHF.relative_to(REPO)}: the first {len(data.order)} usable pairs with both sides <= "
        f"max_length tokens, from its first {data.rows_scanned} rows ({data.passed_over} longer pairs passed over)",
        "steps": a.steps,
        "warmup_steps_excluded": a.warmup,
        "batch_size_pairs": a.batch_size,
        "max_length": a.max_length,
        "learning_rate": a.lr,
        "threads": a.threads,
        "repeats": a.repeats,
        "dpo": f"sigmoid, beta {a.beta}",
        "orpo": f"lambda (TRL beta) {a.orpo_lambda}, alignkit nll: {a.orpo_nll}",
        "trl_tokens": a.trl_tokens,
        "alignkit_packing": a.alignkit_packing,
        "schedule": "linear decay, no warm-up, max_grad_norm 1.0, weight decay 0, AdamW",
        "disabled_in_both": [
            "eval and checkpoints during training",
            "tensorboard / report_to",
            "mixed precision (TRL's default bf16=True set False)",
            "gradient checkpointing (TRL's default True set False)",
            "dropout",
        ],
        "differences": [
            f"batches: alignkit data.packing={a.alignkit_packing} (true = padding-free rows, its default); TRL pads "
            "each micro-batch to its longest sequence (DPO's padding_free is disabled in TRL 1.16)",
            "tokens: "
            + (
                "TRL given alignkit's tokens (DPO completion_mask stops at the last <|im_end|>; ORPO without "
                "its added BOS/EOS and without learning the '\\n')"
                if a.trl_tokens == "alignkit"
                else "TRL stock: DPO also learns the '\\n' after <|im_end|>; ORPO adds a BOS and an EOS per "
                "sequence and learns '\\n' + EOS"
            ),
            "ORPO SFT term: TRL = token mean over prompt + completion of the chosen sequences; alignkit nll: "
            + (
                "token = token mean over the chosen completion tokens"
                if a.orpo_nll == "token"
                else "sequence = per-pair mean over the chosen completion tokens, then the mean over pairs"
            ),
            "TRL DPO computes log-probs with its fused LM head (projects only completion positions) and also entropy, "
            "mean logits and top-1 accuracy every step; TRL ORPO materialises the full (2B, T, V) logits",
            "optimizer left at defaults: TRL's adamw_torch_fused, alignkit's torch.optim.AdamW (foreach)",
            "alignkit's step time includes collating the batch; TRL's headline (begin->end) does not",
            "reference pass (precompute) before step 1 in both, not timed; process wall time includes it",
            "after training alignkit saves final/ (in its peak RSS, not timed); TRL saves nothing (save_strategy=no)",
        ],
        "launcher_peak_rss_mib": launcher_mib,
        "host": harness.host(),
        "versions": v,
    }
    print(
        f"\nPreference optimisation, alignkit vs TRL {v['trl']}: llama/{a.size}, {a.batch_size} pairs per step, "
        f"max_length {a.max_length}, {a.steps} steps (first {a.warmup} not timed), lr {a.lr}, float32 CPU, "
        f"{a.threads} torch threads in every run, TRL tokens: {a.trl_tokens}"
    )
    modes = {m: mode_report(m, a, r, floors, data) for m, r in res.items()}
    print(
        "\npairs/s = pairs of the timed steps / their time. alignkit: planning + collation -> optimizer step "
        "(metrics.jsonl); TRL: on_step_begin -> on_step_end (batch already collated: TRL's best case); e2e = TRL "
        "step end to step end. setup s = alignkit's reference pass / TRL's trainer construction (tokenisation + "
        "its reference pass), both before step 1 and not timed; process s = the whole subprocess. peak RSS = the "
        "run's own process (os.wait4); import MiB = the imports alone; the launcher holds "
        f"{launcher_mib:.0f} MiB (no child can read lower)."
    )
    print(f"data: {setup['data']}.\ndifferences: {'; '.join(setup['differences'])}.")
    md = [
        f"Preference optimisation on llama/{a.size}, {a.batch_size} pairs/step, max_length {a.max_length}, "
        f"{a.steps - a.warmup} timed steps, float32 CPU, {a.threads} threads, TRL {v['trl']}, median of {a.repeats}:",
        "",
        "| run | pairs/s | peak RSS (MiB) | setup (s) | first -> last loss |",
        "|---|---:|---:|---:|---|",
    ]
    for m, r in res.items():
        for n, x in r.items():
            setup_s = f"{x.setup_seconds:.1f}" if x.setup_seconds is not None else ""
            md.append(
                f"| {n} | {x.pairs_per_second:.2f} | {x.peak_rss_mib:,.0f} | {setup_s} | "
                f"{x.losses[0]:.3f} -> {x.losses[-1]:.3f} |"
            )
        for k, x in modes[m]["ratios"].items():
            md.append(f"| {k} | **{x:.2f}x** | | | |")
    doc = {
        "benchmark": "benchmarks/dpo_vs_trl.py",
        "setup": setup,
        "import_floor_rss_mib": floors,
        "modes": modes,
        "goals": {g: ok for m in modes.values() for g, ok in m["goals"].items()},
        "markdown": "\n".join(md),
    }
    print("\nmarkdown for docs/benchmarks.md:\n\n" + doc["markdown"])
    return doc


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    p.add_argument("--modes", nargs="+", choices=sorted(RUNS), default=sorted(RUNS), help="which comparisons to run")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing (>= 1)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny", help="init_model size (medium: ~57M)")
    p.add_argument(
        "--peak-tflops", type=float, help="fp32 matmul peak for MFU (default: measured now, benchmarks/matmul_peak.py)"
    )
    p.add_argument("--max-length", type=int, default=512, help="only pairs whose both sides fit are used")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (linear decay, no warm-up)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta (sigmoid loss)")
    p.add_argument("--orpo-lambda", type=float, default=0.1, help="ORPO lambda (TRL's ORPOConfig.beta)")
    p.add_argument("--orpo-nll", choices=["token", "sequence"], default="token", help="alignkit's ORPO loss.nll")
    p.add_argument("--seed", type=int, default=42, help="training seed: alignkit's batch plan")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch threads in every run (default $OMP_NUM_THREADS or 2)",
    )
    p.add_argument(
        "--trl-tokens",
        choices=["alignkit", "stock"],
        default="alignkit",
        help="alignkit: TRL trains on alignkit's exact tokens and learned tokens; stock: TRL as shipped",
    )
    p.add_argument(
        "--alignkit-packing",
        choices=["true", "false"],
        default="true",
        help="alignkit's data.packing (true = padding-free, its default)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; the (lower) median is reported")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "dpo_vs_trl"), help="model, data, runs, logs")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "dpo_vs_trl.json"), help="JSON report")
    p.add_argument("--run-trl", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--probe-imports", choices=sorted(PROBES), help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    harness.apply_smoke(a, p, {"steps": 2, "warmup": 1, "batch_size": 2, "max_length": 128, "repeats": 1}, name="dpo_vs_trl")
    if not 1 <= a.warmup < a.steps:  # step 1 holds one-off work (first allocations; TRL ORPO's NLL measurement)
        p.error(f"--warmup must be in [1, --steps); got {a.warmup} with --steps {a.steps}")
    return a


def add_mfu(a, res: dict[str, dict[str, PrefRunResult]], data: PrefBenchData, peak: float | None) -> dict:
    """TFLOP/s and MFU of every run's timed steps, from one FLOP formula (alignkit.training.flops): the policy
    trains on both sides of each pair (6N + attention per token); runs with a reference copy add its forward
    (2N + attention); precomputed references are outside the timed steps. Prints a table; returns it."""
    from transformers import AutoConfig

    from alignkit.training.flops import shape_from_config, step_flops

    shape = shape_from_config(AutoConfig.from_pretrained(data.model_dir))
    B = a.batch_size
    out = {}
    print(
        f"\nMFU: model FLOPs of the timed steps (6N + 12·L·d·s per trained token, 2N + 4·L·d·s per reference-forward "
        f"token; N with the LM head) / timed time / fp32 matmul peak {peak or float('nan'):.4f} TFLOP/s, {a.threads} thread(s)"
    )
    for runs in res.values():
        for name, r in runs.items():
            copy = name.endswith("-copy")
            flops = 0.0
            for s in timed_window(a.steps, a.warmup):
                lens = [n for i in data.order[(s - 1) * B : s * B] for n in data.lengths[i]]
                flops += step_flops(shape, lens, forward_only=lens if copy else ())
            tflops = flops / r.timed_seconds / 1e12
            out[name] = {"tflops": tflops, "mfu": tflops / peak if peak else None, "reference_forward": copy}
            step_s = r.timed_seconds / r.timed_steps
            mfu = f"{tflops / peak:.1%}" if peak else "-"
            print(f"  {name:<25} step {step_s:6.2f}s  {r.tokens_per_second:8,.0f} tok/s  {tflops:.4f} TFLOP/s  MFU {mfu}")
    return out


def measured_peak(a) -> dict:
    """The fp32 matmul peak at the runs' thread count (``--peak-tflops``, or measured by matmul_peak.py now)."""
    return harness.measured_peak(peak_tflops=a.peak_tflops, precision="fp32", threads=a.threads, smoke=a.smoke)


def main(argv=None) -> int:
    RUN = {"alignkit": run_alignkit, "trl": run_trl}
    a = parse_args(argv)
    if harness.child_role(a, trl_child=trl_child, probes=PROBES, prepare=prepare_child):  # one of the child processes
        return 0
    work = Path(a.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = module_cmd(__spec__.name, "--prepare", "--work-dir", str(work))
    cmd += [
        f"--{k}={getattr(a, k.replace('-', '_'))}"
        for k in ("steps", "warmup", "batch-size", "max-length", "seed", "threads", "size")
    ]
    run_child(cmd, env=child_env(a.threads), log=work / "prepare.log")
    data = PrefBenchData(**json.loads((work / "data.json").read_text()))
    print(
        f"model {data.model_dir}, {len(data.order)} pairs in {data.hh_path} ({data.passed_over} over max_length "
        f"passed over): ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    plan = [(m, name, fw, variant) for m in a.modes for name, fw, variant in RUNS[m]]
    if a.smoke:
        # no -copy runs: each is its -precompute sibling with the reference pass off (alignkit ref.precompute=false,
        # TRL precompute_ref_log_probs=False), the same benchmark code
        plan = [run for run in plan if run[3] != "copy"]
    probes = sorted({probe_of(name) for _, name, _, _ in plan})
    floors = harness.import_floors(__spec__.name, probes, work=work, smoke=a.smoke, env=lambda _: child_env(a.threads))
    runs: dict[tuple[str, str], list[PrefRunResult]] = harness.run_repeats(
        [
            ((mode, name), name, lambda name=name, fw=fw, variant=variant: RUN[fw](a, work, data, name, variant))
            for mode, name, fw, variant in plan
        ],
        a.repeats,
        lambda r: f"{r.pairs_per_second:.2f} pairs/s, peak RSS {r.peak_rss_mib:,.0f} MiB, first loss {r.losses[0]:.6f}",
        smoke=a.smoke,
    )

    launcher_mib = harness.launcher_peak_rss_mib()  # the floor under every child's peak
    res: dict[str, dict[str, PrefRunResult]] = {}
    for (mode, name), rs in runs.items():
        res.setdefault(mode, {})[name] = harness.median_run(rs, "pairs_per_second", ".2f")
    peak = measured_peak(a)
    mfu = add_mfu(a, res, data, peak["peak_tflops"]["fp32"])
    doc = report(a, res, floors, data, launcher_mib)
    doc["matmul_peak"], doc["mfu"] = peak, mfu
    harness.write_report(doc, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
