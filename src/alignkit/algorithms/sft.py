"""Supervised fine-tuning (``alignkit sft``): next-token loss on completion tokens.

The loop, top to bottom: load data and model -> plan micro-batches -> for each optimizer step:
forward on completion positions, token NLL, global-token-mean reduction, backward, clip, step ->
log / evaluate / checkpoint. Distributed and mixed precision come from accelerate.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import load_policy, optimizer_and_schedule, optimizer_step, run_identity
from alignkit.config.sft import SFTConfig
from alignkit.data.mixture import repeat_by_source
from alignkit.losses.sft import sft_token_nll
from alignkit.rl.aggregate import token_mean
from alignkit.training import batching
from alignkit.training.errors import stop_if_not_finite
from alignkit.training.flops import shape_or_none, train_flops
from alignkit.training.metrics import Throughput
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, start_run


@dataclass
class SFTResult:
    output_dir: Path
    final_dir: Path
    steps: int
    train_loss: float  # token-mean loss of the last logged step
    eval_loss: float | None


def load_sft_data(source, tokenizer, *, fmt, split, max_length, overlong, train_on_prompt, on_error, max_rows, log):
    """Read, convert and tokenise one SFT data source; reports every skipped, truncated or dropped row."""
    from alignkit.data.errors import report_skipped
    from alignkit.data.formats import load_examples
    from alignkit.data.mixture import describe
    from alignkit.data.tokenize import tokenize_examples

    loaded = load_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    source = describe(source)
    if loaded.format == "prompt_only":
        from alignkit.data.errors import DataError

        raise DataError(source, "prompt-only rows have no completion to learn (they are prompts for ppo or compare)")
    examples = [ex for ex in loaded.examples if ex.meta.get("label", True)]  # unpaired rows: learn the desirable only
    undesirable = len(loaded.examples) - len(examples)
    if undesirable:
        log(f"{source}: {undesirable} rows labelled undesirable (label: false) are not trained on")
    tok = tokenize_examples(examples, tokenizer, max_length=max_length, train_on_prompt=train_on_prompt, overlong=overlong)
    log(
        f"{source}: format {loaded.format}, {loaded.rows_read} rows read, {len(loaded.skipped)} skipped, "
        f"{tok.truncated} truncated, {tok.dropped} dropped (over {max_length} tokens) -> {len(tok.examples)} examples"
    )
    report_skipped(loaded.skipped, log)
    if not tok.examples:
        from alignkit.data.errors import DataError

        raise DataError(source, "no usable examples after skipping, truncation and dropping")
    stats = {
        "rows_read": loaded.rows_read,
        "skipped": len(loaded.skipped),
        "truncated": tok.truncated,
        "dropped": tok.dropped,
        "undesirable": undesirable,
        "examples": len(tok.examples),
        "format": loaded.format,
    }
    return tok.examples, stats


def make_batch(examples, *, packing: bool, pad_token_id: int, max_row_tokens: int | None = None):
    from alignkit.data.collate import collate_packed, collate_padded

    if packing:
        return collate_packed(examples, max_row_tokens=max_row_tokens, pad_token_id=pad_token_id)
    return collate_padded(examples, pad_token_id)


def micro_batch_loss(model, batch, num_tokens_global):
    """Sum of this micro-batch's token NLLs over the step's global token count, and the raw sum."""
    from alignkit.models.logprobs import completion_logits

    logits, targets = completion_logits(model, batch)
    tok = sft_token_nll(logits, targets)
    return token_mean(tok.nll, tok.mask, num_tokens_global), tok.nll.detach().sum()


@torch.no_grad()
def evaluate(model, accelerator, examples, *, batch_size: int, collate) -> dict:
    """Token-mean loss and perplexity over ``examples`` (sharded across processes).

    ``collate(examples) -> Batch`` is the same collation as training (``make_batch`` with its options).
    """
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # [nll sum, tokens]
    rank, world = accelerator.process_index, accelerator.num_processes
    for start in range(rank * batch_size, len(examples), batch_size * world):
        batch = collate(examples[start : start + batch_size]).to(accelerator.device)
        with accelerator.autocast():
            _, nll_sum = micro_batch_loss(model, batch, 1)
        total += torch.tensor([nll_sum.item(), batch.num_loss_tokens], dtype=torch.float64, device=total.device)
    total = accelerator.reduce(total, "sum")
    model.train()
    loss = (total[0] / total[1].clamp(min=1)).item()
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_tokens": int(total[1].item())}


def run(cfg: SFTConfig) -> SFTResult:
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import load_tokenizer, save_model, trainable_parameters

    quiet_libraries()
    t = cfg.train
    run = start_run(
        **run_identity(cfg),
        mixed_precision=t.mixed_precision,
        seed=t.seed,
        model_path=cfg.model.name_or_path,
        init_spec=cfg.model.init,
    )
    accelerator, out, main, log = run.accelerator, run.out, run.main, run.log

    # --- data -------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(cfg.model.name_or_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    ensure_chat_template(tokenizer)
    d = cfg.data
    data_kw = dict(max_length=d.max_length, overlong=d.overlong, train_on_prompt=d.train_on_prompt, on_error=d.on_error, log=log)
    sources = d.train_sources()
    train_examples, train_stats = load_sft_data(sources, tokenizer, fmt=d.format, split=d.split, max_rows=d.max_rows, **data_kw)
    eval_examples = None
    if d.eval:
        eval_examples, _ = load_sft_data(d.eval, tokenizer, fmt=d.format, split=d.eval_split, max_rows=d.eval_rows, **data_kw)
    elif d.val_size > 0:
        train_examples, eval_examples = holdout_split(train_examples, d.val_size, seed=t.seed)
        log(f"held out {len(eval_examples)} training examples for eval (data.val_size={d.val_size})")
    train_examples = repeat_by_source(train_examples, sources, lambda x: x.ref.source)  # after the hold-out
    collate = partial(make_batch, packing=d.packing, pad_token_id=tokenizer.pad_token_id, max_row_tokens=d.max_length)

    # --- model and optimisation -------------------------------------------------------------------
    m = cfg.model
    model = load_policy(m)
    n_train, n_total = trainable_parameters(model)
    log(f"model {m.name_or_path}: {n_train:,} trainable of {n_total:,} parameters ({m.finetune})")
    shape = shape_or_none(model.config, trust_remote_code=m.trust_remote_code, log=log)  # model FLOPs: 6N + attention
    world, rank = accelerator.num_processes, accelerator.process_index
    steps = batching.total_steps(len(train_examples), t.batch_size, t.grad_accum, world, t.epochs, t.max_steps)
    optimizer, scheduler = optimizer_and_schedule(model, t, steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # --- resume -----------------------------------------------------------------------------------
    state = run.resume_state(steps)
    start_step, tokens_seen = state.get("step", 0), state.get("tokens_seen", 0)
    metrics = run.open_metrics(tensorboard=cfg.tensorboard, resume_step=start_step)

    def save(step: int) -> Path:
        state = {"step": step, "tokens_seen": tokens_seen, "total_steps": steps}

        def write_model(path: Path) -> None:
            save_model(accelerator.unwrap_model(model), tokenizer, str(path / "model"))

        return run.save_checkpoint(step, state, keep=t.save_total_limit, extra=write_model)

    # --- the loop ---------------------------------------------------------------------------------
    model.train()
    plan_kw = dict(num_examples=len(train_examples), batch_size=t.batch_size, grad_accum=t.grad_accum, world_size=world)
    lengths = [len(e.input_ids) for e in train_examples] if t.group_by_length else None
    last: dict = {}
    eval_result = None
    throughput = Throughput(t.peak_tflops, devices=world)
    run_eval = partial(evaluate, model, accelerator, eval_examples, batch_size=t.eval_batch_size or t.batch_size, collate=collate)
    with training_progress(enabled=main) as progress:
        task = progress.add_task("sft", total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            groups = batching.step_micro_batches(step, rank=rank, seed=t.seed, lengths=lengths, **plan_kw)
            micro = [collate([train_examples[i] for i in idx]).to(accelerator.device) for idx in groups]
            # Global normaliser: loss tokens of the whole step, all micro-batches and processes.
            lens = [len(train_examples[i].input_ids) for idx in groups for i in idx]
            flops = round(train_flops(shape, lens)) if shape is not None else 0
            counts = torch.tensor(
                [sum(b.num_loss_tokens for b in micro), sum(b.num_tokens for b in micro), flops], device=accelerator.device
            )
            counts = accelerator.reduce(counts, "sum")
            n_loss, n_tokens, flops = int(counts[0]), int(counts[1]), int(counts[2])
            nll_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
            for i, batch in enumerate(micro):
                sync = i == len(micro) - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else nullcontext()
                with ctx, accelerator.autocast():
                    loss, raw = micro_batch_loss(model, batch, max(n_loss, 1))
                    # DDP averages gradients over processes; the global normaliser already divides by all.
                    accelerator.backward(loss * world)
                nll_sum += raw.double()
            nll_sum = accelerator.reduce(nll_sum, "sum")
            train_loss = nll_sum.item() / max(n_loss, 1)
            stop_if_not_finite(train_loss, step, save)
            grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, t.max_grad_norm)
            tokens_seen += n_tokens
            dt = time.perf_counter() - t0
            done = step + 1
            last = {
                "step": done,
                "loss": train_loss,
                "learning_rate": lr,
                "tokens_per_second": n_tokens / dt,
                "grad_norm": grad_norm,
                "epoch": batching.epoch_of_step(done, **plan_kw),
                "loss_tokens": n_loss,
                "tokens": n_tokens,
                "tokens_seen": tokens_seen,
                **(throughput.step(flops, dt) if shape is not None else {}),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            progress.update(task, advance=1, stats=f"loss {train_loss:.4f} lr {lr:.2e} {n_tokens / dt:,.0f} tok/s")
            if eval_examples and t.eval_every and done % t.eval_every == 0 and done != steps:
                eval_result = run_eval()
                metrics.log({"step": done, **eval_result})
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    if eval_examples:
        eval_result = run_eval()
        metrics.log({"step": steps, **eval_result})
        log(f"eval loss {eval_result['eval_loss']:.4f}, perplexity {eval_result['eval_perplexity']:.2f}")

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        save_model(accelerator.unwrap_model(model), tokenizer, str(final))
        summary = {
            "stage": "sft",
            "steps": steps,
            "resumed_from_step": start_step,
            "final_loss": last.get("loss"),
            "eval": eval_result,
            "tokens_seen": tokens_seen,
            "throughput": throughput.summary() if shape is not None else None,
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "data": train_stats,
            "final_dir": str(final),
        }
        run.write_summary(summary)
        log(f"final model saved to {final}")
    run.close()
    return SFTResult(out, final, steps, last.get("loss", float("nan")), eval_result["eval_loss"] if eval_result else None)
