"""Benchmark: alignkit's GRPO stage (``alignkit grpo``) against TRL's ``GRPOTrainer`` on CPU, same model and prompts.

The claims measured (stated again in the output):
  - speed: alignkit trains at >= 1.5x TRL's tokens/s;
  - memory: alignkit's peak RSS is <= 0.8x TRL's;
  - correctness: on identical rollouts (the same prompts, completions and rewards), the loss of the first update
    computed by TRL's own code and by alignkit's pieces agree to <= 1e-4 (the gradients' global norms too).

Runs (each in its own subprocess, so that its peak RSS, from ``os.wait4``, is its own; the launcher imports
neither torch nor either framework, so no child's ``ru_maxrss`` starts above a few tens of MiB):
  prepare     builds one llama/tiny model (``init_model``, seed 0, tokenizer trained on hh-rlhf harmless) or takes
              ``--model DIR``, and picks the prompts: the first ``steps x prompts_per_step`` distinct prompts of
              hh-rlhf helpful (``data/hh-rlhf-helpful/helpful-sample.jsonl.gz``) of at most ``--max-prompt-tokens``
              tokens (chat template + generation prompt, alignkit's ``encode_chat``); nothing is truncated.
  trl         ``trl.GRPOTrainer`` on those prompts, read in the order of alignkit's seeded prompt stream
              (``alignkit.algorithms.grpo.PromptStream``; ``shuffle_dataset=False``): every step of both trains on the
              same prompts (checked through each step's prompt-token count).
  alignkit    ``alignkit.algorithms.grpo.run`` on the same prompts (its ``GRPOConfig`` loaded from a YAML file).
  loss-check  one process with both: one batch of rollouts sampled once (the first ``prompts_per_step`` prompts,
              G completions each, transformers ``generate``), then the first update's loss and gradient norm
              (i) by TRL: ``GRPOTrainer._generate_and_score_completions`` with a ``rollout_func`` that returns those
              rollouts (so TRL's own reward call, advantages, padding and token count), then ``compute_loss`` and
              ``backward``; (ii) by alignkit: the same reward function through ``alignkit.rl.rewards.RewardSource``,
              GRPO advantages, ``completion_token_logps`` on a ``collate_rollout`` batch, the clipped per-token
              loss and ``alignkit.rl.aggregate.token_mean``. Twice: on-policy (old log-probs = the current ones,
              detached: the ratio is 1 and the loss is ``-sum(A x tokens) / N``), and with the same old log-probs
              shifted by ``0.5 x N(0, 1)`` per token given to both (``old_per_token_logps`` in TRL's inputs), so that
              ratios move off 1 and the clip bounds are active. The gradients are compared element by element.

Held equal: the model (float32, sdpa, dropout off), the prompts (token ids checked by hash: TRL tokenises the
conversational prompts with its own ``apply_chat_template``), the reward function
(``alignkit.rl.rule_rewards:letter_share``: TRL gets it through a wrapper that passes the prompts as alignkit's
``prompt_text`` and the decoded completion text, both decode with ``skip_special_tokens``), G completions per
prompt, prompts per step, at most ``--max-new-tokens`` new tokens stopping at EOS, temperature 1, top_p 1, no top-k,
steps, learning rate (constant, no warm-up), no weight decay, gradient clipping at 1.0, one optimizer update per
generation (``num_iterations`` 1; TRL: ``per_device_train_batch_size`` = P x G completions,
``gradient_accumulation_steps`` 1, ``steps_per_generation`` 1), beta 0 (no reference model), loss ``dapo`` in TRL =
the token mean over the whole step (alignkit ``loss.aggregation: token``), clip 0.2 on both sides, advantages
``(r - mean) / (std + 1e-4)`` per group with the unbiased std (``scale_rewards="group"``), no gradient checkpointing,
no mixed precision, no vLLM, the torch thread count (``--threads``), no eval, checkpoints or report_to.

Throughput, counted identically for both: tokens of a step = the prompt tokens of every completion's row (each
prompt counted G times) + the completion tokens (EOS included when generated); tokens/s = the timed steps' tokens
/ their wall time. The first ``--warmup`` steps are not timed. Timed:
  - TRL: ``on_step_begin`` -> ``on_step_end`` of a callback: generation, TRL's reward call and advantages, the
    training forward/backward, gradient clipping and the optimizer step (the dataloader's fetch of P prompt dicts
    and TRL's logging between steps are outside); the tokens come from wrapping ``trainer._generate``;
  - alignkit: the per-step ``step_time`` of ``metrics.jsonl`` (the whole step: generation, rewards, advantages,
    forward/backward, clipping, optimizer step and its metric reductions); a step's tokens are its
    ``tokens_per_second x step_time`` (alignkit counts prompt + response tokens of every row, EOS included), the
    completion tokens ``response_length x rows``.
Model loading and start-up are outside both.

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.grpo_vs_trl --steps 10 --threads 2
      [--smoke: 2 tiny steps, the two runs and the loss check two at a time, a temporary folder: a check
      that it runs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import REPO, child_env, module_cmd, ratio, run_child, timed_window, versions

GOAL_SPEED_RATIO = 1.5  # alignkit tokens/s / TRL tokens/s (at least)
GOAL_MEMORY_RATIO = 0.8  # alignkit peak RSS / TRL peak RSS (at most)
LOSS_TOLERANCE = 1e-4  # |first-update loss alignkit - TRL| (at most)
HELPFUL = REPO / "data" / "hh-rlhf-helpful" / "helpful-sample.jsonl.gz"
HARMLESS = REPO / "data" / "hh-rlhf-harmless" / "harmless-base.jsonl.gz"
REWARD = "alignkit.rl.rule_rewards:letter_share"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ prepare


def prepare_child(a: argparse.Namespace) -> None:
    """``--child prepare``: the model (unless ``--model``) and the prompts; writes ``work/data.json``."""
    import torch

    torch.set_num_threads(a.threads)
    from alignkit.algorithms.rollouts import load_prompts
    from alignkit.data.chat import encode_chat
    from alignkit.data.examples import as_messages
    from alignkit.data.formats import load_examples
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import load_tokenizer

    quiet_libraries()
    work = Path(a.work_dir).resolve()
    if a.model:
        model_dir = Path(a.model).resolve()
    else:
        from alignkit.models.init_model import init_model

        model_dir = init_model("llama", a.size, [str(HARMLESS)], str(work / f"model-{a.size}"), seed=0, overwrite=True)
    tokenizer = load_tokenizer(str(model_dir))
    if not tokenizer.chat_template:  # TRL applies the tokenizer's own template: save a copy with alignkit's
        ensure_chat_template(tokenizer)
        copy = work / "model-with-template"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model_dir, copy)
        tokenizer.save_pretrained(str(copy))
        model_dir = copy

    n = a.steps * a.prompts_per_step
    examples = load_examples(str(HELPFUL), fmt="hh_rlhf", on_error="skip").examples
    messages, ids, replies, seen, long_, dup, scanned = [], [], [], set(), 0, 0, 0
    for ex in examples:
        scanned = ex.ref.line
        m = as_messages(ex.prompt)
        key = json.dumps(m)
        x = list(encode_chat(tokenizer, m, add_generation_prompt=True))
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
        raise SystemExit(f"only {len(ids)} distinct prompts of <= {a.max_prompt_tokens} tokens in {HELPFUL}; need {n}")
    # conversational prompt-completion rows (the completion, hh-rlhf's chosen reply, is not read by GRPO)
    prompts_path = work / "prompts.jsonl"
    prompts_path.write_text(
        "".join(
            json.dumps({"prompt": m, "completion": [{"role": "assistant", "content": c}]}, ensure_ascii=False) + "\n"
            for m, c in zip(messages, replies)
        )
    )
    got_messages, got_ids, *_ = load_prompts(
        str(prompts_path),
        tokenizer,
        fmt="auto",
        split="train",
        max_length=a.max_prompt_tokens,
        on_error="raise",
        max_rows=None,
        log=lambda *_: None,
    )
    if [list(x) for x in got_ids] != ids or [list(m) for m in got_messages] != messages:
        raise SystemExit(f"alignkit's load_prompts({prompts_path}) gives other prompts or ids than encode_chat")
    # the prompts of each of alignkit's steps (its seeded prompt stream), for TRL to read in that order
    from alignkit.algorithms.grpo import PromptStream

    stream = PromptStream(n, a.seed)
    order = [i for k in range(a.steps) for i in stream.take(k * a.prompts_per_step, a.prompts_per_step, 1, 0)]
    if sorted(order) != list(range(n)):
        raise SystemExit(f"alignkit's prompt stream does not use each of the {n} prompts once in {a.steps} steps")
    data = {
        "order": order,
        "model_dir": str(model_dir),
        "prompts_path": str(prompts_path),
        "messages": messages,
        "ids": ids,
        "ids_sha256": digest(ids),
        "rows_scanned": scanned,
        "passed_over_long": long_,
        "passed_over_duplicate": dup,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    (work / "data.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------ TRL


def trl_reward(prompts, completions, **kwargs) -> list[float]:
    """TRL reward function: alignkit's rule reward on the same inputs as alignkit passes it (prompt text of the
    chat messages, the decoded completion)."""
    from alignkit.data.examples import prompt_text
    from alignkit.rl.rewards import load_reward_function

    fn = load_reward_function(REWARD)
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(s) for s in fn([prompt_text(p) for p in prompts], texts)]


trl_reward.__name__ = "letter_share"


def trl_config(spec: dict, output_dir: str, **overrides):
    """TRL 1.16 ``GRPOConfig`` for the held-equal settings (see the module docstring)."""
    from trl import GRPOConfig

    kw = dict(
        output_dir=output_dir,
        seed=spec["seed"],
        per_device_train_batch_size=spec["prompts_per_step"] * spec["group_size"],  # completions, not prompts
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=spec["group_size"],
        num_iterations=1,
        max_completion_length=spec["max_new_tokens"],
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.2,
        loss_type="dapo",
        scale_rewards="group",
        mask_truncated_completions=False,
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # --precision as alignkit runs it (fp32, or bf16 autocast over fp32 weights: alignkit mixed_precision=bf16),
        # no activation recomputation (GRPOConfig's defaults: bf16=True, gradient_checkpointing=True)
        bf16=spec.get("precision", "fp32") == "bf16",
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=spec.get("device", "cpu") == "cpu",
        disable_dropout=True,
        shuffle_dataset=False,
        log_completions=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
    )
    kw.update(overrides)
    return GRPOConfig(**kw)


def load_hf(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def trl_child(spec_path: str) -> None:
    """``--child trl SPEC``: one TRL GRPOTrainer run in this process; writes ``result.json``."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    cuda = spec.get("device", "cpu") == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)  # a step's kernels finish inside its timing
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    t_start = time.perf_counter()
    model, tokenizer = load_hf(spec["model_dir"])
    clock: dict = {"begin": {}, "end": {}, "logs": {}, "prompt_tokens": [], "completion_tokens": [], "prompt_ids": []}

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            clock["begin"][state.global_step + 1] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            clock["end"][state.global_step] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                clock["logs"][state.global_step] = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_reward],
        args=trl_config(spec, spec["output_dir"]),
        train_dataset=Dataset.from_list([{"prompt": spec["messages"][i]} for i in spec["order"]]),  # alignkit's order
        processing_class=tokenizer,
        callbacks=[StepClock()],
    )
    generate = trainer._generate

    def counted_generate(prompts):
        out = generate(prompts)
        prompt_ids, completion_ids = out[0], out[1]
        clock["prompt_tokens"].append(sum(len(x) for x in prompt_ids))
        clock["completion_tokens"].append(sum(len(x) for x in completion_ids))
        clock["prompt_ids"].extend(list(x) for x in prompt_ids[:: spec["group_size"]])
        return out

    trainer._generate = counted_generate
    setup = time.perf_counter() - t_start
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0

    steps = spec["steps"]
    if sorted(clock["end"]) != list(range(1, steps + 1)) or len(clock["prompt_tokens"]) != steps:
        raise SystemExit(f"TRL ran {sorted(clock['end'])} steps with {len(clock['prompt_tokens'])} generations; expected {steps}")
    recompute = any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules())
    assert not recompute, "TRL ran with gradient checkpointing"
    expected = [list(spec["ids"][i]) for i in spec["order"]]
    result = {
        "step_seconds": [clock["end"][s] - clock["begin"][s] for s in range(1, steps + 1)],
        "step_end_to_end_seconds": [
            clock["end"][s] - (clock["end"][s - 1] if s > 1 else clock["begin"][1]) for s in range(1, steps + 1)
        ],
        "prompt_tokens": clock["prompt_tokens"],
        "completion_tokens": clock["completion_tokens"],
        "loss": [clock["logs"].get(s, {}).get("loss", float("nan")) for s in range(1, steps + 1)],
        "reward": [clock["logs"].get(s, {}).get("reward", float("nan")) for s in range(1, steps + 1)],
        "prompt_ids_match": clock["prompt_ids"] == expected,
        "setup_seconds": setup,
        "train_seconds": train_seconds,
        "threads": torch.get_num_threads(),
        "optim": str(getattr(trainer.args.optim, "value", trainer.args.optim)),
        "ref_model_loaded": trainer.ref_model is not None,
        "trl": trl.__version__,
        "device": str(trainer.accelerator.device),
        "peak_cuda_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------ alignkit


def alignkit_config(spec: dict) -> dict:
    """The ``alignkit grpo`` config for the held-equal settings (``alignkit.config.grpo.GRPOConfig``)."""
    return {
        "output_dir": spec["output_dir"],
        "resume": "never",
        "tensorboard": False,
        "disable_dropout": True,
        "model": {
            "name_or_path": spec["model_dir"],
            "finetune": "full",
            "dtype": "float32",
            "gradient_checkpointing": False,
            "attn_implementation": "sdpa",
        },
        "data": {
            "train": spec["prompts_path"],
            "format": "auto",
            "max_length": spec["max_prompt_tokens"],
            "on_error": "raise",
            "eval_fraction": 0.0,
        },
        "rewards": {"functions": [{"function": REWARD, "weight": 1.0}]},
        "generation": {"max_new_tokens": spec["max_new_tokens"], "temperature": 1.0, "top_p": 1.0},
        "grpo": {"group_size": spec["group_size"], "prompts_per_step": spec["prompts_per_step"], "num_iterations": 1},
        "advantage": {"estimator": "grpo", "scale": "group"},
        "loss": {"aggregation": "token", "clip_low": 0.2, "clip_high": 0.2},
        "kl": {"coef": 0.0},
        "train": {
            "seed": spec["seed"],
            "max_steps": spec["steps"],
            "batch_size": spec["prompts_per_step"] * spec["group_size"],
            "grad_accum": 1,
            "learning_rate": spec["lr"],
            "weight_decay": 0.0,
            "lr_scheduler": "constant",
            "warmup_steps": 0,
            "max_grad_norm": 1.0,
            "mixed_precision": "bf16" if spec.get("precision") == "bf16" else "no",
            "log_every": 1,
            "eval_every": None,
            "save_every": None,
        },
    }


def alignkit_child(spec_path: str) -> None:
    """``--child alignkit SPEC``: ``alignkit.algorithms.grpo.run`` in this process; writes ``result.json``."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from alignkit.algorithms.grpo import run
    from alignkit.config.base import load_config
    from alignkit.config.grpo import GRPOConfig

    t0 = time.perf_counter()
    cfg = load_config(GRPOConfig, spec["config_path"])
    run(cfg)
    process_train = time.perf_counter() - t0
    out = Path(spec["output_dir"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r for r in rows if "step_time" in r}
    steps = spec["steps"]
    if sorted(by_step) != list(range(1, steps + 1)):
        raise SystemExit(f"{out}/metrics.jsonl: expected steps 1..{steps} with step_time, got {sorted(by_step)}")
    r = [by_step[s] for s in range(1, steps + 1)]
    rows = spec["prompts_per_step"] * spec["group_size"]
    # a step's tokens: tokens_per_second x step_time = sum over its rows of prompt + response tokens (EOS included)
    tokens = [x["tokens_per_second"] * x["step_time"] for x in r]
    completion = [x["response_length"] * rows for x in r]
    result = {
        "step_seconds": [x["step_time"] for x in r],
        "prompt_tokens": [round(t - c) for t, c in zip(tokens, completion)],
        "completion_tokens": [round(c) for c in completion],
        "generation_seconds": [x.get("generation_time") for x in r],
        "updates": [x.get("updates") for x in r],
        "tokens_per_second_logged": [x.get("tokens_per_second") for x in r],
        "loss": [x.get("loss", float("nan")) for x in r],
        "reward": [x.get("reward", float("nan")) for x in r],
        "run_seconds": process_train,
        "threads": torch.get_num_threads(),
        "metrics_keys": sorted(r[0]),
        **{k: json.loads((out / "summary.json").read_text()).get(k) for k in ("device", "peak_cuda_memory_mib")},
    }
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------ loss check


def sample_rollouts(model, tokenizer, prompt_ids: list[list[int]], group_size: int, max_new_tokens: int, seed: int):
    """G completions per prompt (transformers ``generate``, temperature 1), each cut after its first EOS.

    Returns ``(prompts, completions)``: (P x G,) token-id lists, prompt i's G rows consecutive (TRL's layout).
    """
    import torch

    eos = tokenizer.eos_token_id
    prompts, completions = [], []
    torch.manual_seed(seed)
    for p in prompt_ids:
        x = torch.tensor([p] * group_size)
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row in out[:, len(p) :].tolist():
            completions.append(row[: row.index(eos) + 1] if eos in row else row)
            prompts.append(list(p))
    return prompts, completions


def grad_norm(model) -> float:
    import torch

    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.cat(grads)))


def loss_check_child(spec_path: str) -> None:
    """``--child loss-check SPEC``: the first update's loss on identical rollouts, by TRL and by alignkit."""
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from trl import GRPOTrainer

    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    G, P = spec["group_size"], spec["prompts_per_step"]
    messages = spec["messages"][:P]
    model, tokenizer = load_hf(spec["model_dir"])
    model.eval()
    prompts, completions = sample_rollouts(model, tokenizer, spec["ids"][:P], G, spec["max_new_tokens"], spec["seed"])
    res: dict = {
        "rows": len(completions),
        "completion_tokens": sum(map(len, completions)),
        "ended_with_eos": sum(c[-1] == tokenizer.eos_token_id for c in completions),
    }

    # (i) TRL: its own rollout scoring (rewards, advantages, padding, token count) on these rollouts, then its loss
    def rollout_func(batch_prompts, trainer):
        got = [
            list(trainer.processing_class.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False))
            for m in batch_prompts
        ]
        res["trl_prompt_ids_match"] = got == prompts  # TRL's template gives the ids alignkit's encode_chat gave
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": None}

    trl_model, _ = load_hf(spec["model_dir"])
    trainer = GRPOTrainer(
        model=trl_model,
        reward_funcs=[trl_reward],
        args=trl_config(spec, spec["output_dir"]),
        train_dataset=Dataset.from_list([{"prompt": m} for m in messages]),
        processing_class=tokenizer,
        rollout_func=rollout_func,
    )
    trainer.model.train()
    if not hasattr(trainer, "current_gradient_accumulation_steps"):  # set by Trainer.train's loop
        trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions([{"prompt": m} for m in messages for _ in range(G)])
    res["trl_num_items_in_batch"] = float(inputs["num_items_in_batch"])
    res["trl_has_old_logps"] = inputs.get("old_per_token_logps") is not None  # None: TRL takes the current, detached
    trl_adv = inputs["advantages"].detach().float()

    # (ii) alignkit's pieces, on a fresh copy of the same weights
    from alignkit.algorithms.rollouts import collate_rollout
    from alignkit.losses.grpo import clipped_policy_loss
    from alignkit.models.loading import disable_dropout
    from alignkit.models.logprobs import completion_token_logps
    from alignkit.rl.advantages import group_advantages, per_token
    from alignkit.rl.aggregate import token_mean
    from alignkit.rl.rewards import RewardSource

    ak_model, _ = load_hf(spec["model_dir"])
    ak_model.train()
    disable_dropout(ak_model)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    scores = RewardSource(function=REWARD)([m for m in messages for _ in range(G)], texts)
    adv = group_advantages(torch.tensor(scores, dtype=torch.float32), G, estimator="grpo", scale="group")
    res["advantages_max_abs_diff"] = float((adv - trl_adv).abs().max())
    res["reward_std_zero_groups"] = int((torch.tensor(scores).view(-1, G).std(-1) == 0).sum())
    batch, width = collate_rollout(prompts, completions, pad_token_id=tokenizer.pad_token_id, max_row_tokens=1 << 20)

    # the per-token log-probs of both (TRL's padded forward vs alignkit's packed one), no grad
    cm = inputs["completion_mask"].float()
    with torch.no_grad():
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model,
            torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
            inputs["completion_ids"].size(1),
        )
        ak_logps = completion_token_logps(ak_model, batch, len(completions), width).logps
    if trl_logps.shape != ak_logps.shape:
        raise SystemExit(f"completion layouts differ: TRL {tuple(trl_logps.shape)}, alignkit {tuple(ak_logps.shape)}")
    res["logps_max_abs_diff"] = float(((trl_logps - ak_logps).abs() * cm).max())

    # the same old log-prob shift for both in the second case: ratios exp(+-0.5 x N(0,1)), clipping active
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    shift = 0.5 * torch.randn(trl_logps.shape, generator=g) * cm
    for case, old_shift in (("on_policy", None), ("shifted_old_logps", shift)):
        trainer.model.zero_grad(set_to_none=True)
        trl_in = dict(inputs)
        if old_shift is not None:
            trl_in["old_per_token_logps"] = trl_logps - old_shift
        trl_loss = trainer.compute_loss(trainer.model, trl_in)
        trl_loss.backward()

        ak_model.zero_grad(set_to_none=True)
        tl = completion_token_logps(ak_model, batch, len(completions), width)
        old = tl.logps.detach() if old_shift is None else ak_logps - old_shift
        out = clipped_policy_loss(tl.logps, old, per_token(adv, tl.mask), tl.mask, clip_low=0.2, clip_high=0.2)
        ak_loss = token_mean(out.loss, tl.mask, tl.mask.sum())
        ak_loss.backward()

        gt = [p.grad for p in trainer.model.parameters()]
        ga = [p.grad for p in ak_model.parameters()]
        diff = max(float((x - y).abs().max()) for x, y in zip(gt, ga) if x is not None and y is not None)
        res[case] = {
            "trl_loss": float(trl_loss),
            "alignkit_loss": float(ak_loss),
            "loss_abs_diff": abs(float(trl_loss) - float(ak_loss)),
            "trl_grad_norm": grad_norm(trainer.model),
            "alignkit_grad_norm": grad_norm(ak_model),
            "grad_max_abs_diff": diff,
            "clipped_share": float(((out.clipped_low + out.clipped_high) * tl.mask).sum() / tl.mask.sum()),
            "alignkit_num_tokens": float(tl.mask.sum()),
        }
        r = res[case]
        r["grad_norm_rel_diff"] = abs(r["trl_grad_norm"] - r["alignkit_grad_norm"]) / max(r["trl_grad_norm"], 1e-30)
    res["loss_abs_diff"] = max(res[c]["loss_abs_diff"] for c in ("on_policy", "shifted_old_logps"))
    Path(spec["result"]).write_text(json.dumps(res))


# ------------------------------------------------------------------------------------------ launcher


def child_cmd(kind: str, spec_path: Path) -> list[str]:
    return module_cmd(__spec__.name, "--child", kind, str(spec_path))


def run_framework(a, work: Path, data: dict, name: str) -> dict:
    """Run ``name`` (trl | alignkit) in its own process; its result with peak RSS and process seconds added."""
    import yaml

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = base_spec(a, data) | {"output_dir": str(out), "result": str(work / f"{name}-result.json")}
    if name == "alignkit":
        cfg_path = work / "alignkit-grpo.yaml"
        cfg_path.write_text(yaml.safe_dump(alignkit_config(spec), sort_keys=False))
        spec["config_path"] = str(cfg_path)
    spec_path = work / f"{name}-spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    spec_path.write_text(json.dumps(spec | {"device": a.device, "precision": a.precision}))
    rss, wall = run_child(child_cmd(name, spec_path), env=child_env(a.threads, a.device), log=work / f"{name}.log")
    r = json.loads(Path(spec["result"]).read_text())
    if a.device == "cuda" and not str(r.get("device")).startswith("cuda"):
        raise SystemExit(f"{name}: --device cuda, but it ran on {r.get('device')}")
    r["peak_rss_mib"], r["process_seconds"] = rss, wall
    window = [s - 1 for s in timed_window(a.steps, a.warmup)]
    P, G = a.prompts_per_step, a.group_size
    expected = [G * sum(len(data["ids"][i]) for i in data["order"][k * P : (k + 1) * P]) for k in range(a.steps)]
    r["prompt_tokens_as_planned"] = r["prompt_tokens"] == expected  # the same prompts in every step, for both
    if all(x is not None for x in r["prompt_tokens"] + r["completion_tokens"]):
        tokens = sum(r["prompt_tokens"][i] + r["completion_tokens"][i] for i in window)
        r["timed_seconds"] = sum(r["step_seconds"][i] for i in window)
        r["tokens_per_second"] = tokens / r["timed_seconds"]
        r["mean_completion_tokens"] = sum(r["completion_tokens"]) / (a.steps * a.prompts_per_step * a.group_size)
    else:
        r["tokens_per_second"] = None
        r["note"] = "no per-step prompt_tokens/completion_tokens in metrics.jsonl: tokens/s not computed"
    return r


def base_spec(a, data: dict) -> dict:
    return {
        "model_dir": data["model_dir"],
        "prompts_path": data["prompts_path"],
        "messages": data["messages"],
        "ids": data["ids"],
        "order": data["order"],
        "threads": a.threads,
        "seed": a.seed,
        "steps": a.steps,
        "group_size": a.group_size,
        "prompts_per_step": a.prompts_per_step,
        "max_new_tokens": a.max_new_tokens,
        "max_prompt_tokens": a.max_prompt_tokens,
        "lr": a.lr,
    }


def run_loss_check(a, work: Path, data: dict) -> dict:
    spec = base_spec(a, data) | {"output_dir": str(work / "loss-check"), "result": str(work / "loss-check-result.json")}
    spec_path = work / "loss-check-spec.json"
    spec_path.write_text(json.dumps(spec))
    run_child(child_cmd("loss-check", spec_path), env=child_env(a.threads), log=work / "loss-check.log")
    return json.loads(Path(spec["result"]).read_text())


def report(a, data: dict, res: dict, check: dict | None, launcher_mib: float) -> dict:
    trl, ak = res.get("trl"), res.get("alignkit")
    ratios = {}
    if trl and ak:
        ratios["tokens/s alignkit / TRL"] = ratio(ak.get("tokens_per_second"), trl.get("tokens_per_second"))
        ratios["peak RSS alignkit / TRL"] = ratio(ak["peak_rss_mib"], trl["peak_rss_mib"])
        ratios["peak CUDA memory alignkit / TRL"] = ratio(ak.get("peak_cuda_memory_mib"), trl.get("peak_cuda_memory_mib"))
    mem = "CUDA memory" if a.device == "cuda" else "RSS"  # on a GPU: torch's peak allocation, not the process's RSS
    precision = "float32" if a.precision == "fp32" else "bf16 autocast over float32 weights"
    goals = {}
    if ratios.get("tokens/s alignkit / TRL") is not None:
        goals[f"alignkit tokens/s >= {GOAL_SPEED_RATIO}x TRL"] = ratios["tokens/s alignkit / TRL"] >= GOAL_SPEED_RATIO
    if ratios.get(f"peak {mem} alignkit / TRL") is not None:
        goals[f"alignkit peak {mem} <= {GOAL_MEMORY_RATIO}x TRL"] = ratios[f"peak {mem} alignkit / TRL"] <= GOAL_MEMORY_RATIO
    if check:
        goals[f"first-update loss |alignkit - TRL| <= {LOSS_TOLERANCE:g}"] = check["loss_abs_diff"] <= LOSS_TOLERANCE
    v = versions()
    setup = {
        "model": data["model_dir"],
        "prompts": f"{HELPFUL.relative_to(REPO)}: the first {len(data['ids'])} distinct prompts of <= "
        f"{a.max_prompt_tokens} tokens from its first {data['rows_scanned']} rows ({data['passed_over_long']} longer "
        f"and {data['passed_over_duplicate']} repeated passed over), in file order for TRL",
        "reward": REWARD,
        "group_size": a.group_size,
        "prompts_per_step": a.prompts_per_step,
        "completions_per_step": a.group_size * a.prompts_per_step,
        "max_new_tokens": a.max_new_tokens,
        "steps": a.steps,
        "warmup_steps_excluded": a.warmup,
        "learning_rate": a.lr,
        "threads": a.threads,
        "device": a.device,
        "precision": precision + " (alignkit mixed_precision, TRL bf16); the loss check runs in float32 on CPU",
        "launcher_peak_rss_mib": launcher_mib,
        "host": harness.host(),
        "versions": v,
    }
    doc = {
        "benchmark": "benchmarks/grpo_vs_trl.py",
        "setup": setup,
        "results": res,
        "loss_check": check,
        "ratios": ratios,
        "goals": goals,
    }
    print(
        f"\nGRPO, alignkit vs TRL {v.get('trl', '?')} GRPOTrainer: {a.model or f'llama/{a.size}'}, {a.prompts_per_step} prompts x G "
        f"{a.group_size} per step, <= {a.max_new_tokens} new tokens, {a.steps} steps (first {a.warmup} not timed), "
        f"beta 0, token-mean (dapo) loss, {precision} on {a.device.upper()}, {a.threads} torch threads in every run\n"
    )
    hdr = f"{'run':<10}{'tokens/s':>10}{'s/step':>8}{'peak ' + ('CUDA' if a.device == 'cuda' else 'RSS') + ' MiB':>14}{'compl tok':>11}{'process s':>11}"
    print(hdr + "\n" + "-" * len(hdr))
    for name, r in res.items():
        tps, ts, mct = r.get("tokens_per_second"), r.get("timed_seconds"), r.get("mean_completion_tokens")
        print(
            f"{name:<10}{(f'{tps:,.0f}' if tps else '-'):>10}{(f'{ts / (a.steps - a.warmup):.3f}' if ts else '-'):>8}"
            f"{(r.get('peak_cuda_memory_mib') or float('nan')) if a.device == 'cuda' else r['peak_rss_mib']:>14,.0f}{(f'{mct:.1f}' if mct else '-'):>11}{r['process_seconds']:>11.1f}"
        )
        if not r.get("prompt_tokens_as_planned"):
            print(f"  note {name}: its per-step prompt tokens are not those of alignkit's prompt plan")
        for note in [r.get("note")] if r.get("note") else []:
            print(f"  note {name}: {note}")
    for k, x in ratios.items():
        print(f"ratio {k}: {x:.2f}x" if x is not None else f"ratio {k}: -")
    if check:
        print(
            f"\nloss check, identical rollouts ({check['rows']} completions, {check['completion_tokens']} completion "
            f"tokens, {check['ended_with_eos']} ended with EOS; TRL's prompt ids = alignkit's: "
            f"{check['trl_prompt_ids_match']}): advantages max |diff| {check['advantages_max_abs_diff']:.1e}, "
            f"completion log-probs max |diff| {check['logps_max_abs_diff']:.1e}"
        )
        for case in ("on_policy", "shifted_old_logps"):
            c = check[case]
            print(
                f"  {case:<18} loss TRL {c['trl_loss']:+.8f} alignkit {c['alignkit_loss']:+.8f} |diff| "
                f"{c['loss_abs_diff']:.1e}; grad norm TRL {c['trl_grad_norm']:.6f} alignkit {c['alignkit_grad_norm']:.6f}, "
                f"max |grad diff| {c['grad_max_abs_diff']:.1e}; clipped tokens {c['clipped_share']:.0%}"
            )
    harness.print_goals(goals, 50)
    print(
        "\ntokens/s = (prompt tokens x G + completion tokens) of the timed steps / their wall time. TRL: on_step_begin "
        "-> on_step_end (generation, rewards, advantages, forward/backward, clipping, optimizer step); alignkit: "
        "metrics.jsonl step_time. peak RSS = the run's own process (os.wait4)."
    )
    return doc


def parse_args(argv=None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    p.add_argument(
        "--runs",
        nargs="*",
        choices=["trl", "alignkit"],
        default=["trl", "alignkit"],
        help="which runs (none: the loss check only)",
    )
    p.add_argument("--no-loss-check", action="store_true", help="skip the identical-rollout loss check")
    p.add_argument("--model", default=None, help="a local causal LM directory (default: init_model llama/--size)")
    p.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny", help="init_model size (without --model)")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: GPUs hidden from every run; cuda: both train on the GPU, peak CUDA memory reported (loss check: CPU)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default=None,
        help="fp32, or bf16 autocast over fp32 weights in both frameworks (default: fp32 on cpu, bf16 on cuda)",
    )
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (>= 1)")
    p.add_argument("--group-size", type=int, default=4, help="G: completions per prompt")
    p.add_argument("--prompts-per-step", type=int, default=4, help="prompts per step")
    p.add_argument("--max-new-tokens", type=int, default=32, help="completion tokens at most")
    p.add_argument("--max-prompt-tokens", type=int, default=128, help="only prompts this short (alignkit's data.max_length)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (constant)")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the loss check's sampling seed)")
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS", "2") or 2),
        help="torch threads in every run (default $OMP_NUM_THREADS or 2)",
    )
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "grpo_vs_trl"), help="model, prompts, runs, logs")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "grpo_vs_trl.json"), help="JSON report")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    if a.child:
        return a
    harness.apply_smoke(
        a,
        p,
        {"steps": 2, "warmup": 1, "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4, "max_prompt_tokens": 64},
        name="grpo_vs_trl",
    )
    if not 1 <= a.warmup < a.steps:
        p.error(f"--warmup must be in [1, --steps); got {a.warmup} with --steps {a.steps}")
    if a.group_size < 2:
        p.error("--group-size must be >= 2 (GRPO's group std needs two completions)")
    a.precision = a.precision or ("bf16" if a.device == "cuda" else "fp32")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.prepare:
        prepare_child(a)
        return 0
    if a.child:
        kind, spec = a.child
        {"trl": trl_child, "alignkit": alignkit_child, "loss-check": loss_check_child}[kind](spec)
        return 0
    if a.device == "cuda":  # asked in a child: the launcher stays free of torch (its RSS is every child's floor)
        probe = [sys.executable, "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"]
        if subprocess.run(probe, env=child_env(a.threads, "cuda"), capture_output=True).returncode != 0:
            print("grpo_vs_trl: --device cuda, but torch sees no CUDA GPU here (use --device cpu)", file=sys.stderr)
            return 2
    work = Path(a.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cmd = module_cmd(__spec__.name, "--prepare", "--work-dir", str(work))
    cmd += [
        f"--{k}={getattr(a, k.replace('-', '_'))}"
        for k in ("steps", "warmup", "prompts-per-step", "max-prompt-tokens", "threads", "seed", "size")
    ]
    if a.model:
        cmd.append(f"--model={a.model}")
    run_child(cmd, env=child_env(a.threads), log=work / "prepare.log")
    data = json.loads((work / "data.json").read_text())
    print(
        f"model {data['model_dir']}, {len(data['ids'])} prompts in {data['prompts_path']}: ready in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )

    def describe(name: str, r: dict, seconds: float) -> None:
        if name == "loss-check":
            return
        tps = r.get("tokens_per_second")
        print(
            f"{name}: {f'{tps:,.0f} tokens/s' if tps else 'tokens/s -'}, peak RSS {r['peak_rss_mib']:,.0f} MiB ({seconds:.0f}s)",
            flush=True,
        )

    # one after another; --smoke: up to harness.SMOKE_WORKERS at once (the loss check's figures are not timings)
    jobs = {name: (name, lambda name=name: run_framework(a, work, data, name)) for name in a.runs}
    if not a.no_loss_check:
        jobs["loss-check"] = ("loss-check", lambda: run_loss_check(a, work, data))
    res = harness.run_jobs(jobs, a.smoke, describe)
    check = res.pop("loss-check", None)
    launcher_mib = harness.launcher_peak_rss_mib()
    doc = report(a, data, res, check, launcher_mib)
    for name, r in res.items():
        print(json.dumps({"run": name, "tokens_per_second": r.get("tokens_per_second"), "peak_rss_mib": r["peak_rss_mib"]}))
    harness.write_report(doc, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
