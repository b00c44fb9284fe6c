"""RLHF with PPO (``alignkit ppo``): sample, score, and improve the policy against a KL-penalised reward.

The loop, top to bottom. For each PPO step:
1. rollout: take the step's prompts, sample a response for each with the KV cache (stop at EOS);
2. score: the reward model (or function) on the decoded text, normalised and clipped; a response that
   ended without EOS can be penalised;
3. with no gradient: the policy's and the reference's log-probs of the response tokens and the value of
   each state, in padding-free forward passes;
4. per-token rewards: -β·KL(π‖π_ref) at every token, plus the score at the last one; GAE advantages and
   returns; advantages whitened;
5. ``ppo.ppo_epochs`` passes over the rollout in shuffled mini-batches: clipped policy loss + vf_coef ×
   clipped value loss - entropy_coef × entropy, a token mean over the mini-batch (all micro-batches and
   processes), backward, clip, step;
6. the KL coefficient is updated (adaptive) and everything is logged; checkpoints hold the whole state.

Every piece of arithmetic is a pure function in :mod:`alignkit.losses.ppo`.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import optimizer_and_schedule
from alignkit.config.ppo import PPOConfig
from alignkit.losses import ppo as P
from alignkit.training import batching
from alignkit.training.checkpoint import save_checkpoint
from alignkit.training.errors import stop_if_not_finite
from alignkit.training.metrics import MetricsLogger, StepSums
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, resume_state, start_run


@dataclass
class PPOResult:
    output_dir: Path
    final_dir: Path
    steps: int
    last: dict  # the last step's metrics


def load_prompts(source: str, tokenizer, *, fmt, split, max_length, on_error, max_rows, log):
    """Prompts of a data source (the part before the completion of each row), as message lists and token ids
    through the chat template with the generation prompt; a prompt over ``max_length`` tokens keeps its end."""
    from alignkit.data.errors import DataError, report_skipped
    from alignkit.data.examples import as_messages
    from alignkit.data.formats import load_examples

    loaded = load_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    report_skipped(loaded.skipped, log)
    messages, ids, truncated = [], [], 0
    for ex in loaded.examples:
        if not ex.prompt:
            raise DataError(ex.ref, "no prompt: PPO needs chat prompts (rows with a prompt or a user turn)", field="prompt")
        m = as_messages(ex.prompt)
        x = list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False))
        if len(x) > max_length:
            x, truncated = x[-max_length:], truncated + 1
        messages.append(m)
        ids.append(x)
    log(
        f"{source}: format {loaded.format}, {loaded.rows_read} rows read, {len(loaded.skipped)} skipped, "
        f"{truncated} prompts cut to their last {max_length} tokens -> {len(ids)} prompts"
    )
    if len(ids) < 2:
        raise DataError(source, f"PPO needs at least 2 prompts, found {len(ids)}")
    stats = {
        "rows_read": loaded.rows_read,
        "skipped": len(loaded.skipped),
        "truncated": truncated,
        "prompts": len(ids),
        "format": loaded.format,
    }
    return messages, ids, stats


def collate_rollout(prompt_ids, response_ids, *, pad_token_id: int, max_row_tokens: int):
    """prompt + response sequences, only the response learned, packed padding-free; ``(batch, width)``."""
    from alignkit.data.collate import collate_packed
    from alignkit.data.tokenize import TokenizedExample

    seqs = [TokenizedExample(list(p) + list(r), [0] * len(p) + [1] * len(r), None) for p, r in zip(prompt_ids, response_ids)]
    width = max(len(r) for r in response_ids)
    return collate_packed(seqs, max_row_tokens=max_row_tokens, pad_token_id=pad_token_id), width


def run(cfg: PPOConfig) -> PPOResult:
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.actor_critic import build_actor_critic, load_reference, parameter_bytes
    from alignkit.models.generation import generate_ids
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import disable_dropout, load_tokenizer, save_model, trainable_parameters
    from alignkit.models.logprobs import completion_token_logps
    from alignkit.rl.rewards import RewardSource

    quiet_libraries()
    t, m, d, g, pc = cfg.train, cfg.model, cfg.data, cfg.generation, cfg.ppo
    accelerator, out, ckpt_root = start_run(
        cfg, mixed_precision=t.mixed_precision, seed=t.seed, model_path=m.name_or_path, init_spec=m.init
    )
    main = accelerator.is_main_process
    log = accelerator.print
    world, rank = accelerator.num_processes, accelerator.process_index

    # --- prompts ------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    ensure_chat_template(tokenizer)
    messages, prompt_ids, data_stats = load_prompts(
        d.train,
        tokenizer,
        fmt=d.format,
        split=d.split,
        max_length=d.max_length,
        on_error=d.on_error,
        max_rows=d.max_rows,
        log=log,
    )
    held_messages, held_ids = [], []
    if d.eval:
        held_messages, held_ids, _ = load_prompts(
            d.eval,
            tokenizer,
            fmt=d.format,
            split=d.eval_split,
            max_length=d.max_length,
            on_error=d.on_error,
            max_rows=d.eval_rows,
            log=log,
        )
    elif d.eval_fraction > 0:
        keep, held = holdout_split(list(range(len(prompt_ids))), d.eval_fraction, seed=t.seed)
        held_messages, held_ids = [messages[i] for i in held], [prompt_ids[i] for i in held]
        messages, prompt_ids = [messages[i] for i in keep], [prompt_ids[i] for i in keep]
    if held_ids and main:
        with open(out / "heldout_prompts.jsonl", "w") as f:
            for msg in held_messages:
                f.write(json.dumps({"prompt": msg}, ensure_ascii=False) + "\n")
        log(f"{len(held_ids)} held-out prompts -> {out / 'heldout_prompts.jsonl'}")

    # --- models -------------------------------------------------------------------------------------
    model_kw = dict(
        dtype=m.dtype, attn_implementation=m.attn_implementation, trust_remote_code=m.trust_remote_code, revision=m.revision
    )
    lora = {"r": m.lora.r, "alpha": m.lora.alpha, "dropout": m.lora.dropout, "target_modules": m.lora.target_modules}
    ac = build_actor_critic(
        m.name_or_path,
        memory=cfg.memory,
        finetune=m.finetune,
        value_init=cfg.value.init,
        reward_path=cfg.reward.model,
        lora=lora,
        model_kw=model_kw,
        seed=t.seed,
    )
    if cfg.value.init == "reward":
        _check_same_vocabulary(tokenizer, cfg.reward.model)
    reference = None
    if cfg.memory == "separate":
        reference = load_reference(m.name_or_path, finetune=m.finetune, model_kw=model_kw, device=accelerator.device)
    if cfg.disable_dropout:
        for module in (ac, reference):
            if module is not None:
                disable_dropout(module)
    reward = RewardSource(
        model_dir=cfg.reward.model,
        function=cfg.reward.function,
        kwargs=cfg.reward.kwargs,
        device=accelerator.device,
        batch_size=cfg.reward.batch_size,
    )
    held_bytes = parameter_bytes(ac, reference, getattr(reward.model, "scorer", None))
    n_train, n_total = trainable_parameters(ac)
    log(
        f"memory {cfg.memory}: {n_train:,} trainable parameters; {held_bytes / 2**20:,.1f} MiB of weights held "
        f"(policy, value, reference{', reward' if reward.model is not None else ''})"
    )

    # --- optimisation -------------------------------------------------------------------------------
    steps = batching.total_steps(len(prompt_ids), pc.rollout_size, 1, world, t.epochs, t.max_steps)
    lr_value = cfg.value.learning_rate
    optimizer, scheduler = optimizer_and_schedule(ac, t, steps, lr_for=lambda n: lr_value if ac.is_value_parameter(n) else None)
    ac, optimizer, scheduler = accelerator.prepare(ac, optimizer, scheduler)
    inner = accelerator.unwrap_model(ac)
    kl_ctl = P.AdaptiveKLController(pc.kl_coef, pc.kl_target, pc.kl_horizon) if pc.kl_target else P.FixedKLController(pc.kl_coef)
    moments = P.RunningMoments()
    state = resume_state(accelerator, ckpt_root, cfg.resume, steps)
    start_step = state.get("step", 0)
    if state:
        kl_ctl.load_state_dict(state["kl_controller"])
        moments.load_state_dict(state["reward_moments"])
    metrics = MetricsLogger(out, enabled=main, tensorboard=cfg.tensorboard, resume_step=start_step)

    def save(step: int) -> Path:
        st = {"step": step, "total_steps": steps, "kl_controller": kl_ctl.state_dict(), "reward_moments": moments.state_dict()}
        return save_checkpoint(
            accelerator,
            ckpt_root,
            step,
            st,
            keep=t.save_total_limit,
            extra=lambda path: save_model(inner.policy, tokenizer, str(path / "model")),
        )

    collate = partial(collate_rollout, pad_token_id=tokenizer.pad_token_id, max_row_tokens=d.max_length + g.max_new_tokens)

    def run_eval() -> dict:
        """Mean raw score of the current policy's answers to the held-out prompts (sampled as in training, fixed seed)."""
        mine = list(range(rank, len(held_ids), world))
        with inner.adapter("default"):
            got = generate_ids(
                inner.policy,
                tokenizer,
                [held_ids[i] for i in mine],
                max_new_tokens=g.max_new_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                seed=t.seed + 17,
                batch_size=pc.rollout_size,
            )
        texts = tokenizer.batch_decode([r for r, _ in got], skip_special_tokens=True)
        scores = reward([held_messages[i] for i in mine], texts) if mine else []
        rows = [(score, len(ids), ended) for score, (ids, ended) in zip(scores, got)]
        if world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        return {
            "eval_reward": sum(r[0] for r in rows) / len(rows),
            "eval_response_length": sum(r[1] for r in rows) / len(rows),
            "eval_no_eos_fraction": 1 - sum(r[2] for r in rows) / len(rows),
            "eval_n": len(rows),
        }

    use_stats = cfg.reward.normalize and reward.stats is not None
    log(
        f"reward: {reward.name}; normalised with "
        + ("its stored mean/std" if use_stats else "running statistics" if cfg.reward.normalize else "nothing (raw scores)")
    )

    # --- the loop -----------------------------------------------------------------------------------
    last: dict = {}
    with training_progress(enabled=main) as progress:
        task = progress.add_task("ppo", total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            idx = batching.step_micro_batches(
                step,
                num_examples=len(prompt_ids),
                batch_size=pc.rollout_size,
                grad_accum=1,
                world_size=world,
                rank=rank,
                seed=t.seed,
            )[0]
            # 1. rollout (seeded per step and process: a resumed run samples the same responses)
            with inner.adapter("default"):
                sampled = generate_ids(
                    inner.policy,
                    tokenizer,
                    [prompt_ids[i] for i in idx],
                    max_new_tokens=g.max_new_tokens,
                    temperature=g.temperature,
                    top_p=g.top_p,
                    seed=t.seed * 1_000_003 + step * 1009 + rank,
                    batch_size=len(idx),
                )
            response_ids = [r if r else [tokenizer.eos_token_id] for r, _ in sampled]
            ended = torch.tensor([e for _, e in sampled], dtype=torch.float32)
            gen_time = time.perf_counter() - t0

            # 2. score
            t1 = time.perf_counter()
            texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
            raw = torch.tensor(reward([messages[i] for i in idx], texts), dtype=torch.float32)
            raw_all = accelerator.gather(raw.to(accelerator.device)).cpu()
            if use_stats:
                score = P.normalize_scores(raw, reward.stats[0], reward.stats[1], cfg.reward.clip)
            elif cfg.reward.normalize:
                moments.update(raw_all)
                std = moments.std if moments.std > 1e-8 else None  # all scores equal so far: centre only
                score = P.normalize_scores(raw, moments.mean, std, cfg.reward.clip)
            else:
                score = P.normalize_scores(raw, None, None, cfg.reward.clip)
            if cfg.reward.missing_eos_penalty:
                score = score - cfg.reward.missing_eos_penalty * (1 - ended)
            score_time = time.perf_counter() - t1

            # 3. old log-probs, reference log-probs, values (no gradient)
            t2 = time.perf_counter()
            p_ids = [prompt_ids[i] for i in idx]
            B = len(idx)
            batch, W = collate(p_ids, response_ids)
            batch = batch.to(accelerator.device)
            with torch.no_grad(), accelerator.autocast():
                inner.eval()
                old = inner(batch, B, W, with_entropy=False, temperature=g.temperature)
                if reference is not None:
                    ref = completion_token_logps(reference, batch, B, W, temperature=g.temperature)
                else:
                    ref = inner.reference_logps(batch, B, W, temperature=g.temperature)
                inner.train()
            mask = old.mask.cpu()
            old_logps, ref_logps, old_values = old.logps.cpu() * mask, ref.logps.cpu() * mask, old.values.cpu() * mask

            # 4. rewards, advantages
            kl = P.kl_penalty(old_logps, ref_logps, pc.kl_estimator) * mask  # (B, W)
            rewards = P.token_rewards(score, kl, mask, kl_ctl.value)
            adv, returns = P.gae(rewards, old_values, mask, pc.gamma, pc.lam)
            if pc.whiten_advantages:
                adv = P.masked_whiten(adv, mask)

            # 5. PPO epochs over shuffled mini-batches
            sums = StepSums()  # token sums over every update of the step, reduced once at the end
            rng = random.Random(t.seed * 7919 + step * 31 + rank)
            grad_norm = None
            for _ in range(pc.ppo_epochs):
                order = list(range(B))
                rng.shuffle(order)
                for mb_start in range(0, B, pc.mini_batch_size):
                    mb = order[mb_start : mb_start + pc.mini_batch_size]
                    n_tok = accelerator.reduce(mask[mb].sum().to(accelerator.device), "sum").item()
                    micro = [mb[k : k + t.batch_size] for k in range(0, len(mb), t.batch_size)]
                    for j, rows in enumerate(micro):
                        mb_batch, w = collate([p_ids[i] for i in rows], [response_ids[i] for i in rows])
                        mb_batch = mb_batch.to(accelerator.device)
                        sel = torch.tensor(rows)
                        mk = mask[sel][:, :w].to(accelerator.device)
                        sync = j == len(micro) - 1
                        ctx = accelerator.no_sync(ac) if not sync and world > 1 else nullcontext()
                        with ctx, accelerator.autocast():
                            new = ac(mb_batch, len(rows), w, entropy_grad=pc.entropy_coef != 0, temperature=g.temperature)
                            pl = P.policy_loss(
                                new.logps, old_logps[sel][:, :w].to(mk.device), adv[sel][:, :w].to(mk.device), mk, pc.clip_range
                            )
                            vl = P.value_loss(
                                new.values,
                                old_values[sel][:, :w].to(mk.device),
                                returns[sel][:, :w].to(mk.device),
                                mk,
                                pc.clip_range_value,
                            )
                            per_tok = pl.loss + pc.vf_coef * vl.loss - pc.entropy_coef * new.entropy
                            loss = (per_tok * mk).sum() / max(n_tok, 1.0)
                            accelerator.backward(loss * world)
                        for name, v in (
                            ("policy_loss", pl.loss),
                            ("value_loss", vl.loss),
                            ("entropy", new.entropy),
                            ("clipfrac", pl.clipfrac),
                            ("value_clipfrac", vl.clipfrac),
                            ("approx_kl", pl.approx_kl),
                        ):
                            sums.add(name, v * mk)
                        sums.add("tokens", mk)
                    if t.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(ac.parameters(), t.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            train_time = time.perf_counter() - t2

            # 6. KL controller, metrics
            kl_seq = accelerator.gather(kl.sum(1).to(accelerator.device)).cpu()  # (B·world,) nats per response
            s = sums.reduce(accelerator)
            stop_if_not_finite(s["policy_loss"] + s["value_loss"], step, save)
            kl_coef_used = kl_ctl.value
            kl_ctl.update(kl_seq.mean().item(), len(kl_seq))
            lengths = accelerator.gather(mask.sum(1).to(accelerator.device)).cpu()
            ended_all = accelerator.gather(ended.to(accelerator.device)).cpu()
            score_all = accelerator.gather(score.to(accelerator.device)).cpu()
            ev = P.explained_variance(old_values, returns, mask)
            dt = time.perf_counter() - t0
            n_tokens_step = sum(len(p) + len(r) for p, r in zip(p_ids, response_ids)) * world
            done = step + 1
            n = max(s["tokens"], 1.0)
            last = {
                "step": done,
                "reward": raw_all.mean().item(),
                "reward_std": raw_all.std().item() if len(raw_all) > 1 else 0.0,
                "reward_normalized": score_all.mean().item(),
                "kl": kl_seq.mean().item(),
                "kl_coef": kl_coef_used,
                "objective": (score_all - kl_coef_used * kl_seq).mean().item(),
                "entropy": s["entropy"] / n,
                "policy_loss": s["policy_loss"] / n,
                "value_loss": s["value_loss"] / n,
                "clipfrac": s["clipfrac"] / n,
                "value_clipfrac": s["value_clipfrac"] / n,
                "approx_kl": s["approx_kl"] / n,
                "explained_variance": ev,
                "response_length": lengths.mean().item(),
                "no_eos_fraction": 1 - ended_all.mean().item(),
                "generation_time": gen_time,
                "scoring_time": score_time,
                "training_time": train_time,
                "step_time": dt,
                "tokens_per_second": n_tokens_step * (pc.ppo_epochs + 2) / dt,
                "learning_rate": lr,
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "epoch": batching.epoch_of_step(
                    done, num_examples=len(prompt_ids), batch_size=pc.rollout_size, grad_accum=1, world_size=world
                ),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            if main and step == start_step:
                log(f"sample: {texts[0][:120]!r} -> reward {raw[0].item():.3f}")
            progress.update(task, advance=1, stats=f"reward {last['reward']:.3f} kl {last['kl']:.2f} {dt:.1f}s/step")
            if held_ids and t.eval_every and done % t.eval_every == 0 and done != steps:
                metrics.log({"step": done, **run_eval()})
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    eval_result = None
    if held_ids:
        eval_result = run_eval()
        metrics.log({"step": steps, **eval_result})
        log(f"eval: mean reward {eval_result['eval_reward']:.4f} on {eval_result['eval_n']} held-out prompts")

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        with inner.adapter("default"):
            policy = inner.policy
            if inner.shared:  # the policy adapter alone, a standard peft adapter directory
                from alignkit.models._fs import atomic_dir

                with atomic_dir(final, overwrite=True) as tmp:
                    policy.save_pretrained(str(tmp), selected_adapters=["default"])
                    tokenizer.save_pretrained(str(tmp))
            else:
                save_model(policy, tokenizer, str(final))
        summary = {
            "stage": "ppo",
            "memory": cfg.memory,
            "steps": steps,
            "resumed_from_step": start_step,
            "last_step": last,
            "eval": eval_result,
            "weights_mib": held_bytes / 2**20,
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "reward": reward.name,
            "data": data_stats,
            "final_dir": str(final),
            "device": str(accelerator.device),
            "peak_cuda_memory_mib": (
                torch.cuda.max_memory_allocated(accelerator.device) / 2**20 if accelerator.device.type == "cuda" else None
            ),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"final policy saved to {final}")
    metrics.close()
    accelerator.end_training()
    return PPOResult(out, final, steps, last)


def _check_same_vocabulary(policy_tokenizer, reward_dir: str) -> None:
    from alignkit.config.base import ConfigError
    from alignkit.models.loading import load_tokenizer

    rt = load_tokenizer(reward_dir)
    probe = "Hello, how are you? 12345"
    if len(rt) != len(policy_tokenizer) or rt(probe)["input_ids"] != policy_tokenizer(probe)["input_ids"]:
        raise ConfigError(f"value.init 'reward': {reward_dir} does not share the policy's tokenizer; use value.init: policy")
