"""Reward model training (``alignkit rm``): Bradley–Terry loss on preference pairs.

The loop, top to bottom: load pairs and the backbone + scalar head -> plan micro-batches -> for each
optimizer step: score chosen and rejected in one forward pass, pairwise loss, global pair-mean
reduction, backward, check the loss is finite, clip, step -> log / evaluate / checkpoint. After the
last step: held-out metrics, reward statistics over the training pairs, ``final/``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import lora_options, optimizer_and_schedule, optimizer_step, run_identity
from alignkit.config.reward import RewardConfig
from alignkit.data.mixture import repeat_by_source
from alignkit.losses.reward import bradley_terry_loss
from alignkit.training import batching
from alignkit.training.errors import stop_if_not_finite
from alignkit.training.metrics import StepSums
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, start_run


@dataclass
class RewardResult:
    output_dir: Path
    final_dir: Path
    steps: int
    train_loss: float  # pair-mean loss of the last step
    eval: dict | None  # held-out metrics (accuracy, n, ties, mean_margin, ece, eval_loss)
    reward_mean: float
    reward_std: float


def load_pairs(source, tokenizer, *, fmt, split, template, max_length, on_error, max_rows, log):
    """Read, convert and tokenise one preference source (or a list of ``DataSource``); reports skipped and
    truncated pairs."""
    from alignkit.data.errors import DataError, report_skipped
    from alignkit.data.formats import load_examples
    from alignkit.data.mixture import describe
    from alignkit.data.pairs import tokenize_pairs

    loaded = load_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    tok = tokenize_pairs(loaded.examples, tokenizer, template=template, max_length=max_length, on_error=on_error)
    skipped = loaded.skipped + tok.skipped
    log(
        f"{describe(source)}: format {loaded.format}, {loaded.rows_read} rows read, {len(skipped)} skipped, "
        f"{tok.truncated} truncated from the left (over {max_length} tokens) -> {len(tok.pairs)} pairs"
    )
    report_skipped(skipped, log)
    if not tok.pairs:
        raise DataError(describe(source), "no usable preference pairs after skipping")
    stats = {
        "rows_read": loaded.rows_read,
        "skipped": len(skipped),
        "truncated": tok.truncated,
        "pairs": len(tok.pairs),
        "format": loaded.format,
    }
    if not isinstance(source, str):
        stats["pairs_by_source"] = dict(Counter(p.subset for p in tok.pairs))
    return tok.pairs, stats, {ex.ref: ex for ex in loaded.examples}


def pair_rewards(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_chosen (B,), r_rejected (B,))`` from one forward pass over the batch's 2B sequences."""
    rewards = model(**batch.model_inputs())  # (2B,)
    return rewards[: batch.num_pairs], rewards[batch.num_pairs :]


@torch.no_grad()
def score_pairs(model, accelerator, pairs, *, batch_size: int, collate) -> tuple[list[float], list[float]]:
    """Chosen and rejected rewards of every pair (sharded across processes, gathered in order)."""
    from accelerate.utils import gather_object

    was_training = model.training
    model.eval()
    rank, world = accelerator.process_index, accelerator.num_processes
    # similar lengths together (less padding); results are put back in the pairs' order
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids)))
    mine: list[tuple[int, float, float]] = []
    for start in range(rank * batch_size, len(order), batch_size * world):
        idx = order[start : start + batch_size]
        batch = collate([pairs[i] for i in idx]).to(accelerator.device)
        with accelerator.autocast():
            rc, rr = pair_rewards(model, batch)
        mine += [(i, c, r) for i, c, r in zip(idx, rc.tolist(), rr.tolist())]
    rows = sorted(gather_object(mine) if world > 1 else mine)
    model.train(was_training)
    return [c for _, c, _ in rows], [r for _, _, r in rows]


def evaluate(model, accelerator, pairs, *, batch_size: int, collate, loss_kw: dict) -> dict:
    """Held-out pairwise metrics plus the mean loss (same loss options as training)."""
    from alignkit.eval.reward_metrics import pairwise_metrics

    chosen, rejected = score_pairs(model, accelerator, pairs, batch_size=batch_size, collate=collate)
    margin = torch.tensor([p.margin for p in pairs]) if loss_kw.get("use_margin") else None
    out = bradley_terry_loss(
        torch.tensor(chosen),
        torch.tensor(rejected),
        margin=margin,
        label_smoothing=loss_kw["label_smoothing"],
        center_coef=loss_kw["center_coef"],
    )
    metrics = pairwise_metrics(chosen, rejected, subsets=[p.subset for p in pairs])
    return {"eval_loss": out.loss.mean().item(), **{f"eval_{k}": v for k, v in metrics.items()}}


def is_head_parameter(name: str) -> bool:
    """The new scalar head: ``head.*`` (mean poolings), ``score.*`` (decoders), ``classifier.*`` (encoders), under any wrapper."""
    return name.startswith("head.") or ".score." in f".{name}" or ".classifier." in f".{name}"


def run(cfg: RewardConfig) -> RewardResult:
    from alignkit.data.pairs import collate_pairs
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import load_tokenizer, lora_keywords, trainable_parameters
    from alignkit.models.reward import RewardSpec, build_reward_scorer, save_reward_model

    quiet_libraries()
    t, m, d = cfg.train, cfg.model, cfg.data
    run = start_run(
        **run_identity(cfg),
        mixed_precision=t.mixed_precision,
        seed=t.seed,
        model_path=m.name_or_path,
        init_spec=m.init,
    )
    accelerator, out, main, log = run.accelerator, run.out, run.main, run.log

    # --- model (its kind decides the pooling and the text template) -------------------------------
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    model = build_reward_scorer(
        m.name_or_path,
        pad_token_id=tokenizer.pad_token_id,
        pooling=m.pooling,
        finetune=m.finetune,
        **lora_keywords(lora_options(m)),
        dtype=m.dtype,
        gradient_checkpointing=m.gradient_checkpointing,
        disable_dropout=m.disable_dropout,
        trust_remote_code=m.trust_remote_code,
        revision=m.revision,
        seed=t.seed,
    )
    kind, pooling = model.kind, model.pooling  # resolved from the backbone ("auto" pooling decided here)
    template = m.template if m.template != "auto" else ("chat" if kind == "decoder" else "plain")
    if template == "chat":
        ensure_chat_template(tokenizer)
    n_train, n_total = trainable_parameters(model)
    log(
        f"reward model on {m.name_or_path} ({kind}, pooling {pooling}, template {template}): "
        f"{n_train:,} trainable of {n_total:,} parameters ({m.finetune})"
    )

    # --- data ---------------------------------------------------------------------------------------
    data_kw = dict(template=template, max_length=d.max_length, on_error=d.on_error, log=log)
    sources = d.train_sources()
    train_pairs, train_stats, train_rows = load_pairs(
        sources, tokenizer, fmt=d.format, split=d.split, max_rows=d.max_rows, **data_kw
    )
    eval_pairs = None
    if d.eval:
        eval_pairs, _, _ = load_pairs(d.eval, tokenizer, fmt=d.format, split=d.eval_split, max_rows=d.eval_rows, **data_kw)
    elif d.eval_fraction > 0:
        train_pairs, eval_pairs = holdout_split(train_pairs, d.eval_fraction, seed=t.seed)
        heldout = out / "heldout.jsonl"
        if main:
            from alignkit.data.pairs import write_preference_jsonl

            write_preference_jsonl([train_rows[p.ref] for p in eval_pairs], heldout)
        log(f"held out {len(eval_pairs)} training pairs for eval (data.eval_fraction={d.eval_fraction}): {heldout}")
    n_read = len(train_pairs)
    train_pairs = repeat_by_source(train_pairs, sources, lambda p: p.ref.source)  # after the hold-out: never trained on
    if len(train_pairs) != n_read:
        log(f"{len(train_pairs)} training pairs after each source's repeat ({n_read} distinct)")
    if pooling == "response_mean":  # a response that cannot be located would be pooled over nothing: an error naming it
        from alignkit.data.pairs import check_responses_located

        check_responses_located(train_pairs + (eval_pairs or []))
    packed = d.packing if d.packing != "auto" else (kind == "decoder" and pooling == "last")
    if packed and (kind != "decoder" or pooling != "last"):
        from alignkit.config.base import ConfigError

        raise ConfigError(f"data.packing needs a decoder backbone with pooling 'last' (this is a {kind}, pooling {pooling})")
    log(f"batches: {'packed (padding-free)' if packed else 'padded'}")
    # packed rows are capped at max_length: on CPU attention is dense, its cost grows with the row length squared
    collate = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id, packed=packed, max_row_tokens=d.max_length)
    loss_kw = {"use_margin": cfg.loss.margin, "label_smoothing": cfg.loss.label_smoothing, "center_coef": cfg.loss.center_coef}

    # --- optimisation -------------------------------------------------------------------------------
    world, rank = accelerator.num_processes, accelerator.process_index
    steps = batching.total_steps(len(train_pairs), t.batch_size, t.grad_accum, world, t.epochs, t.max_steps)
    optimizer, scheduler = optimizer_and_schedule(
        model, t, steps, lr_for=lambda name: cfg.head_learning_rate if is_head_parameter(name) else None
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- resume -------------------------------------------------------------------------------------
    state = run.resume_state(steps)
    start_step, pairs_seen = state.get("step", 0), state.get("pairs_seen", 0)
    metrics = run.open_metrics(tensorboard=cfg.tensorboard, resume_step=start_step)

    def spec(mean: float | None = None, std: float | None = None) -> RewardSpec:
        return RewardSpec(
            kind=kind,
            pooling=pooling,
            template=template,
            max_length=d.max_length,
            reward_mean=mean,
            reward_std=std,
            base_model=m.name_or_path,
        )

    def save(step: int) -> Path:
        state = {"step": step, "pairs_seen": pairs_seen, "total_steps": steps}

        def write_model(path: Path) -> None:
            save_reward_model(accelerator.unwrap_model(model), tokenizer, spec(), path / "model")

        return run.save_checkpoint(step, state, keep=t.save_total_limit, extra=write_model)

    # --- the loop -----------------------------------------------------------------------------------
    model.train()
    plan_kw = dict(num_examples=len(train_pairs), batch_size=t.batch_size, grad_accum=t.grad_accum, world_size=world)
    lengths = [max(len(p.chosen_ids), len(p.rejected_ids)) for p in train_pairs] if t.group_by_length else None
    last: dict = {}
    eval_result = None
    run_eval = partial(
        evaluate, model, accelerator, eval_pairs, batch_size=t.eval_batch_size or t.batch_size, collate=collate, loss_kw=loss_kw
    )
    with training_progress(enabled=main) as progress:
        task = progress.add_task("rm", total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            groups = batching.step_micro_batches(step, rank=rank, seed=t.seed, lengths=lengths, **plan_kw)
            micro = [collate([train_pairs[i] for i in idx]).to(accelerator.device) for idx in groups]
            # Global normaliser: pairs in the whole step, all micro-batches and processes.
            n_pairs = int(accelerator.reduce(torch.tensor(sum(b.num_pairs for b in micro), device=accelerator.device), "sum"))
            sums = StepSums()  # sums over the step's pairs (rewards: both sides), reduced once at the end
            for i, batch in enumerate(micro):
                sync = i == len(micro) - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else nullcontext()
                with ctx, accelerator.autocast():
                    rc, rr = pair_rewards(model, batch)
                    out_loss = bradley_terry_loss(
                        rc,
                        rr,
                        margin=batch.margin if cfg.loss.margin else None,
                        label_smoothing=cfg.loss.label_smoothing,
                        center_coef=cfg.loss.center_coef,
                    )
                    # DDP averages gradients over processes; the global normaliser already divides by all.
                    accelerator.backward(out_loss.loss.sum() / n_pairs * world)
                r = torch.cat([rc, rr]).detach().double()
                sums.add("loss", out_loss.loss)
                sums.add("accuracy", out_loss.accuracy)
                sums.add("margin", out_loss.margin)
                sums.add("reward", r)
                sums.add("reward_sq", r * r)
                sums.add("tokens", torch.tensor(batch.num_tokens, dtype=torch.float64, device=r.device))
            step_sums = sums.reduce(accelerator)
            train_loss = step_sums["loss"] / n_pairs
            stop_if_not_finite(train_loss, step, save)
            grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, t.max_grad_norm)
            pairs_seen += n_pairs
            dt = time.perf_counter() - t0
            done = step + 1
            mean_r = step_sums["reward"] / (2 * n_pairs)
            var_r = max(step_sums["reward_sq"] / (2 * n_pairs) - mean_r**2, 0.0)
            last = {
                "step": done,
                "loss": train_loss,
                "accuracy": step_sums["accuracy"] / n_pairs,
                "margin": step_sums["margin"] / n_pairs,
                "reward_mean": mean_r,
                "reward_std": math.sqrt(var_r),
                "learning_rate": lr,
                "grad_norm": grad_norm,
                "pairs_per_second": n_pairs / dt,
                "tokens_per_second": step_sums["tokens"] / dt,
                "epoch": batching.epoch_of_step(done, **plan_kw),
                "pairs_seen": pairs_seen,
                "train_pairs": len(train_pairs),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            progress.update(
                task, advance=1, stats=f"loss {train_loss:.4f} acc {last['accuracy']:.2f} {n_pairs / dt:,.1f} pairs/s"
            )
            if eval_pairs and t.eval_every and done % t.eval_every == 0 and done != steps:
                eval_result = run_eval()
                metrics.log({"step": done, **eval_result})
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    if eval_pairs:
        eval_result = run_eval()
        metrics.log({"step": steps, **eval_result})
        log(
            f"eval: accuracy {eval_result['eval_accuracy']:.4f} on {eval_result['eval_n']} held-out pairs, "
            f"loss {eval_result['eval_loss']:.4f}, ECE {eval_result['eval_ece']:.4f}"
        )

    # --- reward statistics over the training pairs, for RL normalisation ----------------------------
    stats_pairs = train_pairs[: cfg.stats_rows] if cfg.stats_rows else train_pairs
    chosen, rejected = score_pairs(model, accelerator, stats_pairs, batch_size=t.eval_batch_size or t.batch_size, collate=collate)
    rewards = chosen + rejected
    reward_mean, reward_std = statistics.fmean(rewards), statistics.stdev(rewards)
    log(f"rewards over {len(stats_pairs)} training pairs: mean {reward_mean:.4f}, std {reward_std:.4f}")

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        save_reward_model(accelerator.unwrap_model(model), tokenizer, spec(reward_mean, reward_std), final)
        summary = {
            "stage": "rm",
            "steps": steps,
            "resumed_from_step": start_step,
            "final_loss": last.get("loss"),
            "eval": eval_result,
            "reward_mean": reward_mean,
            "reward_std": reward_std,
            "pairs_seen": pairs_seen,
            "train_pairs": len(train_pairs),
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "data": train_stats,
            "final_dir": str(final),
        }
        run.write_summary(summary)
        log(f"final reward model saved to {final}")
    run.close()
    return RewardResult(out, final, steps, last.get("loss", float("nan")), eval_result, reward_mean, reward_std)
