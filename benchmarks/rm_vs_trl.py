"""Benchmark: alignkit's reward-model stage against TRL's ``RewardTrainer`` on CPU, same model, pairs and schedule.

The claim measured (stated again in the output): alignkit trains at >= 1.3x TRL's pairs/s with no more peak memory.

What is held equal: one randomly initialised decoder (``init_model``, built once) with a one-label
``*ForSequenceClassification`` head drawn from the same seed in both (the per-step losses agree: checked),
the same preference pairs in the same batches in the same order (hh-rlhf harmless, alignkit's plan from
``step_micro_batches``; TRL reads them in sequence), the same token ids (ChatML chat template, checked),
batch size, optimizer steps, learning rate and linear schedule, gradient clipping, no weight decay, the mean
Bradley-Terry loss with no margin or centering, float32 on CPU, dropout off, no gradient checkpointing, the
torch thread count, no eval, checkpoints or tensorboard while training. Each run is its own subprocess, so
its peak RSS (``os.wait4``) is its own.

Truncation differs between the two (alignkit cuts long pairs from the left, TRL drops them), so only pairs
whose both sides fit in ``--max-length`` are used: neither framework truncates or drops anything.

Throughput is pairs of the timed steps over the wall time of those steps; the first ``--warmup`` steps
and all start-up (imports, model load, tokenisation) are left out.
  - alignkit: ``metrics.jsonl`` (``log_every=1``): timed pairs / sum(batch / pairs_per_second). Each step's
    time runs from planning and collating its batch to the optimizer step (per-step logging is out).
  - TRL: a ``TrainerCallback`` stamps ``on_step_begin``/``on_step_end``. The headline sums begin->end,
    which leaves out fetching and collating the batch (TRL's best case); the end-to-end time (step end to
    step end, collation and logging included) is reported beside it.

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.rm_vs_trl [--steps N --warmup W --batch-size B
      --max-length L --threads T --repeats R --out PATH] [--smoke: 2 tiny steps, one repeat, no import
      probes, both runs at once, a temporary folder]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import HH_RLHF, REPO, child_env, module_cmd, run_child, timed_window, versions
from benchmarks.pairs import BenchData, RunResult, expected_step_tokens, ids_digest, prepare_data

GOAL_PAIRS_RATIO = 1.3  # alignkit / TRL, pairs/s (at least)
GOAL_MEMORY_RATIO = 1.0  # alignkit / TRL, peak RSS (at most)


# ------------------------------------------------------------------------------------------ data


def prepare_child(a: argparse.Namespace) -> None:
    """``--prepare``: build the model and the pairs; writes ``work/data.json``.

    Done in a child so that the launcher stays small: on Linux a child's ``ru_maxrss`` starts at the RSS its
    parent had when it was spawned, so a large launcher would put a floor under every measured peak.
    """
    import torch

    torch.set_num_threads(a.threads)
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.init_model import init_model

    quiet_libraries()
    work = Path(a.work_dir).resolve()
    model_dir = init_model("llama", "tiny", [str(HH_RLHF)], str(work / "model-tiny"), seed=0, overwrite=True)
    (work / "data.json").write_text(json.dumps(asdict(prepare_data(model_dir, work, a))))


# ------------------------------------------------------------------------------------------ alignkit


def run_alignkit(a, work: Path, data: BenchData) -> RunResult:
    import yaml

    out = work / "alignkit"
    shutil.rmtree(out, ignore_errors=True)
    cfg = {
        "output_dir": str(out),
        "resume": "never",
        "tensorboard": False,
        "stats_rows": 1,  # the post-training reward statistics pass: one pair (it is after the timed steps anyway)
        "model": {
            "name_or_path": data.model_dir,
            "finetune": "full",
            "dtype": "float32",
            "gradient_checkpointing": False,
            "disable_dropout": True,
        },
        "data": {
            "train": str(data.hh_path),
            "format": "hh_rlhf",
            "max_length": a.max_length,
            "eval_fraction": 0.0,
            "on_error": "skip",
            "max_rows": a.steps * a.batch_size,
            "packing": {"auto": "auto", "true": True, "false": False}[a.alignkit_packing],
        },
        "loss": {"margin": True, "label_smoothing": 0.0, "center_coef": 0.0},  # hh-rlhf has no margins
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
    cfg_path = work / "alignkit.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rss, wall = run_child(
        [sys.executable, "-m", "alignkit", "rm", str(cfg_path)], env=child_env(a.threads), log=work / "alignkit.log"
    )
    stats = json.loads((out / "summary.json").read_text())["data"]
    if (stats["pairs"], stats["skipped"], stats["truncated"]) != (a.steps * a.batch_size, 0, 0):
        raise SystemExit(f"alignkit loaded {stats}; expected {a.steps * a.batch_size} pairs, none skipped or truncated")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows if "pairs_per_second" in r}
    if sorted(by_step) != list(range(1, a.steps + 1)):
        raise SystemExit(f"{out}/metrics.jsonl: expected steps 1..{a.steps}, got {sorted(by_step)}")
    secs = {s: a.batch_size / r["pairs_per_second"] for s, r in by_step.items()}  # the step's dt
    window = list(timed_window(a.steps, a.warmup))
    seconds = sum(secs[s] for s in window)
    return RunResult(
        "alignkit",
        len(window) * a.batch_size / seconds,
        sum(by_step[s]["tokens_per_second"] * secs[s] for s in window) / seconds,
        len(window),
        seconds,
        rss,
        losses=[by_step[s]["loss"] for s in sorted(by_step)],
        step_tokens=[round(by_step[s]["tokens_per_second"] * secs[s]) for s in sorted(by_step)],  # tokens = rate x dt
        step_pairs_per_second=[by_step[s]["pairs_per_second"] for s in window],
        process_seconds=wall,
    )


# ------------------------------------------------------------------------------------------ TRL


def trl_child(spec_path: str) -> None:
    """``--run-trl SPEC``: one TRL RewardTrainer run in this process; writes a JSON result file."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])  # has <|pad|> and a ChatML template, as alignkit uses
    torch.manual_seed(spec["seed"])  # the new score head is drawn as alignkit draws it (fork_rng + manual_seed)
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.trainer, self.begin, self.end, self.tokens, self.loss, self._seen = None, {}, {}, {}, {}, 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin[state.global_step + 1] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end[state.global_step] = time.perf_counter()
            total = int(self.trainer._total_train_tokens)  # attention_mask.sum() of each batch (both sides)
            self.tokens[state.global_step], self._seen = total - self._seen, total

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss[state.global_step] = float(logs["loss"])

    clock = StepClock()
    config = RewardConfig(
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
        max_length=spec["max_length"],  # TRL drops longer pairs; every pair here fits, so none is dropped
        center_rewards_coefficient=None,
        disable_dropout=True,
        # float32, no activation recomputation, as alignkit runs (TRL's defaults: bf16=True, gradient_checkpointing=True)
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
    trainer = RewardTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(spec["rows"]), processing_class=tokenizer, callbacks=[clock]
    )
    clock.trainer = trainer
    ds = trainer.train_dataset
    digest = ids_digest([[list(c), list(r)] for c, r in zip(ds["chosen_ids"], ds["rejected_ids"])])
    trainer.train()
    recompute = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    assert not trainer.args.bf16 and not recompute, "TRL ran in bf16 or with gradient checkpointing"
    result = {
        "begin": clock.begin,
        "end": clock.end,
        "tokens": clock.tokens,
        "loss": clock.loss,
        "rows": len(ds),
        "ids_sha256": digest,
        "threads": torch.get_num_threads(),
        "optim": str(getattr(config.optim, "value", config.optim)),
    }
    Path(spec["result"]).write_text(json.dumps(result))


def run_trl(a, work: Path, data: BenchData) -> RunResult:
    out = work / "trl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {
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
    }
    (out / "spec.json").write_text(json.dumps(spec))
    cmd = module_cmd(__spec__.name, "--run-trl", str(out / "spec.json"))
    rss, wall = run_child(cmd, env=child_env(a.threads), log=work / "trl.log")
    res = json.loads((out / "result.json").read_text())
    begin, end, tokens, loss = ({int(k): v for k, v in res[key].items()} for key in ("begin", "end", "tokens", "loss"))
    steps = list(range(1, a.steps + 1))
    if sorted(end) != steps or sorted(loss) != steps:
        raise SystemExit(f"trl: expected steps 1..{a.steps}, got ends {sorted(end)} and losses {sorted(loss)}")
    window = list(timed_window(a.steps, a.warmup))
    seconds = sum(end[s] - begin[s] for s in window)
    notes = [f"optim={res['optim']}", f"torch threads {res['threads']}"]
    if res["rows"] != len(data.trl_rows):
        notes.append(f"TRL kept {res['rows']} of {len(data.trl_rows)} pairs (max_length filter)")
    if res["ids_sha256"] != data.ids_sha256:
        notes.append("TRL's token ids differ from alignkit's for some pairs")
    return RunResult(
        "trl",
        len(window) * a.batch_size / seconds,
        sum(tokens[s] for s in window) / seconds,
        len(window),
        seconds,
        rss,
        losses=[loss[s] for s in steps],
        step_tokens=[tokens[s] for s in steps],
        step_pairs_per_second=[a.batch_size / (end[s] - begin[s]) for s in window],
        process_seconds=wall,
        end_to_end_pairs_per_second=len(window) * a.batch_size / (end[a.steps] - end[a.warmup]),
        notes=notes,
    )


# ------------------------------------------------------------------------------------------ import baseline

PROBES = {  # what each run imports before it loads anything: the memory floor of the framework alone
    "alignkit": [
        "alignkit.cli",
        "alignkit.config.reward",
        "alignkit.algorithms.reward",
        "accelerate",
        "alignkit.models.loading",
        "alignkit.models.reward",
        "alignkit.data.formats",
        "alignkit.data.pairs",
        "transformers.models.llama.modeling_llama",
    ],
    "trl": ["datasets", "transformers", "trl", "trl.trainer.reward_trainer", "transformers.models.llama.modeling_llama"],
}


# ------------------------------------------------------------------------------------------ report


def report(a, res: dict[str, RunResult], floors: dict[str, float], data: BenchData, launcher_mib: float) -> dict:
    ak, trl = res["alignkit"], res["trl"]
    v = versions()
    ratios = {
        "alignkit_over_trl_pairs_per_second": ak.pairs_per_second / trl.pairs_per_second,
        "alignkit_over_trl_end_to_end_pairs_per_second": ak.pairs_per_second / trl.end_to_end_pairs_per_second,
        "alignkit_over_trl_peak_rss": ak.peak_rss_mib / trl.peak_rss_mib,
    }
    goals = {
        f"alignkit >= {GOAL_PAIRS_RATIO}x TRL pairs/s": harness.meets(
            ratios["alignkit_over_trl_pairs_per_second"], GOAL_PAIRS_RATIO, at_least=True
        ),
        f"alignkit peak RSS <= {GOAL_MEMORY_RATIO}x TRL": harness.meets(
            ratios["alignkit_over_trl_peak_rss"], GOAL_MEMORY_RATIO, at_least=False
        ),
    }
    expected = expected_step_tokens(data, a)
    checks = {
        "same_batches (per-step non-pad tokens equal the plan)": {n: r.step_tokens == expected for n, r in res.items()},
        "same_token_ids": not any("token ids differ" in x for x in trl.notes),
        # same model, head, batches and loss: the per-step losses agree to float32 rounding (optimizers differ slightly)
        "max_abs_loss_difference_per_step": max(abs(x - y) for x, y in zip(ak.losses, trl.losses)),
    }
    setup = {
        "model": "llama/tiny (alignkit.models.init_model, seed 0) + 1-label score head (seed --seed), float32, full",
        "data": f"{HH_RLHF.relative_to(REPO)}: the first {len(data.order)} usable pairs with both sides <= "
        f"max_length tokens, from its first {data.rows_scanned} rows ({data.passed_over} longer pairs passed over, "
        f"{data.rows_scanned - len(data.order) - data.passed_over} rows alignkit skips as unusable)",
        "steps": a.steps,
        "warmup_steps_excluded": a.warmup,
        "batch_size_pairs": a.batch_size,
        "max_length": a.max_length,
        "learning_rate": a.lr,
        "threads": a.threads,
        "repeats": a.repeats,
        "schedule": "linear decay, no warm-up, max_grad_norm 1.0, weight decay 0, AdamW",
        "disabled_in_both": [
            "eval and checkpoints during training",
            "tensorboard / report_to",
            "mixed precision (TRL's default bf16=True set False)",
            "gradient checkpointing (TRL's default True set False)",
            "dropout (both default to disabling it)",
        ],
        "alignkit_packing": a.alignkit_packing,
        "differences": [
            f"batches: alignkit data.packing={a.alignkit_packing} (auto = padding-free rows for decoders, its default), "
            "TRL pads every micro-batch to its longest sequence",
            "truncation: alignkit cuts over-long pairs from the left, TRL drops them; only fitting pairs are used",
            "optimizer left at defaults: TRL's adamw_torch_fused, alignkit's torch.optim.AdamW (foreach)",
            "alignkit's step time includes collating the batch; TRL's headline (begin->end) does not",
            "after training alignkit scores 1 pair for reward stats and saves final/ (in its peak RSS, not timed); "
            "TRL saves nothing (save_strategy=no)",
        ],
        "launcher_peak_rss_mib": launcher_mib,  # a child's ru_maxrss starts at its parent's RSS when spawned
        "host": harness.host(),
        "versions": v,
    }
    doc = {
        "benchmark": "benchmarks/rm_vs_trl.py",
        "setup": setup,
        "results": {n: asdict(r) for n, r in res.items()},
        "import_floor_rss_mib": floors,
        "ratios": ratios,
        "goals": goals,
        "checks": checks,
    }

    print(
        f"\nReward model throughput, alignkit vs TRL {v['trl']} RewardTrainer: llama/tiny, {a.batch_size} pairs per "
        f"step, max_length {a.max_length}, {a.steps} steps (first {a.warmup} not timed), lr {a.lr}, float32 CPU, "
        f"{a.threads} torch threads in every run\n"
    )
    head = (
        f"{'framework':<11}{'pairs/s':>9}{'step min-max':>15}{'e2e pairs/s':>13}{'tokens/s':>10}"
        f"{'peak RSS MiB':>14}{'import MiB':>12}{'first loss':>12}{'last loss':>11}"
    )
    print(head + "\n" + "-" * len(head))
    for n, r in res.items():
        e2e = f"{r.end_to_end_pairs_per_second:.2f}" if r.end_to_end_pairs_per_second else "-"
        spread = f"{min(r.step_pairs_per_second):.1f}-{max(r.step_pairs_per_second):.1f}"
        print(
            f"{n:<11}{r.pairs_per_second:>9.2f}{spread:>15}{e2e:>13}{r.tokens_per_second:>10,.0f}"
            f"{r.peak_rss_mib:>14,.0f}{'-' if floors[n] is None else f'{floors[n]:,.0f}':>12}{r.losses[0]:>12.4f}"
            f"{r.losses[-1]:>11.4f}"
        )
    print()
    for k, x in ratios.items():
        print(f"{k:<50}{x:.2f}x")
    harness.print_goals(goals, 40)
    for k, x in checks.items():
        print(f"check: {k}: {x}")
    for n, r in res.items():
        print(f"loss {n}: {' '.join(f'{x:.3f}' for x in r.losses)}")
        for note in r.notes:
            print(f"  note {n}: {note}")
    print(
        "\npairs/s = pairs of the timed steps / their time. alignkit: planning + collation -> optimizer step "
        "(metrics.jsonl); TRL: on_step_begin -> on_step_end (batch already collated: TRL's best case); e2e = TRL "
        "step end to step end. peak RSS = the run's own process (os.wait4); import MiB = the imports alone; "
        f"the launcher holds {launcher_mib:.0f} MiB (no child can read lower)."
    )
    print(f"data: {setup['data']}.\ndifferences: {'; '.join(setup['differences'])}.")
    rows = [
        [
            "alignkit `rm`" if n == "alignkit" else "TRL `RewardTrainer`",
            f"{r.pairs_per_second:.2f}",
            f"{r.tokens_per_second:,.0f}",
            f"{r.peak_rss_mib:,.0f}",
            f"{r.losses[0]:.3f} -> {r.losses[-1]:.3f}",
        ]
        for n, r in res.items()
    ]
    rows.append(
        [
            "alignkit / TRL",
            f"**{ratios['alignkit_over_trl_pairs_per_second']:.2f}x**",
            "",
            f"**{ratios['alignkit_over_trl_peak_rss']:.2f}x**",
            "",
        ]
    )
    md = [
        f"RM on llama/tiny, {a.batch_size} pairs/step, max_length {a.max_length}, {a.steps - a.warmup} timed steps, "
        f"float32 CPU, {a.threads} threads, TRL {v['trl']}, median of {a.repeats}:",
        "",
        *harness.markdown_table(["", "pairs/s", "tokens/s", "peak RSS (MiB)", "first -> last loss"], rows, "lrrrl"),
    ]
    doc["markdown"] = "\n".join(md)
    print("\nmarkdown for docs/benchmarks.md:\n\n" + doc["markdown"])
    return doc


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--max-length", type=int, default=512, help="only pairs whose both sides fit are used")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (linear decay, no warm-up)")
    p.add_argument("--seed", type=int, default=42, help="training seed: alignkit's batch plan and the head's init")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch threads in every run (default $OMP_NUM_THREADS or 2)",
    )
    p.add_argument(
        "--alignkit-packing",
        choices=["auto", "true", "false"],
        default="auto",
        help="alignkit's data.packing (auto = padding-free for decoders, its default)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved; the (lower) median is reported")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "rm_vs_trl"), help="model, data, runs, logs")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "rm_vs_trl.json"), help="JSON report")
    p.add_argument("--run-trl", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--probe-imports", choices=sorted(PROBES), help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    harness.apply_smoke(a, p, {"steps": 2, "warmup": 1, "batch_size": 2, "max_length": 128, "repeats": 1}, name="rm_vs_trl")
    if not 0 <= a.warmup < a.steps:
        p.error(f"--warmup must be in [0, --steps); got {a.warmup} with --steps {a.steps}")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if harness.child_role(a, trl_child=trl_child, probes=PROBES, prepare=prepare_child):  # one of the child processes
        return 0
    work = Path(a.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = module_cmd(__spec__.name, "--prepare", "--work-dir", str(work))
    cmd += [f"--{k}={getattr(a, k.replace('-', '_'))}" for k in ("steps", "warmup", "batch-size", "max-length", "seed")]
    run_child(cmd, env=child_env(a.threads), log=work / "prepare.log")
    data = BenchData(**json.loads((work / "data.json").read_text()))
    print(
        f"model {data.model_dir}, {len(data.order)} pairs in {data.hh_path} ({data.passed_over} over max_length "
        f"passed over): ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    floors = harness.import_floors(__spec__.name, PROBES, work=work, smoke=a.smoke, env=lambda _: child_env(a.threads))
    plan = [("alignkit", "alignkit", lambda: run_alignkit(a, work, data)), ("trl", "trl", lambda: run_trl(a, work, data))]
    runs: dict[str, list[RunResult]] = harness.run_repeats(
        plan,
        a.repeats,
        lambda r: f"{r.pairs_per_second:.2f} pairs/s, peak RSS {r.peak_rss_mib:,.0f} MiB",
        smoke=a.smoke,
    )

    launcher_mib = harness.launcher_peak_rss_mib()  # the floor under every child's peak
    results = {name: harness.median_run(rs, "pairs_per_second", ".2f") for name, rs in runs.items()}
    harness.write_report(report(a, results, floors, data, launcher_mib), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
