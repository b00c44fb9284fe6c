"""Benchmark: alignkit SFT against TRL's ``SFTTrainer`` on CPU, same model, data and schedule.

The claims measured (stated again in the output):
  - alignkit (unpacked) trains at >= 1.3x TRL's tokens/s with no more peak memory;
  - alignkit packed (``data.packing=true``) trains at >= 1.5x alignkit unpacked tokens/s.

What is held equal: one randomly initialised model (``init_model``, built once), the same examples in the
same batches in the same order (the hh-rlhf harmless chosen replies as conversational prompt-completion
rows), max_length, batch size, optimizer steps, learning rate and schedule, float32 on CPU, the torch
thread count, no eval and no checkpoint during training. Each run is its own subprocess, so its peak RSS
(``os.wait4``) is its own.

Throughput is non-padding input tokens of the timed steps over the wall time of those steps; the first
``--warmup`` steps and all start-up (imports, model load, tokenisation) are left out.
  - alignkit: from ``metrics.jsonl`` (``log_every=1``): sum(tokens) / sum(tokens / tokens_per_second).
    Each step's time runs from collating its batch to the optimizer step (the per-step logging is out).
  - TRL: a ``TrainerCallback`` stamps ``on_step_begin``/``on_step_end``; tokens per step are TRL's own
    count (``SFTTrainer._total_train_tokens``: attention_mask.sum(), or the flattened length when
    padding-free), checked against the lengths of the examples of each batch. The headline uses the sum
    of begin->end times, which leaves out fetching and collating the batch (TRL's best case); the
    end-to-end time (step end to step end, collation and logging included) is reported beside it.

On a GPU (``--device cuda``): both frameworks train on it, ``--precision`` bf16 by default (bf16 autocast over fp32
weights in both: alignkit ``train.mixed_precision=bf16``, TRL ``bf16=True``), each step's timing synchronises the GPU
(TRL's callback; alignkit's step ends in ``.item()`` reads), and the peak memory is the run's
``torch.cuda.max_memory_allocated`` instead of its RSS; MFU is against the GPU's matmul peak in that precision.

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.sft_vs_trl [--steps N --batch-size B
      --max-length L --size tiny|small|medium --threads T --repeats R --device cpu|cuda --precision fp32|bf16 --out PATH]
      [--smoke: 2 tiny steps, one repeat, no import probes and no alignkit-packed run, the runs two at a time,
      output in a temporary folder: a check that it runs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import HH_RLHF, REPO, child_env, module_cmd, ratio, run_child, timed_window, versions

GOAL_TOKENS_RATIO = 1.3  # alignkit unpacked / TRL padded, tokens/s
GOAL_MEMORY_RATIO = 1.0  # alignkit unpacked / TRL padded, peak RSS (at most)
GOAL_PACKED_RATIO = 1.5  # alignkit packed / alignkit unpacked, tokens/s


@dataclass
class RunResult:
    """One framework/mode run, as measured."""

    name: str  # e.g. "alignkit", "alignkit-packed", "trl", "trl-padding-free"
    tokens_per_second: float  # timed tokens / timed seconds (the headline figure)
    timed_steps: int
    timed_tokens: int
    timed_seconds: float
    peak_rss_mib: float  # the subprocess's peak resident set size (os.wait4 ru_maxrss)
    losses: list[float]  # (steps,) per-step training loss
    step_tokens: list[int]  # (steps,) non-padding input tokens per step
    step_loss_tokens: list[int] | None  # (steps,) tokens carrying a loss per step, when known
    step_tokens_per_second: list[float]  # (timed_steps,) each timed step's own tokens/s: the spread shows noise
    process_seconds: float  # wall time of the whole subprocess (start-up included)
    end_to_end_tokens_per_second: float | None = None  # TRL: step end -> step end, collation and logging in
    threads: int | None = None  # torch.get_num_threads() in the child, when it reports it
    tflops: float | None = None  # model FLOPs of the timed steps (alignkit.training.flops) / timed seconds / 1e12
    mfu: float | None = None  # tflops / the measured matmul peak at the same thread count
    peak_cuda_memory_mib: float | None = None  # --device cuda: the run's torch.cuda.max_memory_allocated
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ data


@dataclass
class BenchData:
    path: Path  # JSONL of conversational prompt-completion rows, in file order
    order: list[int]  # alignkit's epoch-0 order of the rows: step k trains on order[k*B:(k+1)*B]
    lengths: list[int]  # (rows,) token length of each row after truncation (alignkit's tokenisation)
    truncated: int  # rows cut to max_length


def prepare_data(model_dir: Path, out: Path, *, n_rows: int, max_length: int, seed: int) -> BenchData:
    """Write the first ``n_rows`` usable hh-rlhf chosen replies as TRL-style conversational rows.

    A row is usable when alignkit's tokenisation keeps it at ``max_length`` (a prompt so long that
    truncation leaves no completion token is dropped by both frameworks; leaving it out here keeps the
    two example lists identical).
    """
    from alignkit.data.formats import load_examples
    from alignkit.data.tokenize import ensure_chat_template, tokenize_example
    from alignkit.models.loading import load_tokenizer
    from alignkit.training.batching import epoch_order

    tokenizer = load_tokenizer(str(model_dir))
    ensure_chat_template(tokenizer)
    loaded = load_examples(str(HH_RLHF), fmt="hh_rlhf", on_error="skip")
    rows, lengths, truncated = [], [], 0
    for ex in loaded.examples:
        tok = tokenize_example(ex, tokenizer, max_length=max_length)
        if tok is None:
            continue
        untruncated = tokenize_example(ex, tokenizer, max_length=10**9)
        rows.append(
            {
                "prompt": [{"role": m.role, "content": m.content} for m in ex.prompt],
                "completion": [{"role": "assistant", "content": ex.completion}],
            }
        )
        lengths.append(len(tok.input_ids))
        truncated += len(untruncated.input_ids) > max_length
        if len(rows) == n_rows:
            break
    if len(rows) < n_rows:
        raise SystemExit(f"only {len(rows)} usable rows in {HH_RLHF} at max_length={max_length}, need steps x batch = {n_rows}")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return BenchData(path=out, order=epoch_order(n_rows, seed, epoch=0), lengths=lengths, truncated=truncated)


def expected_step_tokens(data: BenchData, steps: int, batch_size: int) -> list[int]:
    """(steps,) non-padding tokens each step must see, from the example lengths and the order."""
    return [sum(data.lengths[i] for i in data.order[k * batch_size : (k + 1) * batch_size]) for k in range(steps)]


# ------------------------------------------------------------------------------------------ alignkit


def alignkit_config(a: argparse.Namespace, model_dir: Path, data_path: Path) -> dict:
    """The SFT config both alignkit runs share (packing is an override)."""
    return {
        "output_dir": "unset",  # set per run on the command line
        "resume": "never",
        "tensorboard": False,  # TRL gets report_to="none"
        "model": {"name_or_path": str(model_dir), "finetune": "full", "dtype": "float32", "attn_implementation": "sdpa"},
        "data": {
            "train": str(data_path),
            "format": "prompt_completion",
            "max_length": a.max_length,
            "overlong": "truncate",
            "val_size": 0,
            "packing": False,
            "on_error": "raise",
        },
        "train": {
            "seed": a.seed,
            "max_steps": a.steps,
            "batch_size": a.batch_size,
            "grad_accum": 1,
            "learning_rate": a.lr,
            "weight_decay": 0.0,
            "lr_scheduler": "cosine",
            "warmup_steps": 0,
            "max_grad_norm": 1.0,
            "mixed_precision": "bf16" if a.precision == "bf16" else "no",
            "log_every": 1,
            "eval_every": None,
            "save_every": None,
        },
    }


def run_alignkit(a, name: str, cfg_path: Path, work: Path, *, packing: bool) -> RunResult:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "alignkit", "sft", str(cfg_path), f"output_dir={out}", f"data.packing={str(packing).lower()}"]
    rss, wall = run_child(cmd, env=child_env(a.threads, a.device), log=work / f"{name}.log")
    summary = json.loads((out / "summary.json").read_text())
    if a.device == "cuda" and not str(summary.get("device", "")).startswith("cuda"):
        raise SystemExit(f"{name}: --device cuda, but alignkit ran on {summary.get('device')}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "tokens_per_second" in r]
    by_step = {r["step"]: r for r in rows}
    if sorted(by_step) != list(range(1, a.steps + 1)):
        raise SystemExit(f"{out}/metrics.jsonl: expected steps 1..{a.steps}, got {sorted(by_step)}")
    timed = [by_step[s] for s in timed_window(a.steps, a.warmup)]
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["tokens"] / r["tokens_per_second"] for r in timed)
    return RunResult(
        name=name,
        tokens_per_second=tokens / seconds,
        timed_steps=len(timed),
        timed_tokens=tokens,
        timed_seconds=seconds,
        peak_rss_mib=rss,
        losses=[by_step[s]["loss"] for s in range(1, a.steps + 1)],
        step_tokens=[by_step[s]["tokens"] for s in range(1, a.steps + 1)],
        step_loss_tokens=[by_step[s]["loss_tokens"] for s in range(1, a.steps + 1)],
        step_tokens_per_second=[r["tokens_per_second"] for r in timed],
        process_seconds=wall,
        peak_cuda_memory_mib=summary.get("peak_cuda_memory_mib"),
    )


# ------------------------------------------------------------------------------------------ TRL


def _trl_pretokenize(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """TRL's own tokenisation of conversational prompt-completion rows, truncated (keep_start).

    Padding-free TRL refuses ``max_length`` without packing ("provide already truncated inputs"), so the
    padding-free run gets rows tokenised here the way ``SFTTrainer._prepare_dataset`` does it
    (``trl.data_utils._tokenize`` + ``common_prefix_length``); the lengths are checked against the
    padded run's expected lengths afterwards.
    """
    from trl.data_utils import _tokenize, common_prefix_length

    out = []
    for row in rows:
        prompt_ids = _tokenize(tokenizer, row["prompt"], add_generation_prompt=True)["input_ids"]
        ids = _tokenize(tokenizer, row["prompt"] + row["completion"])["input_ids"]
        n = common_prefix_length(prompt_ids, ids)
        mask = [0] * n + [1] * (len(ids) - n)
        out.append({"input_ids": ids[:max_length], "completion_mask": mask[:max_length]})
    return out


def trl_child(spec_path: str) -> None:
    """``--run-trl SPEC``: one TRL SFTTrainer run in this process; writes a JSON result file."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    cuda = spec.get("device", "cpu") == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)  # a step's kernels finish inside its timing
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    padding_free = spec["mode"] == "padding_free"
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line.strip()]
    rows = [rows[i] for i in spec["order"]]  # alignkit's batch order; read sequentially below
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    if padding_free:
        dataset = Dataset.from_list(_trl_pretokenize(rows, tokenizer, spec["max_length"]))
    else:
        dataset = Dataset.from_list(rows)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")

    class StepClock(TrainerCallback):
        """Per-step timestamps, TRL's own token count per step, and the logged loss."""

        def __init__(self):
            self.trainer = None
            self.begin: dict[int, float] = {}
            self.end: dict[int, float] = {}
            self.tokens: dict[int, int] = {}
            self.loss: dict[int, float] = {}
            self._seen = 0

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.begin[state.global_step + 1] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.end[state.global_step] = time.perf_counter()
            total = int(self.trainer._total_train_tokens)  # attention_mask.sum() / flattened length, per batch
            self.tokens[state.global_step] = total - self._seen
            self._seen = total

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss[state.global_step] = float(logs["loss"])

    clock = StepClock()
    config = SFTConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=spec["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        max_length=None if padding_free else spec["max_length"],  # padding-free rows come truncated
        padding_free=padding_free,
        packing=False,
        completion_only_loss=True,
        # --precision as alignkit runs it (fp32, or bf16 autocast over fp32 weights: alignkit mixed_precision=bf16),
        # no activation recomputation (TRL defaults to bf16 and gradient checkpointing; alignkit's defaults are
        # mixed_precision=no, gradient_checkpointing=false)
        bf16=spec.get("precision", "fp32") == "bf16",
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not cuda,
        # alignkit's order, read in sequence (TRL would otherwise shuffle with its own generator)
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        dataset_num_proc=None,
        logging_steps=1,  # alignkit logs every step too (log_every=1)
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    clock.trainer = trainer
    prepared = trainer.train_dataset
    lengths = [len(ids) for ids in prepared["input_ids"]]
    loss_tokens = [sum(lbl != -100 for lbl in labels[1:]) for labels in prepared["labels"]]
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    import resource

    result = {
        "begin": clock.begin,
        "end": clock.end,
        "tokens": clock.tokens,
        "loss": clock.loss,
        "lengths": lengths,
        "loss_tokens": loss_tokens,
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "optim": str(getattr(config.optim, "value", config.optim)),
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": str(trainer.accelerator.device),
        "peak_cuda_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    Path(spec["result"]).write_text(json.dumps(result))


def run_trl(a, name: str, work: Path, model_dir: Path, data: BenchData, *, mode: str) -> RunResult:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {
        "mode": mode,
        "model": str(model_dir),
        "data": str(data.path),
        "order": data.order,
        "output_dir": str(out / "trainer"),
        "result": str(out / "result.json"),
        "steps": a.steps,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "lr": a.lr,
        "seed": a.seed,
        "threads": a.threads,
        "device": a.device,
        "precision": a.precision,
    }
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = module_cmd(__spec__.name, "--run-trl", str(spec_path))
    rss, wall = run_child(cmd, env=child_env(a.threads, a.device), log=work / f"{name}.log")
    res = json.loads((out / "result.json").read_text())
    if a.device == "cuda" and not res["device"].startswith("cuda"):
        raise SystemExit(f"{name}: --device cuda, but TRL ran on {res['device']}")
    begin = {int(k): v for k, v in res["begin"].items()}
    end = {int(k): v for k, v in res["end"].items()}
    tokens = {int(k): v for k, v in res["tokens"].items()}
    loss = {int(k): v for k, v in res["loss"].items()}
    steps = list(range(1, a.steps + 1))
    if sorted(end) != steps or sorted(loss) != steps:
        raise SystemExit(f"{name}: expected steps 1..{a.steps}, got ends {sorted(end)} and losses {sorted(loss)}")
    window = list(timed_window(a.steps, a.warmup))
    n_tokens = sum(tokens[s] for s in window)
    seconds = sum(end[s] - begin[s] for s in window)
    e2e_seconds = end[a.steps] - end[a.warmup]
    notes = []
    if res["lengths"] != [data.lengths[i] for i in data.order]:
        notes.append("TRL's tokenised lengths differ from alignkit's for some examples")
    per_example_loss = res["loss_tokens"]
    step_loss_tokens = [sum(per_example_loss[k * a.batch_size : (k + 1) * a.batch_size]) for k in range(a.steps)]
    return RunResult(
        name=name,
        tokens_per_second=n_tokens / seconds,
        timed_steps=len(window),
        timed_tokens=n_tokens,
        timed_seconds=seconds,
        peak_rss_mib=rss,
        losses=[loss[s] for s in steps],
        step_tokens=[tokens[s] for s in steps],
        step_loss_tokens=step_loss_tokens,
        step_tokens_per_second=[tokens[s] / (end[s] - begin[s]) for s in window],
        process_seconds=wall,
        end_to_end_tokens_per_second=n_tokens / e2e_seconds,
        threads=res["threads"],
        peak_cuda_memory_mib=res.get("peak_cuda_memory_mib"),
        notes=notes + [f"optim={res['optim']}"],
    )


# ------------------------------------------------------------------------------------------ import baseline

PROBES = {
    # What each framework's run imports before it loads anything (memory floor, no model, no data).
    "alignkit": [
        "alignkit.cli",
        "alignkit.config.sft",
        "alignkit.algorithms.sft",
        "accelerate",
        "alignkit.models.loading",
        "alignkit.data.formats",
        "alignkit.data.tokenize",
        "alignkit.data.collate",
        "transformers.models.llama.modeling_llama",
    ],
    "trl": ["datasets", "transformers", "trl", "trl.trainer.sft_trainer", "transformers.models.llama.modeling_llama"],
}


# ------------------------------------------------------------------------------------------ report


def timed_flops(model_dir: Path, data: BenchData, a) -> float:
    """Model FLOPs of the timed steps (6N + attention per trained token, alignkit.training.flops), the same for
    every framework: each trains on the same rows in the same batches (checked by same_batches)."""
    from transformers import AutoConfig

    from alignkit.training.flops import shape_from_config, train_flops

    shape = shape_from_config(AutoConfig.from_pretrained(model_dir))
    B = a.batch_size
    return sum(
        train_flops(shape, [data.lengths[i] for i in data.order[(s - 1) * B : s * B]]) for s in timed_window(a.steps, a.warmup)
    )


def add_mfu(results: dict[str, RunResult], flops: float, peak: float | None) -> None:
    for r in results.values():
        r.tflops = flops / r.timed_seconds / 1e12
        r.mfu = r.tflops / peak if peak else None


def report(a, results: dict[str, RunResult], floors: dict[str, float], data: BenchData, peak: dict | None = None) -> dict:
    ak, akp, trl = results["alignkit"], results.get("alignkit-packed"), results["trl"]  # --smoke: no packed run
    trl_pf = results.get("trl-padding-free")
    expected = expected_step_tokens(data, a.steps, a.batch_size)
    # on a GPU the memory that matters is the device's: torch's peak allocation, not the process's RSS
    mem, mem_key = (
        ("CUDA memory", "alignkit_over_trl_peak_cuda_memory") if a.device == "cuda" else ("RSS", "alignkit_over_trl_peak_rss")
    )
    precision = "float32" if a.precision == "fp32" else "bf16 autocast over float32 weights"
    same_batches = {name: r.step_tokens == expected for name, r in results.items()}
    ratios = {
        "alignkit_over_trl_tokens_per_second": ratio(ak.tokens_per_second, trl.tokens_per_second),
        "alignkit_over_trl_end_to_end_tokens_per_second": ratio(ak.tokens_per_second, trl.end_to_end_tokens_per_second),
        "alignkit_over_trl_peak_rss": ratio(ak.peak_rss_mib, trl.peak_rss_mib),
        "alignkit_over_trl_peak_cuda_memory": ratio(ak.peak_cuda_memory_mib, trl.peak_cuda_memory_mib),
        "alignkit_packed_over_unpacked_tokens_per_second": ratio(akp.tokens_per_second if akp else None, ak.tokens_per_second),
        "alignkit_packed_over_trl_padding_free_tokens_per_second": ratio(
            akp.tokens_per_second if akp else None, trl_pf.tokens_per_second if trl_pf else None
        ),
    }
    goals = {
        f"alignkit >= {GOAL_TOKENS_RATIO}x TRL tokens/s": harness.meets(
            ratios["alignkit_over_trl_tokens_per_second"], GOAL_TOKENS_RATIO, at_least=True
        ),
        f"alignkit peak {mem} <= {GOAL_MEMORY_RATIO}x TRL": harness.meets(ratios[mem_key], GOAL_MEMORY_RATIO, at_least=False),
        f"alignkit packed >= {GOAL_PACKED_RATIO}x alignkit unpacked tokens/s": harness.meets(
            ratios["alignkit_packed_over_unpacked_tokens_per_second"], GOAL_PACKED_RATIO, at_least=True
        ),
    }
    setup = {
        "model": f"llama/{a.size} (alignkit.models.init_model, seed 0), {precision}, sdpa attention, full fine-tuning",
        "device": a.device,
        "precision": a.precision,
        "data": f"{HH_RLHF.relative_to(REPO)}: first {a.steps * a.batch_size} usable chosen replies as conversational "
        f"prompt-completion rows ({data.truncated} truncated at max_length), alignkit's epoch-0 order for both",
        "steps": a.steps,
        "warmup_steps_excluded": a.warmup,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "learning_rate": a.lr,
        "schedule": "cosine, no warm-up, max_grad_norm 1.0, weight decay 0, AdamW",
        "threads": a.threads,
        "repeats": a.repeats,
        "disabled_in_both": [
            "eval and checkpoints during training",
            "tensorboard (alignkit tensorboard=false) / reporting (TRL report_to=none)",
            "gradient checkpointing (alignkit default false; TRL default True, set False)",
        ],
        "same_batches": "TRL reads the rows in alignkit's epoch-0 order in sequence (train_sampling_strategy="
        "'sequential'), so both train on the same examples in the same batches",
        "precision_in_both": (
            "fp32 (alignkit mixed_precision=no; TRL bf16=False, its default would be True)"
            if a.precision == "fp32"
            else "bf16 autocast over fp32 weights in both (alignkit mixed_precision=bf16; TRL bf16=True)"
        ),
        "left_at_defaults": [
            "optimizer: TRL's adamw_torch_fused, alignkit's torch.optim.AdamW",
            "TRL's fused LM head also computes entropy and token accuracy every step (not optional in TRL)",
            "TRL learns the '\\n' after <|im_end|> (one more loss token per example); alignkit does not",
        ],
        "host": harness.host(),
        "versions": versions(),
    }
    doc = {
        "benchmark": "benchmarks/sft_vs_trl.py",
        "setup": setup,
        "results": {name: asdict(r) for name, r in results.items()},
        "import_floor_rss_mib": floors,
        "ratios": ratios,
        "goals": goals,
        "same_batches_as_planned": same_batches,
        "matmul_peak": peak,
    }

    # --- print ------------------------------------------------------------------------------------
    print()
    print(
        f"SFT throughput, alignkit vs TRL {versions()['trl']}: llama/{a.size}, batch {a.batch_size}, max_length "
        f"{a.max_length}, {a.steps} steps (first {a.warmup} not timed), lr {a.lr}, {precision} on {a.device.upper()}, "
        f"torch threads = {a.threads} in every run (OMP_NUM_THREADS and torch.set_num_threads)"
    )
    print(f"disabled in both: {'; '.join(setup['disabled_in_both'])}; precision: {setup['precision_in_both']}")
    print()
    head = (
        f"{'framework / mode':<22}{'tokens/s':>11}{'step min-max':>16}{'e2e tok/s':>11}{'peak ' + ('CUDA' if a.device == 'cuda' else 'RSS') + ' MiB':>14}"
        f"{'import MiB':>12}{'first loss':>12}{'last loss':>11}{'loss tok/step':>15}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        floor = floors.get(name.split("-")[0])
        e2e = f"{r.end_to_end_tokens_per_second:,.0f}" if r.end_to_end_tokens_per_second else "-"
        lt = f"{statistics.mean(r.step_loss_tokens):,.0f}" if r.step_loss_tokens else "-"
        spread = f"{min(r.step_tokens_per_second):,.0f}-{max(r.step_tokens_per_second):,.0f}"
        peak_mib = r.peak_cuda_memory_mib if a.device == "cuda" else r.peak_rss_mib
        print(
            f"{name:<22}{r.tokens_per_second:>11,.0f}{spread:>16}{e2e:>11}{peak_mib or float('nan'):>14,.0f}"
            f"{(f'{floor:,.0f}' if floor else '-'):>12}{r.losses[0]:>12.4f}{r.losses[-1]:>11.4f}{lt:>15}"
        )
    print()
    peak_tf = (peak or {}).get("peak_tflops", {}).get(a.precision)
    print(
        f"MFU: model FLOPs (6N + 12·L·d·s per token, N with the LM head; alignkit.training.flops) of the timed steps "
        f"/ timed time / {a.precision} matmul peak {peak_tf or float('nan'):.4f} TFLOP/s on {(peak or {}).get('device_name', a.device)}"
        f"{f' at {a.threads} thread(s)' if a.device == 'cpu' else ''}"
    )
    for name, r in results.items():
        step_s = r.timed_seconds / r.timed_steps
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "-"
        print(f"  {name:<20} step {step_s:6.2f}s  {r.tokens_per_second:8,.0f} tok/s  {r.tflops:.4f} TFLOP/s  MFU {mfu}")
    print()
    for key, value in ratios.items():
        print(f"{key:<58}{'-' if value is None else f'{value:.2f}x'}")
    print()
    harness.print_goals(goals, 55)
    print()
    print(
        "same batches (per-step non-pad tokens equal the plan):",
        ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same_batches.items()),
    )
    for name, r in results.items():
        decreasing = r.losses[-1] < r.losses[0]
        print(f"loss {name}: {' '.join(f'{x:.3f}' for x in r.losses)}  ({'decreasing' if decreasing else 'NOT decreasing'})")
        for note in r.notes:
            print(f"  note {name}: {note}")
    print()
    print(
        "tokens/s = non-pad input tokens of the timed steps / their time. alignkit's step time runs from collation to "
        "the optimizer step (metrics.jsonl); TRL's from on_step_begin to on_step_end (batch already collated: "
        "TRL's best case); e2e = TRL step end to step end (collation and logging in). step min-max = the spread "
        "of single timed steps (noise)."
    )
    print(
        "peak RSS = the run's own process (os.wait4), libraries included; import MiB = RSS after importing the framework alone."
        + (" peak CUDA = the run's torch.cuda.max_memory_allocated (the memory goal uses it)." if a.device == "cuda" else "")
    )
    print(f"same data: {setup['same_batches']}.")
    print(f"left at each framework's default: {'; '.join(setup['left_at_defaults'])}.")
    return doc


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step")
    p.add_argument("--max-length", type=int, default=512, help="truncate examples to this many tokens")
    p.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny", help="init_model size (medium: ~57M)")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: GPUs hidden from every run; cuda: every run trains on the GPU, peak CUDA memory reported",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=None,
        help="fp32, or bf16 autocast over fp32 weights in both frameworks (default: fp32 on cpu, bf16 on cuda)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="matmul peak in --precision for MFU (default: measured now, benchmarks/matmul_peak.py)",
    )
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay, no warm-up)")
    p.add_argument("--seed", type=int, default=42, help="training seed (alignkit's data order comes from it)")
    default_threads = int(os.environ.get("OMP_NUM_THREADS", "2") or 2)
    p.add_argument(
        "--threads", type=int, default=default_threads, help="torch threads in every run (default $OMP_NUM_THREADS or 2)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="runs of each framework/mode, interleaved; the (lower) median is reported"
    )
    p.add_argument("--no-trl-padding-free", action="store_true", help="skip the TRL padding-free run")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "sft_vs_trl"), help="model, data, run dirs, logs")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "sft_vs_trl.json"), help="JSON report")
    p.add_argument("--run-trl", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--probe-imports", choices=sorted(PROBES), help=argparse.SUPPRESS)
    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    harness.apply_smoke(
        a, p, {"steps": 2, "warmup": 1, "batch_size": 2, "max_length": 64, "repeats": 1, "lr": 1e-3}, name="sft_vs_trl"
    )
    if not 0 <= a.warmup < a.steps:
        p.error(f"--warmup must be in [0, --steps); got {a.warmup} with --steps {a.steps}")
    a.precision = a.precision or ("bf16" if a.device == "cuda" else "fp32")
    return a


def measured_peak(a) -> dict:
    """The matmul peak in ``--precision`` on ``--device`` (at the runs' thread count on CPU): ``--peak-tflops``, or
    measured by matmul_peak.py now."""
    return harness.measured_peak(
        peak_tflops=a.peak_tflops, precision=a.precision, threads=a.threads, device=a.device, smoke=a.smoke
    )


def main(argv=None) -> int:
    a = parse_args(argv)
    if harness.child_role(a, trl_child=trl_child, probes=PROBES):  # one of the child processes
        return 0

    os.environ.update({k: v for k, v in child_env(a.threads).items() if k != "PYTHONPATH"})
    import torch
    import yaml

    torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("sft_vs_trl: --device cuda, but torch sees no CUDA GPU here (use --device cpu)", file=sys.stderr)
        return 2
    work = Path(a.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.init_model import init_model

    quiet_libraries()
    t0 = time.perf_counter()
    model_dir = init_model("llama", a.size, [str(HH_RLHF)], str(work / f"model-{a.size}"), seed=0, overwrite=True)
    data = prepare_data(model_dir, work / "data.jsonl", n_rows=a.steps * a.batch_size, max_length=a.max_length, seed=a.seed)
    cfg_path = work / "alignkit.yaml"
    cfg_path.write_text(yaml.safe_dump(alignkit_config(a, model_dir, data.path), sort_keys=False))
    print(
        f"model {model_dir}, data {data.path} ({a.steps * a.batch_size} rows): ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    # --smoke: no import probes (they only add a memory figure) and no alignkit-packed run (the alignkit run again
    # with data.packing=true: the same benchmark code); TRL runs both ways (padding-free has its own tokenisation)
    env = child_env(a.threads, a.device)
    floors = harness.import_floors(__spec__.name, PROBES, work=work, smoke=a.smoke, env=lambda _: env)
    plan = [
        ("alignkit", "alignkit", lambda: run_alignkit(a, "alignkit", cfg_path, work, packing=False)),
        ("alignkit-packed", "alignkit-packed", lambda: run_alignkit(a, "alignkit-packed", cfg_path, work, packing=True)),
        ("trl", "trl", lambda: run_trl(a, "trl", work, model_dir, data, mode="padded")),
    ]
    if a.smoke:
        plan = [run for run in plan if run[0] != "alignkit-packed"]
    if not a.no_trl_padding_free:
        plan.append(
            (
                "trl-padding-free",
                "trl-padding-free",
                lambda: run_trl(a, "trl-padding-free", work, model_dir, data, mode="padding_free"),
            )
        )
    runs: dict[str, list[RunResult]] = harness.run_repeats(
        plan,
        a.repeats,
        lambda r: (
            f"{r.tokens_per_second:,.0f} tokens/s, peak RSS {r.peak_rss_mib:,.0f} MiB"
            + (f", peak CUDA {r.peak_cuda_memory_mib:,.0f} MiB" if r.peak_cuda_memory_mib is not None else "")
        ),
        smoke=a.smoke,
    )

    results = {name: harness.median_run(rs, "tokens_per_second", ",.0f") for name, rs in runs.items()}
    peak = measured_peak(a)
    add_mfu(results, timed_flops(model_dir, data, a), peak["peak_tflops"][a.precision])
    doc = report(a, results, floors, data, peak)
    harness.write_report(doc, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
