"""Benchmark: alignkit's PPO stage (``alignkit ppo``) against TRL 1.12's ``PPOTrainer`` on CPU, same models and prompts.

The claims measured (stated again in the output):
  - speed: alignkit (``memory: separate``, full fine-tuning) takes <= 1/2 the time per PPO step of TRL's
    ``trl.experimental.ppo.PPOTrainer`` with full fine-tuning (>= 2x faster);
  - memory: alignkit ``memory: shared-base`` (one frozen base, LoRA adapters for policy and value, the reference
    = adapters off) peaks at <= 0.6x the RSS of the leaner of TRL's two runs (full, and LoRA via ``peft_config``).

TRL's PPOTrainer was removed in TRL 1.13, so the TRL side runs in a venv of its own (``--trl-python``, default
``.venv-trl112/bin/python``; see ``benchmarks/ppo_trl_requirements.txt``). The TRL child is a function of this file
run by that interpreter; it does not import alignkit (that venv lacks it): everything comes in a JSON spec.

Runs (each its own subprocess, so its peak RSS, from ``os.wait4``, is its own):
  alignkit-separate      policy (full), value model (a full copy of the policy's backbone + scalar head),
                         frozen reference copy, reward model
  alignkit-shared-base   one base, LoRA adapters ``default`` (policy) and ``value`` (+ scalar head), reference =
                         adapters disabled, reward model
  trl-full               policy (full), ``ref_model`` (a copy), value model (``*ForSequenceClassification``, full),
                         reward model
  trl-lora               policy with ``peft_config`` (LoRA), reference = adapter disabled; TRL's value model is
                         still a whole ``*ForSequenceClassification`` trained in full (PPOTrainer has no other)

Held equal: one randomly initialised llama/tiny policy (``--size``; ``init_model``, built once, float32, sdpa); one reward
model (a 1-label ``LlamaForSequenceClassification`` on the same backbone and tokenizer, seeded head, saved once:
alignkit reads it as a plain 1-label classifier, TRL uses it directly); the value model initialised from the
policy's weights with the same scalar head in both (alignkit's ``new_value_head``: normal, std 1/sqrt(H+1), from
the training seed); the prompts (hh-rlhf harmless, the first ``--prompts`` distinct prompts of at most
``--max-prompt-tokens`` tokens with the chat template and generation prompt, written for alignkit as prompt-only
``{"prompt": [messages]}`` rows, or as conversational prompt-completion rows when its data layer cannot read those
(the completion, hh-rlhf's chosen reply, is not read by PPO); checked with alignkit's own ``load_prompts``) and
*the prompts of every step*
(alignkit's ``step_micro_batches`` plan; TRL's shuffling dataloader is replaced by one that reads the rows in
that order); the token ids (``apply_chat_template(add_generation_prompt=True)`` in each venv; checked by hash,
and the queries TRL actually generated from are checked against the plan); rollout 16 prompts per PPO step,
mini-batch 8 (one optimizer update per mini-batch), 4 PPO epochs, 32 new tokens at most, stop at EOS,
temperature 1.0, top_p 1 (no top-k), KL coef 0.05 with the k1 estimator in the reward, gamma 1, lam 0.95,
clip 0.2 (policy and value), vf_coef 0.1, no entropy bonus, advantages whitened, rewards not whitened, raw
reward scores (alignkit ``reward.normalize: false, clip: null``), no missing-EOS penalty, lr 1e-5 with linear
decay over the run and no warm-up, no weight decay, no gradient clipping (TRL's PPO loop never clips; alignkit
``max_grad_norm: null``), AdamW, dropout off, no gradient checkpointing, float32 CPU, the torch thread count, no
eval, no checkpoints, no tensorboard/report_to, no sample generations.

TRL's batch sizes, mapped: ``per_device_train_batch_size`` = rollout (16), ``gradient_accumulation_steps=1``,
``num_mini_batches`` = rollout / mini-batch (2). TRL derives local_batch_size = per_device x grad_accum = 16 (the
prompts of one PPO step) and local_mini_batch_size = 16 / 2 = 8; its micro-batch loop then takes the whole
mini-batch of 8 in one forward, and with grad_accum 1 accelerate steps the optimizer after every micro-batch, so
once per mini-batch of 8: 2 updates per epoch, 8 per PPO step, as alignkit (mini_batch_size 8, train.batch_size 8).
(``per_device_train_batch_size=8, gradient_accumulation_steps=2, num_mini_batches=2`` would NOT be the same:
accelerate's accumulation counter runs across mini-batches, so the optimizer would step every other mini-batch.)

Time per PPO step is wall time over the timed steps (the first ``--warmup`` left out, and all start-up):
  - alignkit: ``metrics.jsonl`` ``step_time`` (rollout, scoring, the no-grad forwards, advantages, PPO epochs and
    the step's metric reductions), with ``generation_time``, ``scoring_time``, ``training_time`` beside it;
  - TRL: PPOTrainer has its own loop and calls only ``on_train_begin``/``on_step_end``/``on_log`` of its callbacks
    (no ``on_step_begin``): a step is ``on_step_end`` to ``on_step_end`` (the first from ``on_train_begin``),
    which includes everything TRL does per step (its ``gc.collect()`` and logging too). The generation time comes
    from wrapping ``ppo_trainer.batch_generation``; the time from generation's end to the first training forward
    (reference, value and reward forwards, advantages) and from there to ``on_step_end`` (the PPO epochs) from
    wrapping ``ppo_trainer.forward`` (its training forwards are the only ones with grad enabled).

What differs (so the timings are understood; printed with the results):
  - TRL takes the rollout's old log-probs from ``generate()``'s scores; alignkit recomputes them (with the values)
    in a padding-free no-grad forward. TRL's forwards are padded (left-padded prompts + responses), compute the
    whole (B, T, V) logits with ``output_hidden_states=True`` and the full-vocabulary entropy for its logs;
    alignkit projects only the response positions (``logits_to_keep``). TRL's value model is always a second
    whole model (in its LoRA run too, trained in full with its AdamW state); alignkit shared-base puts both
    adapters on one base. TRL scores the token ids (prompt + response to its first EOS); alignkit decodes and
    scores the rendered conversation (template '\\n' after ``<|im_end|>`` included). TRL's value loss keeps one
    position past the response's end. Optimizers at their defaults (TRL ``adamw_torch_fused``, alignkit
    ``torch.optim.AdamW``). alignkit saves ``final/`` after training (not timed, in its peak RSS).
  - Memory at llama/tiny: every model is about 1 MiB, so a run's peak RSS is its import floor (about 390 MiB for
    alignkit, 440 MiB for TRL here) plus a few tens of MiB; the report prints the import floors and the ratio of
    the peaks above them beside the goal's ratio of raw peaks.

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.ppo_vs_trl [--steps N --warmup W --threads T --repeats R
      --runs ... --size tiny|small|medium --trl-python PATH --out PATH]
      [--smoke: 2 tiny PPO steps, one repeat, no import probes, the runs two at a time, a temporary folder: a
      check that it runs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import HH_RLHF, REPO, child_env, module_cmd, run_child, timed_window, versions

GOAL_SPEED_RATIO = 2.0  # TRL full / alignkit separate, seconds per PPO step (at least)
GOAL_MEMORY_RATIO = 0.6  # alignkit shared-base / leaner TRL run, peak RSS (at most)
DEFAULT_TRL_PYTHON = REPO / ".venv-trl112" / "bin" / "python"
RUNS = ("alignkit-separate", "alignkit-shared-base", "trl-full", "trl-lora")
CREATE_VENV = f"""the TRL 1.12 venv is missing. Create it (from {REPO}):
    python3 -m venv .venv-trl112                      # Python 3.11 (the one .venv uses: /root/.pyenv/versions/3.11.7/bin/python3)
    .venv-trl112/bin/pip install torch==2.13.0        # FIRST: the local CPU wheel; an unpinned torch pulls CUDA
    .venv-trl112/bin/pip install -r benchmarks/ppo_trl_requirements.txt
or pass --trl-python /path/to/a/python with trl==1.12.0 and peft installed."""


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


@dataclass
class PPORunResult:
    name: str  # one of RUNS
    seconds_per_step: float  # timed seconds / timed steps (the headline)
    timed_steps: int
    timed_seconds: float
    peak_rss_mib: float  # the subprocess's own peak RSS (os.wait4 ru_maxrss)
    process_seconds: float  # the whole subprocess, start-up included
    step_seconds: list[float]  # (steps,) every step's wall time
    generation_seconds: list[float]  # (steps,) sampling the responses
    scoring_seconds: list[float]  # (steps,) alignkit: reward model; TRL: ref + value + reward forwards, advantages
    training_seconds: list[float]  # (steps,) alignkit: no-grad forwards + advantages + PPO epochs; TRL: PPO epochs
    response_length: list[float]  # (steps,) mean response tokens (EOS included when generated)
    reward: list[float]  # (steps,) mean raw reward-model score
    kl: list[float]  # (steps,) mean per-response KL (sum over tokens, k1)
    policy_loss: list[float]
    value_loss: list[float]
    trainable_parameters: int | None = None
    notes: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ data


@dataclass
class PPOBenchData:
    model_dir: str  # the policy (init_model)
    reward_dir: str  # the 1-label sequence classifier
    prompts_path: str  # {"prompt": [messages]} per line (alignkit reads it)
    messages: list[list[dict]]  # (prompts,) in file order
    ids: list[list[int]]  # (prompts,) chat template + generation prompt, file order
    plan: list[list[int]]  # (steps, rollout) alignkit's prompt indices of each PPO step
    plan_ids_sha256: str  # of [ids[i] for step in plan for i in step]
    rows_scanned: int  # hh-rlhf rows read to find them
    passed_over_long: int  # prompts passed over: longer than max_prompt_tokens
    passed_over_duplicate: int  # prompts passed over: the same messages as an earlier one
    alignkit_ids_check: str  # how the ids were checked against alignkit's own prompt loading
    hidden_size: int


def prepare_child(a: argparse.Namespace) -> None:
    """``--prepare``: build the policy, the reward model and the prompts; writes ``work/data.json``.

    In a child so that the launcher stays small (a child's ``ru_maxrss`` starts at its parent's RSS when spawned).
    """
    import torch

    torch.set_num_threads(a.threads)
    from transformers import AutoModelForSequenceClassification

    from alignkit.data.examples import as_messages
    from alignkit.data.formats import load_examples
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.init_model import init_model
    from alignkit.models.loading import load_tokenizer
    from alignkit.training.batching import step_micro_batches

    quiet_libraries()
    work = Path(a.work_dir).resolve()
    model_dir = init_model("llama", a.size, [str(HH_RLHF)], str(work / f"model-{a.size}"), seed=0, overwrite=True)
    tokenizer = load_tokenizer(str(model_dir))
    ensure_chat_template(tokenizer)

    # reward model: the policy's backbone with a seeded 1-output score head
    reward_dir = work / f"reward-{a.size}"
    shutil.rmtree(reward_dir, ignore_errors=True)
    rm = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, dtype=torch.float32)
    hidden = rm.config.hidden_size
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(a.seed + 12345)
        torch.nn.init.normal_(rm.score.weight, std=1.0 / hidden**0.5)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(str(reward_dir))
    tokenizer.save_pretrained(str(reward_dir))

    # prompts: the first distinct hh-rlhf harmless prompts that fit in max_prompt_tokens
    n = a.prompts or a.steps * a.rollout
    examples = load_examples(str(HH_RLHF), fmt="hh_rlhf", on_error="skip").examples
    messages, ids, replies, seen, long_, dup, scanned = [], [], [], set(), 0, 0, 0
    for ex in examples:
        scanned = ex.ref.line
        m = as_messages(ex.prompt)
        key = json.dumps(m)
        x = list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False))
        if len(x) > a.max_prompt_tokens:
            long_ += 1
        elif key in seen:
            dup += 1
        else:
            seen.add(key)
            messages.append(m)
            ids.append(x)
            replies.append(ex.completion)
            if len(ids) == n:
                break
    if len(ids) < n:
        raise SystemExit(f"only {len(ids)} distinct prompts of <= {a.max_prompt_tokens} tokens in {HH_RLHF}; need {n}")
    # alignkit reads prompt-only rows {"prompt": [messages]}; if its data layer cannot (no prompt-only format), the
    # same prompts as conversational prompt-completion rows (the hh-rlhf chosen reply as the completion, which PPO
    # does not read). Either way the prompts and ids are checked against alignkit's own PPO prompt loader.
    prompts_path = work / "prompts.jsonl"
    prompt_only = "".join(json.dumps({"prompt": m}, ensure_ascii=False) + "\n" for m in messages)
    with_reply = "".join(
        json.dumps({"prompt": m, "completion": [{"role": "assistant", "content": c}]}, ensure_ascii=False) + "\n"
        for m, c in zip(messages, replies)
    )
    check = None
    for rows, label in ((prompt_only, "prompt-only rows"), (with_reply, "prompt-completion rows")):
        prompts_path.write_text(rows)
        try:
            from alignkit.algorithms.ppo import load_prompts

            got_messages, got_ids = load_prompts(
                str(prompts_path),
                tokenizer,
                fmt="auto",
                split="train",
                max_length=a.max_prompt_length,
                on_error="raise",
                max_rows=None,
                log=lambda *_: None,
            )[:2]  # (messages, ids, ...): the rest is not compared
        except Exception as err:  # the stage is new: say why (the alignkit run will show its own error)
            check = (check + "; " if check else "") + f"{label}: alignkit's load_prompts failed ({type(err).__name__}: {err})"
            continue
        if [list(x) for x in got_ids] != ids or [list(mm) for mm in got_messages] != messages:
            raise SystemExit(f"alignkit's load_prompts({prompts_path}) gives other prompts or ids than the chat template")
        check = (check + "; " if check else "") + (
            f"{label}: alignkit.algorithms.ppo.load_prompts gives the same messages and ids as apply_chat_template"
        )
        break
    plan = [
        step_micro_batches(k, num_examples=n, batch_size=a.rollout, grad_accum=1, world_size=1, rank=0, seed=a.seed)[0]
        for k in range(a.steps)
    ]
    data = PPOBenchData(
        str(model_dir),
        str(reward_dir),
        str(prompts_path),
        messages,
        ids,
        plan,
        digest([ids[i] for step in plan for i in step]),
        scanned,
        long_,
        dup,
        check,
        hidden,
    )
    (work / "data.json").write_text(json.dumps(asdict(data)))


# ------------------------------------------------------------------------------------------ alignkit


def alignkit_config(a, out: Path, data: PPOBenchData, memory: str) -> dict:
    model = {
        "name_or_path": data.model_dir,
        "finetune": "full",
        "dtype": "float32",
        "gradient_checkpointing": False,
        "attn_implementation": "sdpa",
    }
    if memory == "shared-base":
        model["finetune"] = "lora"
        model["lora"] = {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": 0.0, "target_modules": "all-linear"}
    return {
        "output_dir": str(out),
        "resume": "never",
        "tensorboard": False,
        "memory": memory,
        "disable_dropout": True,
        "model": model,
        "data": {
            "train": data.prompts_path,
            "format": "auto",
            "max_length": a.max_prompt_length,
            "on_error": "raise",
            "eval_fraction": 0.0,
        },
        "reward": {
            "model": data.reward_dir,
            "normalize": False,
            "clip": None,
            "missing_eos_penalty": None,
            "batch_size": a.rollout,
        },
        "value": {"init": "policy"},
        "generation": {"max_new_tokens": a.response_length, "temperature": a.temperature, "top_p": 1.0},
        "ppo": {
            "rollout_size": a.rollout,
            "mini_batch_size": a.mini_batch,
            "ppo_epochs": a.ppo_epochs,
            "gamma": 1.0,
            "lam": 0.95,
            "clip_range": 0.2,
            "clip_range_value": 0.2,
            "vf_coef": 0.1,
            "entropy_coef": 0.0,
            "kl_coef": a.kl_coef,
            "kl_estimator": "k1",
            "kl_target": None,
            "whiten_advantages": True,
        },
        "train": {
            "seed": a.seed,
            "max_steps": a.steps,
            "batch_size": a.mini_batch,
            "grad_accum": 1,
            "learning_rate": a.lr,
            "weight_decay": 0.0,
            "lr_scheduler": "linear",
            "warmup_steps": 0,
            "max_grad_norm": None,
            "mixed_precision": "no",
            "log_every": 1,
            "eval_every": None,
            "save_every": None,
        },
    }


def run_alignkit(a, work: Path, data: PPOBenchData, name: str) -> PPORunResult:
    import yaml

    memory = name.removeprefix("alignkit-")
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(alignkit_config(a, out, data, memory), sort_keys=False))
    rss, wall = run_child([sys.executable, "-m", "alignkit", "ppo", str(cfg_path)], env=bench_env(a), log=work / f"{name}.log")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows if "generation_time" in r}
    steps = list(range(1, a.steps + 1))
    if sorted(by_step) != steps:
        raise SystemExit(f"{out}/metrics.jsonl: expected steps 1..{a.steps}, got {sorted(by_step)}")
    r = [by_step[s] for s in steps]
    notes = []
    if "step_time" in r[0]:
        step_s = [x["step_time"] for x in r]
    else:
        step_s = [x["generation_time"] + x.get("scoring_time", 0.0) + x["training_time"] for x in r]
        notes.append("no step_time in metrics.jsonl: step = generation_time + scoring_time + training_time")
    window = list(timed_window(a.steps, a.warmup))
    timed = sum(step_s[s - 1] for s in window)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    stats = summary.get("data", {})
    checks = {
        "prompts_loaded": stats.get("prompts"),
        "prompts_truncated": stats.get("truncated"),
        "weights_mib": summary.get("weights_mib"),
        "device": summary.get("device"),
        "peak_cuda_memory_mib": summary.get("peak_cuda_memory_mib"),
    }
    if stats and (stats.get("prompts"), stats.get("truncated"), stats.get("skipped")) != (len(data.ids), 0, 0):
        notes.append(f"alignkit loaded {stats}; expected {len(data.ids)} prompts, none truncated or skipped")
    return PPORunResult(
        name,
        timed / len(window),
        len(window),
        timed,
        rss,
        wall,
        step_s,
        [x["generation_time"] for x in r],
        [x.get("scoring_time", 0.0) for x in r],
        [x["training_time"] for x in r],
        [x.get("response_length", float("nan")) for x in r],
        [x.get("reward", float("nan")) for x in r],
        [x.get("kl", float("nan")) for x in r],
        [x.get("policy_loss", float("nan")) for x in r],
        [x.get("value_loss", float("nan")) for x in r],
        summary.get("trainable_parameters"),
        notes,
        checks,
    )


# ------------------------------------------------------------------------------------------ TRL


def trl_child(spec_path: str) -> None:
    """``--run-trl SPEC``: one TRL 1.12 PPOTrainer run in this process (TRL's venv; no alignkit); writes a result."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    t_start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.padding_side = "left"  # TRL's PPO queries are left-padded (its generate reads context_length = width)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    # the same ids from this venv's tokenizer and template as alignkit's (checked)
    ids = [
        list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False))
        for m in spec["messages"]
    ]
    rows = [ids[i] for step in spec["plan"] for i in step]  # (steps * rollout,) in alignkit's per-step order

    f32 = dict(dtype=torch.float32, attn_implementation="sdpa")
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], **f32)
    ref = None if spec["peft"] else AutoModelForCausalLM.from_pretrained(spec["model"], **f32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, **f32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # alignkit's new_value_head, drawn from the same seed
        torch.manual_seed(spec["seed"])
        torch.nn.init.normal_(value.score.weight, std=1.0 / (value.config.hidden_size + 1) ** 0.5)
    value.config.pad_token_id = pad
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], **f32)
    reward.config.pad_token_id = pad
    peft_config = None
    if spec["peft"]:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=spec["lora_r"],
            lora_alpha=spec["lora_alpha"],
            lora_dropout=0.0,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )

    rollout, mini = spec["rollout"], spec["mini_batch"]
    config = PPOConfig(
        output_dir=spec["output_dir"],
        seed=spec["seed"],
        per_device_train_batch_size=rollout,
        gradient_accumulation_steps=1,
        num_mini_batches=rollout // mini,
        num_ppo_epochs=spec["ppo_epochs"],
        total_episodes=spec["steps"] * rollout,
        local_rollout_forward_batch_size=rollout,  # one generation / forward batch per rollout, as alignkit
        response_length=spec["response_length"],
        stop_token="eos",
        temperature=spec["temperature"],
        missing_eos_penalty=None,
        whiten_rewards=False,
        kl_coef=spec["kl_coef"],
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        gamma=1.0,
        lam=0.95,
        learning_rate=spec["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        # float32, no activation recomputation (TRL's defaults: bf16=True, gradient_checkpointing=True)
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=spec.get("device", "cpu") == "cpu",
        num_sample_generations=0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
    )

    clock: dict = {"gen": {}, "first_train_fwd": {}, "end": {}, "logs": {}, "queries": [], "resp_len": {}}

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock["begin"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock["end"][state.global_step] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:  # PPOTrainer logs each step after counting it, before on_step_end
                clock["logs"][state.global_step] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}

    batch_generation = ppo_mod.batch_generation

    def timed_batch_generation(model, queries, *args, **kwargs):
        step = len(clock["gen"]) + 1
        t0 = time.perf_counter()
        out = batch_generation(model, queries, *args, **kwargs)
        clock["gen"][step] = (t0, time.perf_counter())
        clock["queries"].extend([row[row != pad].tolist() for row in queries])
        resp = out[0][:, queries.shape[1] :]  # (B, T) responses, generate's own padding after EOS
        lengths = []
        for row in resp.tolist():  # TRL's sequence_length + 1: up to and including the first EOS
            lengths.append(row.index(eos) + 1 if eos in row else sum(t != pad for t in row))
        clock["resp_len"][step] = sum(lengths) / len(lengths)
        return out

    forward = ppo_mod.forward

    def timed_forward(model, query_responses, pad_token_id):
        step = len(clock["gen"])
        if torch.is_grad_enabled() and step not in clock["first_train_fwd"]:  # the PPO epochs' forwards
            clock["first_train_fwd"][step] = time.perf_counter()
        return forward(model, query_responses, pad_token_id)

    ppo_mod.batch_generation = timed_batch_generation
    ppo_mod.forward = timed_forward

    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=Dataset.from_dict({"input_ids": rows}),
        value_model=value,
        eval_dataset=None,
        callbacks=[StepClock()],
        peft_config=peft_config,
    )
    # alignkit's prompts of each step, in order (TRL would shuffle with its own sampler)
    trainer.dataloader = DataLoader(
        trainer.train_dataset, batch_size=rollout, shuffle=False, collate_fn=trainer.data_collator, drop_last=True
    )
    setup = time.perf_counter() - t_start
    trainer.train()

    recompute = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    assert not recompute, "TRL ran with gradient checkpointing"
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    end, gen, ftf = clock["end"], clock["gen"], clock["first_train_fwd"]
    result = {
        "begin": clock["begin"],
        "end": end,
        "gen": gen,
        "first_train_fwd": ftf,
        "logs": clock["logs"],
        "resp_len": clock["resp_len"],
        "setup_seconds": setup,
        "threads": torch.get_num_threads(),
        "trainable_parameters": n_train,
        "optim": str(getattr(config.optim, "value", config.optim)),
        "ref_model_loaded": trainer.ref_model is not None,
        "is_peft": bool(trainer.is_peft_model),
        "batch": {
            "local_batch_size": config.local_batch_size,
            "local_mini_batch_size": config.local_mini_batch_size,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "num_total_batches": config.num_total_batches,
        },
        "ids_sha256": digest(rows),
        "queries_sha256": digest(clock["queries"]),
        "device": str(trainer.accelerator.device),
        "peak_cuda_memory_mib": (
            torch.cuda.max_memory_allocated() / 2**20
            if torch.cuda.is_available() and trainer.accelerator.device.type == "cuda"
            else None
        ),
        "versions": {
            "trl": trl.__version__,
            "torch": torch.__version__,
            **{k: __import__(k).__version__ for k in ("transformers", "accelerate", "datasets", "peft")},
        },
    }
    Path(spec["result"]).write_text(json.dumps(result))


def run_trl(a, work: Path, data: PPOBenchData, name: str) -> PPORunResult:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = {
        "model": data.model_dir,
        "reward": data.reward_dir,
        "messages": data.messages,
        "plan": data.plan,
        "peft": name == "trl-lora",
        "lora_r": a.lora_r,
        "lora_alpha": a.lora_alpha,
        "steps": a.steps,
        "rollout": a.rollout,
        "mini_batch": a.mini_batch,
        "ppo_epochs": a.ppo_epochs,
        "response_length": a.response_length,
        "temperature": a.temperature,
        "kl_coef": a.kl_coef,
        "lr": a.lr,
        "seed": a.seed,
        "threads": a.threads,
        "output_dir": str(out / "trainer"),
        "device": a.device,
        "result": str(out / "result.json"),
    }
    (out / "spec.json").write_text(json.dumps(spec))
    env = bench_env(a, trl=True)
    cmd = module_cmd(__spec__.name, "--run-trl", str(out / "spec.json"), python=a.trl_python)
    rss, wall = run_child(cmd, env=env, log=work / f"{name}.log")
    res = json.loads((out / "result.json").read_text())
    end, gen, ftf, logs, rlen = (
        {int(k): v for k, v in res[key].items()} for key in ("end", "gen", "first_train_fwd", "logs", "resp_len")
    )
    steps = list(range(1, a.steps + 1))
    if sorted(end) != steps or sorted(gen) != steps or sorted(ftf) != steps:
        raise SystemExit(f"{name}: expected steps 1..{a.steps}, got ends {sorted(end)}, generations {sorted(gen)}")
    prev = {s: (res["begin"] if s == 1 else end[s - 1]) for s in steps}
    step_s = [end[s] - prev[s] for s in steps]
    window = list(timed_window(a.steps, a.warmup))
    timed = sum(step_s[s - 1] for s in window)
    notes = [
        f"optim={res['optim']}",
        f"torch threads {res['threads']}",
        f"trainer construction {res['setup_seconds']:.1f}s (model loading included)",
    ]
    checks = {
        "same_ids_as_alignkit": res["ids_sha256"] == data.plan_ids_sha256,
        "device": res.get("device"),
        "peak_cuda_memory_mib": res.get("peak_cuda_memory_mib"),
        "same_queries_per_step_as_plan": res["queries_sha256"] == data.plan_ids_sha256,
        "ref_model_loaded": res["ref_model_loaded"],
        "peft": res["is_peft"],
        "batch": res["batch"],
        "versions": res["versions"],
    }
    if not checks["same_ids_as_alignkit"]:
        notes.append("TRL's chat-template ids differ from alignkit's")
    if not checks["same_queries_per_step_as_plan"]:
        notes.append("TRL generated from other prompts (or in another order) than alignkit's plan")
    lg = [logs.get(s, {}) for s in steps]
    return PPORunResult(
        name,
        timed / len(window),
        len(window),
        timed,
        rss,
        wall,
        step_s,
        [gen[s][1] - gen[s][0] for s in steps],
        [ftf[s] - gen[s][1] for s in steps],
        [end[s] - ftf[s] for s in steps],
        [rlen[s] for s in steps],
        [x.get("objective/scores", float("nan")) for x in lg],
        [x.get("objective/kl", float("nan")) for x in lg],
        [x.get("loss/policy_avg", float("nan")) for x in lg],
        [x.get("loss/value_avg", float("nan")) for x in lg],
        res["trainable_parameters"],
        notes,
        checks,
    )


# ------------------------------------------------------------------------------------------ import baseline

PROBES = {  # what each run imports before it loads anything: the memory floor of the framework alone
    "alignkit": [
        "alignkit.cli",
        "alignkit.config.ppo",
        "alignkit.algorithms.ppo",
        "accelerate",
        "peft",
        "alignkit.models.actor_critic",
        "alignkit.models.loading",
        "alignkit.models.reward",
        "alignkit.rl.rewards",
        "transformers.models.llama.modeling_llama",
    ],
    "trl": ["datasets", "transformers", "trl", "trl.experimental.ppo", "peft", "transformers.models.llama.modeling_llama"],
}


def bench_env(a, trl: bool = False) -> dict[str, str]:
    """A child's environment: pinned threads, offline; ``--device cpu`` hides any GPU; the TRL child does not see
    alignkit's sources (its venv has no alignkit; other PYTHONPATH entries, e.g. carried wheels, stay)."""
    env = child_env(a.threads, a.device)
    if trl:
        src = str(REPO / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != src)
    return env


# ------------------------------------------------------------------------------------------ report


def flops_per_step(a, data: PPOBenchData) -> dict[str, float]:
    """Model FLOPs of one PPO step's forward and backward passes (generation left out: the same for both), counted
    from the model config and the timed steps' real prompt lengths, all responses at ``--response-length`` (the
    random policies never emit EOS). A matmul of an (n, h) input by an (h, o) weight is 2·n·h·o; attention 2·2·T²·H
    per layer and sequence (scores and values); backward = 2 × forward.

    TRL: prompts left-padded to the rollout's longest, every position through the LM head (full logits); no-grad
    passes: reference (body + head), value (body), reward (body) — its old log-probs come from generate(). Update:
    policy (body + head) + value (body) per mini-batch and epoch, forward + backward.
    alignkit: no padding, the LM head on response positions only; no-grad passes: policy and reference (body + head
    on the response), value (body), reward (body). Update as TRL's.
    On a CPU that is compute-bound the ratio of these bounds the speed-up of the passes that are not generation.
    """
    cfg = json.loads((Path(data.model_dir) / "config.json").read_text())
    H, L, I, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]  # noqa: E741
    kv = cfg["num_key_value_heads"] * cfg.get("head_dim", H // cfg["num_attention_heads"])
    body = L * (2 * H * H + 2 * H * kv + 3 * H * I)  # matmul weights per token, all layers
    R = a.response_length

    def attn(T: int) -> float:
        return L * 2 * 2 * T * T * H

    total = {"trl": 0.0, "alignkit": 0.0}
    timed = [data.plan[s - 1] for s in timed_window(a.steps, a.warmup)]
    for plan in timed:
        P = [len(data.ids[i]) for i in plan]
        n, W = len(P), max(P) + R
        trl_tok, ak_tok, resp = n * W, sum(P) + n * R, n * R
        ak_attn = sum(attn(x + R) for x in P)
        total["trl"] += (
            trl_tok * 2 * 3 * body
            + trl_tok * 2 * H * V
            + 3 * n * attn(W)  # no-grad
            + a.ppo_epochs * 3 * (trl_tok * 2 * 2 * body + trl_tok * 2 * H * V + 2 * n * attn(W))
        )
        total["alignkit"] += (
            ak_tok * 2 * 4 * body
            + 2 * resp * 2 * H * V
            + 4 * ak_attn
            + a.ppo_epochs * 3 * (ak_tok * 2 * 2 * body + resp * 2 * H * V + 2 * ak_attn)
        )
    return {k: v / len(timed) / 1e9 for k, v in total.items()}


def mean(xs) -> float:
    xs = [x for x in xs if x == x]  # drop NaN
    return statistics.mean(xs) if xs else float("nan")


def report(a, res: dict[str, PPORunResult], floors: dict[str, float], data: PPOBenchData, launcher_mib: float) -> dict:
    v = versions()
    trl_v = next((r.checks["versions"] for n, r in res.items() if n.startswith("trl")), {})
    ratios: dict[str, float] = {}
    goals: dict[str, bool] = {}
    ak, aks, tf, tl = (res.get(n) for n in RUNS)
    trls = [r for r in (tf, tl) if r is not None]
    if ak and tf:
        ratios["trl-full / alignkit-separate seconds per step (speed-up)"] = tf.seconds_per_step / ak.seconds_per_step
        ratios["alignkit-separate / trl-full peak RSS"] = ak.peak_rss_mib / tf.peak_rss_mib
        goals[f"alignkit-separate >= {GOAL_SPEED_RATIO}x faster per PPO step than trl-full"] = (
            tf.seconds_per_step / ak.seconds_per_step >= GOAL_SPEED_RATIO
        )
    if aks and tl:
        ratios["trl-lora / alignkit-shared-base seconds per step (speed-up)"] = tl.seconds_per_step / aks.seconds_per_step
    if aks and tf:
        ratios["trl-full / alignkit-shared-base seconds per step (speed-up)"] = tf.seconds_per_step / aks.seconds_per_step
    if aks and trls:
        lean = min(trls, key=lambda r: r.peak_rss_mib)
        ratios[f"alignkit-shared-base / {lean.name} (leaner TRL) peak RSS"] = aks.peak_rss_mib / lean.peak_rss_mib
        goals[f"alignkit-shared-base peak RSS <= {GOAL_MEMORY_RATIO}x the leaner TRL run ({lean.name})"] = (
            aks.peak_rss_mib / lean.peak_rss_mib <= GOAL_MEMORY_RATIO
        )
        if floors.get("alignkit") and floors.get("trl"):  # informational: what the models and the run add
            ratios[f"alignkit-shared-base / {lean.name} peak RSS above each one's import floor"] = (
                aks.peak_rss_mib - floors["alignkit"]
            ) / max(lean.peak_rss_mib - floors["trl"], 1e-9)
    if a.device == "cuda":  # on a GPU the memory that matters is the device's: torch's peak allocation
        cuda = {n: r.checks.get("peak_cuda_memory_mib") for n, r in res.items()}
        if aks and trls and cuda.get(aks.name) and all(cuda.get(r.name) for r in trls):
            lean = min(trls, key=lambda r: cuda[r.name])
            ratios[f"alignkit-shared-base / {lean.name} (leaner TRL) peak CUDA memory"] = cuda[aks.name] / cuda[lean.name]
            goals[f"alignkit-shared-base peak CUDA memory <= {GOAL_MEMORY_RATIO}x the leaner TRL run ({lean.name})"] = (
                cuda[aks.name] / cuda[lean.name] <= GOAL_MEMORY_RATIO
            )
        if ak and tf and cuda.get(ak.name) and cuda.get(tf.name):
            ratios["alignkit-separate / trl-full peak CUDA memory"] = cuda[ak.name] / cuda[tf.name]
    flops = flops_per_step(a, data)
    ratios["FLOP bound: TRL / alignkit model GFLOP per step, generation left out"] = flops["trl"] / flops["alignkit"]
    checks = {
        "alignkit_ids": data.alignkit_ids_check,
        "trl_same_ids_as_alignkit": {n: r.checks.get("same_ids_as_alignkit") for n, r in res.items() if n.startswith("trl")},
        "trl_same_prompts_per_step_as_alignkit": {
            n: r.checks.get("same_queries_per_step_as_plan") for n, r in res.items() if n.startswith("trl")
        },
    }
    setup = {
        "policy": f"llama/{a.size} (alignkit.models.init_model, seed 0), float32, sdpa attention",
        "reward_model": "1-label LlamaForSequenceClassification on the policy's initial weights, seeded head "
        f"(seed {a.seed + 12345}), saved once; raw scores (no normalisation or clipping)",
        "value_model": "the policy's initial weights + a scalar head drawn as alignkit's new_value_head (seed "
        f"{a.seed}); alignkit shared-base: a 'value' LoRA adapter on the shared base + that head",
        "prompts": f"{HH_RLHF.relative_to(REPO)}: the first {len(data.ids)} distinct prompts of <= "
        f"{a.max_prompt_tokens} tokens (chat template + generation prompt) from its first {data.rows_scanned} rows "
        f"({data.passed_over_long} longer and {data.passed_over_duplicate} repeated prompts passed over); the "
        "prompts of each step from alignkit's step_micro_batches plan, for both",
        "steps": a.steps,
        "warmup_steps_excluded": a.warmup,
        "rollout": a.rollout,
        "mini_batch": a.mini_batch,
        "ppo_epochs": a.ppo_epochs,
        "max_new_tokens": a.response_length,
        "temperature": a.temperature,
        "kl_coef": a.kl_coef,
        "kl_estimator": "k1",
        "gamma": 1.0,
        "lam": 0.95,
        "clip_range": 0.2,
        "clip_range_value": 0.2,
        "vf_coef": 0.1,
        "learning_rate": a.lr,
        "lora": f"r {a.lora_r}, alpha {a.lora_alpha}, dropout 0, all linear layers",
        "threads": a.threads,
        "repeats": a.repeats,
        "trl_batch_mapping": "per_device_train_batch_size = rollout, gradient_accumulation_steps = 1, "
        "num_mini_batches = rollout / mini_batch: one optimizer update per mini-batch, as alignkit",
        "disabled_in_both": [
            "eval and checkpoints during training",
            "tensorboard / report_to",
            "mixed precision (TRL's default bf16=True set False)",
            "gradient checkpointing",
            "dropout",
            "gradient clipping (TRL's PPO loop has none; alignkit max_grad_norm null)",
            "reward whitening / normalisation, missing-EOS penalty, entropy bonus",
            "TRL's sample generations (num_sample_generations=0)",
        ],
        "differences": [
            "old log-probs: TRL takes them from generate()'s scores (no extra forward); alignkit recomputes them (and "
            "the values) in one padding-free no-grad forward of the actor-critic",
            "forwards: TRL pads every batch (left-padded prompt + right-padded response to the batch's longest), runs "
            "the full (B, T, V) logits of prompt and response, output_hidden_states=True, and computes the full "
            "softmax entropy of every mini-batch for its logs; alignkit packs sequences padding-free and projects "
            "only the response positions",
            "separate value model: TRL's training forward runs the policy and the value backbone (two models) in "
            "both runs, its LoRA run included (TRL's value model is always a whole, fully trained "
            "*ForSequenceClassification, with its AdamW state); alignkit shared-base runs one base with two adapters",
            "reward: TRL scores token ids (prompt + response up to its first EOS); alignkit decodes the responses and "
            "scores the rendered conversation with the reward model's chat template (so one more token, the "
            "template's '\\n' after <|im_end|>, and re-tokenised text)",
            "value targets: TRL keeps the value of one position past the response's end in its value loss "
            "(padding_mask_p1); alignkit only the response tokens",
            "generation: both sample with the KV cache and stop a row at EOS; TRL = transformers generate() on the "
            "left-padded rollout batch; alignkit = generate_ids (rows sorted by length, left-padded)",
            "optimizer left at defaults: TRL's adamw_torch_fused, alignkit's torch.optim.AdamW",
            "after training alignkit saves final/ (in its peak RSS, not timed); TRL saves nothing",
        ],
        "launcher_peak_rss_mib": launcher_mib,
        "host": harness.host(),
        "versions_alignkit_venv": v,
        "versions_trl_venv": trl_v,
        "trl_python": str(a.trl_python),
    }
    doc = {
        "benchmark": "benchmarks/ppo_vs_trl.py",
        "setup": setup,
        "results": {n: asdict(r) for n, r in res.items()},
        "gflop_per_step": flops,
        "import_floor_rss_mib": floors,
        "ratios": ratios,
        "goals": goals,
        "checks": checks,
    }

    print(
        f"\nPPO, alignkit vs TRL {trl_v.get('trl', '?')} PPOTrainer: llama/{a.size} policy, value and reward, "
        f"{a.rollout} prompts per PPO step, mini-batch {a.mini_batch}, {a.ppo_epochs} PPO epochs, <= "
        f"{a.response_length} new tokens, {a.steps} PPO steps (first {a.warmup} not timed), lr {a.lr}, float32 {a.device.upper()}, "
        f"{a.threads} torch threads in every run\n"
    )
    hdr = (
        f"{'run':<22}{'s/step':>8}{'step min-max':>14}{'gen s':>8}{'score s':>9}{'train s':>9}{'resp tok':>9}"
        f"{'peak RSS MiB':>13}{'import MiB':>11}{'trainable':>12}{'process s':>10}{'reward':>9}{'kl':>8}"
    )
    print(hdr + "\n" + "-" * len(hdr))
    for n, r in res.items():
        w = [s - 1 for s in timed_window(a.steps, a.warmup)]
        timed = [r.step_seconds[i] for i in w]
        floor = floors.get(n.split("-")[0])
        trainable = f"{r.trainable_parameters:,}" if r.trainable_parameters else "-"
        print(
            f"{n:<22}{r.seconds_per_step:>8.2f}{f'{min(timed):.2f}-{max(timed):.2f}':>14}"
            f"{mean(r.generation_seconds[i] for i in w):>8.2f}{mean(r.scoring_seconds[i] for i in w):>9.2f}"
            f"{mean(r.training_seconds[i] for i in w):>9.2f}{mean(r.response_length):>9.1f}{r.peak_rss_mib:>13,.0f}"
            f"{(f'{floor:,.0f}' if floor else '-'):>11}{trainable:>12}{r.process_seconds:>10.1f}"
            f"{mean(r.reward):>9.3f}{mean(r.kl):>8.3f}"
        )
    print()
    width = max((len(k) for k in ratios), default=0) + 2
    for k, x in ratios.items():
        print(f"ratio {k:<{width}}{x:.2f}x")
    harness.print_goals(goals, 80)
    for k, x in checks.items():
        print(f"check: {k}: {x}")
    for n, r in res.items():
        print(f"per-step s {n}: {' '.join(f'{x:.2f}' for x in r.step_seconds)}")
        if r.checks.get("peak_cuda_memory_mib"):
            print(f"  peak CUDA memory {n}: {r.checks['peak_cuda_memory_mib']:,.0f} MiB on {r.checks.get('device')}")
        for note in r.notes:
            print(f"  note {n}: {note}")
    print(
        "\ns/step = the timed PPO steps' wall time / their number. alignkit: metrics.jsonl step_time; TRL: "
        "on_step_end to on_step_end. gen = sampling; score = alignkit's reward-model pass / TRL's reference, value "
        "and reward forwards + advantages; train = alignkit's no-grad forwards + advantages + PPO epochs / TRL's "
        "PPO epochs (means over the timed steps). resp tok = mean response length (EOS included). peak RSS = the "
        "run's own process (os.wait4); import MiB = the imports alone; the launcher holds "
        f"{launcher_mib:.0f} MiB (no child can read lower)."
    )
    print(f"prompts: {setup['prompts']}.\nTRL batches: {setup['trl_batch_mapping']}.")
    print(f"differences: {'; '.join(setup['differences'])}.")

    md = [
        f"PPO on llama/{a.size} (policy, value, reward), {a.rollout} prompts/step, mini-batch {a.mini_batch}, "
        f"{a.ppo_epochs} epochs, <= {a.response_length} new tokens, {a.steps - a.warmup} timed steps, float32 {a.device.upper()}, "
        f"{a.threads} threads, TRL {trl_v.get('trl', '?')}" + (f", median of {a.repeats}" if a.repeats > 1 else "") + ":",
        "",
        "| run | s / PPO step | generation s | peak RSS (MiB) | trainable params | mean response tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "alignkit-separate": "alignkit `ppo`, memory: separate (full)",
        "alignkit-shared-base": "alignkit `ppo`, memory: shared-base (LoRA)",
        "trl-full": "TRL `PPOTrainer` (full)",
        "trl-lora": "TRL `PPOTrainer` + `peft_config` (LoRA)",
    }
    w = [s - 1 for s in timed_window(a.steps, a.warmup)]
    for n, r in res.items():
        md.append(
            f"| {labels[n]} | {r.seconds_per_step:.2f} | {mean(r.generation_seconds[i] for i in w):.2f} | "
            f"{r.peak_rss_mib:,.0f} | {r.trainable_parameters or 0:,} | {mean(r.response_length):.1f} |"
        )
    for k, x in ratios.items():
        md.append(f"| {k} | **{x:.2f}x** | | | | |")
    doc["markdown"] = "\n".join(md)
    print("\nmarkdown for docs/benchmarks.md:\n\n" + doc["markdown"])
    return doc


# ------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS), help="which runs")
    p.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny", help="init_model size of policy, value, reward")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: GPUs hidden from both (the default); cuda: both train on the GPU (float32), peak CUDA memory reported",
    )
    p.add_argument("--steps", type=int, default=10, help="PPO steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first PPO steps left out of the timing (>= 1)")
    p.add_argument("--rollout", type=int, default=16, help="prompts per PPO step")
    p.add_argument("--mini-batch", type=int, default=8, help="rollout rows per optimizer update")
    p.add_argument("--ppo-epochs", type=int, default=4, help="passes over each rollout")
    p.add_argument("--response-length", type=int, default=32, help="max new tokens per response")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (TRL's default 0.7 is overridden)")
    p.add_argument("--kl-coef", type=float, default=0.05, help="KL penalty coefficient (k1 estimator)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (linear decay over the run, no warm-up)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alignkit shared-base, TRL LoRA)")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha")
    p.add_argument("--prompts", type=int, default=None, help="distinct prompts used (default steps x rollout: no repeats)")
    p.add_argument("--max-prompt-tokens", type=int, default=64, help="only prompts this short (chat template included)")
    p.add_argument("--max-prompt-length", type=int, default=256, help="alignkit's data.max_length (no prompt reaches it)")
    p.add_argument("--seed", type=int, default=0, help="training seed: alignkit's prompt plan, the value head")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch threads in every run (default $OMP_NUM_THREADS or 2)",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of each, interleaved; the median is reported")
    p.add_argument("--trl-python", type=Path, default=DEFAULT_TRL_PYTHON, help="python of the TRL 1.12 venv")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "ppo_vs_trl"), help="models, prompts, runs, logs")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "ppo_vs_trl.json"), help="JSON report")
    p.add_argument("--run-trl", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--probe-imports", choices=sorted(PROBES), help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    harness.apply_smoke(
        a,
        p,
        {"steps": 2, "warmup": 1, "rollout": 2, "mini_batch": 2, "ppo_epochs": 1, "response_length": 4, "repeats": 1},
        name="ppo_vs_trl",
    )
    if not 1 <= a.warmup < a.steps:  # step 1 holds one-off work (first allocations)
        p.error(f"--warmup must be in [1, --steps); got {a.warmup} with --steps {a.steps}")
    if a.rollout % a.mini_batch:
        p.error(f"--rollout ({a.rollout}) must be a multiple of --mini-batch ({a.mini_batch}) (TRL's num_mini_batches)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if harness.child_role(a, trl_child=trl_child, probes=PROBES, prepare=prepare_child):  # one of the child processes
        return 0
    a.trl_python = Path(shutil.which(str(a.trl_python)) or a.trl_python)  # a bare name ("python3") from PATH
    if any(n.startswith("trl") for n in a.runs) and not Path(a.trl_python).exists():
        print(f"{a.trl_python} not found: {CREATE_VENV}", file=sys.stderr)
        return 2
    work = Path(a.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = module_cmd(__spec__.name, "--prepare", "--work-dir", str(work))
    cmd += [
        f"--{k}={getattr(a, k.replace('-', '_'))}"
        for k in ("size", "steps", "warmup", "rollout", "mini-batch", "max-prompt-tokens", "max-prompt-length", "seed", "threads")
    ]
    if a.prompts:
        cmd.append(f"--prompts={a.prompts}")
    run_child(cmd, env=child_env(a.threads), log=work / "prepare.log")
    data = PPOBenchData(**json.loads((work / "data.json").read_text()))
    print(
        f"policy {data.model_dir}, reward {data.reward_dir}, {len(data.ids)} prompts in {data.prompts_path}: ready in "
        f"{time.perf_counter() - t0:.0f}s; {data.alignkit_ids_check}",
        flush=True,
    )

    # --smoke: no import probes (they only add a memory figure), None each
    floors = harness.import_floors(
        __spec__.name,
        sorted({n.split("-")[0] for n in a.runs}),
        work=work,
        smoke=a.smoke,
        env=lambda fw: bench_env(a, trl=fw == "trl"),
        python=lambda fw: sys.executable if fw == "alignkit" else str(a.trl_python),
    )
    plan = [
        (name, name, lambda name=name: (run_alignkit if name.startswith("alignkit") else run_trl)(a, work, data, name))
        for name in a.runs
    ]
    runs: dict[str, list[PPORunResult]] = harness.run_repeats(
        plan,
        a.repeats,
        lambda r: f"{r.seconds_per_step:.2f} s/step, peak RSS {r.peak_rss_mib:,.0f} MiB",
        smoke=a.smoke,
    )

    launcher_mib = harness.launcher_peak_rss_mib()  # the floor under every child's peak
    results = {name: harness.median_run(rs, "seconds_per_step", ".2f", upper=True, unit="s") for name, rs in runs.items()}
    harness.write_report(report(a, results, floors, data, launcher_mib), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
