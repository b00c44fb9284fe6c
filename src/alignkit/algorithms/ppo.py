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

Steps 1-4 fill one :class:`alignkit.rl.rollout.Rollout` per step; step 5 reads mini-batches of it with
``Rollout.select``. Every piece of arithmetic is a pure function: the losses in :mod:`alignkit.losses.ppo`, the
rest (KL, rewards, GAE, whitening, aggregation) in :mod:`alignkit.rl`. A non-finite loss stops the run before
the optimizer step that would apply it. With held-out prompts the starting policy is evaluated once (step 0),
then every ``train.eval_every`` steps and at the end: mean reward, length, and the diversity figures of
``alignkit compare`` (distinct share, top-answer share, distinct-2, length relative to the starting policy).
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import lora_options, model_options, optimizer_and_schedule, run_identity
from alignkit.algorithms.rollouts import collate_rollout, eval_figures, eval_line, load_prompts  # noqa: F401 (load_prompts: also PPO's API)
from alignkit.config.ppo import PPOConfig
from alignkit.data.mixture import repeat_by_source
from alignkit.io_atomic import write_jsonl
from alignkit.losses.ppo import policy_loss, value_loss
from alignkit.rl.advantages import gae, token_rewards
from alignkit.rl.aggregate import token_mean
from alignkit.rl.kl import AdaptiveKLController, FixedKLController, kl_penalty
from alignkit.rl.rollout import Rollout
from alignkit.rl.stats import RunningMoments, explained_variance, masked_whiten, normalize_scores
from alignkit.scoring import Scorer, checked_scores
from alignkit.training import batching
from alignkit.training.checkpoint import latest_checkpoint
from alignkit.training.errors import stop_if_update_not_finite
from alignkit.training.flops import rl_step_flops, shape_or_none
from alignkit.training.metrics import StepSums, Throughput
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, replicas_in_sync, start_run


@dataclass
class PPOResult:
    output_dir: Path
    final_dir: Path
    steps: int
    last: dict  # the last step's metrics


def run(cfg: PPOConfig, scorer: Scorer | None = None) -> PPOResult:
    """Train the policy of ``cfg`` with PPO. ``scorer`` (prompts as chat messages, decoded responses -> one finite
    score each) replaces the reward source of ``cfg.reward`` when given: the reward model or function named there
    is then not loaded, while ``reward.normalize`` (running statistics), ``clip`` and ``missing_eos_penalty`` apply."""
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.actor_critic import build_actor_critic, load_reference, parameter_bytes
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import disable_dropout, load_tokenizer, save_model, trainable_parameters
    from alignkit.models.logprobs import completion_token_logps
    from alignkit.models.rollout_engine import engine_correction, sample_rollouts, start_engine
    from alignkit.rl.rewards import RewardSource

    quiet_libraries()
    t, m, d, g, pc = cfg.train, cfg.model, cfg.data, cfg.generation, cfg.ppo
    run = start_run(
        **run_identity(cfg), mixed_precision=t.mixed_precision, seed=t.seed, model_path=m.name_or_path, init_spec=m.init
    )
    accelerator, out, main, log = run.accelerator, run.out, run.main, run.log
    world, rank = accelerator.num_processes, accelerator.process_index

    # --- prompts ------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    ensure_chat_template(tokenizer)
    sources = d.train_sources()
    messages, prompt_ids, data_stats, prompt_sources, _ = load_prompts(
        sources,
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
        held_messages, held_ids, *_ = load_prompts(
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
        prompt_sources = [prompt_sources[i] for i in keep]
    train_rows = repeat_by_source(list(range(len(prompt_ids))), sources, lambda i: prompt_sources[i])  # after the hold-out
    if len(train_rows) != len(prompt_ids):
        log(f"{len(train_rows)} training prompts after each source's repeat ({len(prompt_ids)} distinct)")
        messages, prompt_ids = [messages[i] for i in train_rows], [prompt_ids[i] for i in train_rows]
    if held_ids and main:
        write_jsonl(out / "heldout_prompts.jsonl", ({"prompt": msg} for msg in held_messages))
        log(f"{len(held_ids)} held-out prompts -> {out / 'heldout_prompts.jsonl'}")

    # --- models -------------------------------------------------------------------------------------
    model_kw, lora = model_options(m), lora_options(m)
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
    if scorer is None:
        source = RewardSource(
            model_dir=cfg.reward.model,
            function=cfg.reward.function,
            kwargs=cfg.reward.kwargs,
            device=accelerator.device,
            batch_size=cfg.reward.batch_size,
            dtype=cfg.reward.dtype,
        )
        reward_model, reward_stats, reward_name = getattr(source.model, "scorer", None), source.stats, source.name
        scorer = source
    else:
        reward_model, reward_stats = None, None
        reward_name = getattr(scorer, "name", None) or getattr(scorer, "__qualname__", None) or type(scorer).__name__
    held_bytes = parameter_bytes(ac, reference, reward_model)
    n_train, n_total = trainable_parameters(ac)
    log(
        f"memory {cfg.memory}: {n_train:,} trainable parameters; {held_bytes / 2**20:,.1f} MiB of weights held "
        f"(policy, value, reference{', reward' if reward_model is not None else ''})"
    )

    def score_texts(prompts: list, texts: list[str]) -> list[float]:
        """The scorer's scores of ``texts``, checked: one finite number each (a ``ScoreError`` otherwise)."""
        return checked_scores(scorer(prompts, texts), len(texts), name=f"reward source {reward_name}", allow_missing=False)

    # --- optimisation -------------------------------------------------------------------------------
    steps = batching.total_steps(len(prompt_ids), pc.rollout_size, 1, world, t.epochs, t.max_steps)
    lr_value = cfg.value.learning_rate
    optimizer, scheduler = optimizer_and_schedule(ac, t, steps, lr_for=lambda n: lr_value if ac.is_value_parameter(n) else None)
    ac, optimizer, scheduler = accelerator.prepare(ac, optimizer, scheduler)
    inner = accelerator.unwrap_model(ac)
    kl_ctl = AdaptiveKLController(pc.kl_coef, pc.kl_target, pc.kl_horizon) if pc.kl_target else FixedKLController(pc.kl_coef)
    moments = RunningMoments()
    state = run.resume_state(steps)
    start_step = state.get("step", 0)
    eval_start = state.get("eval_start")  # the starting policy's held-out eval: {"metrics": ..., "lengths": [...]}
    if state:
        kl_ctl.load_state_dict(state["kl_controller"])
        moments.load_state_dict(state["reward_moments"])
    metrics = run.open_metrics(tensorboard=cfg.tensorboard, resume_step=start_step)

    def save(step: int, reward_moments: dict | None = None) -> Path:
        """Checkpoint the state after ``step`` steps (``reward_moments``: the statistics as they were then, when
        the current ones already include a later step's scores)."""
        st = {
            "step": step,
            "total_steps": steps,
            "kl_controller": kl_ctl.state_dict(),
            "reward_moments": reward_moments if reward_moments is not None else moments.state_dict(),
            "eval_start": eval_start,
        }
        return run.save_checkpoint(
            step,
            st,
            keep=t.save_total_limit,
            extra=lambda path: save_model(inner.policy, tokenizer, str(path / "model")),
        )

    collate = partial(collate_rollout, pad_token_id=tokenizer.pad_token_id, max_row_tokens=d.max_length + g.max_new_tokens)
    shape = shape_or_none(inner.policy.config, trust_remote_code=m.trust_remote_code, log=log)  # model FLOPs
    throughput = Throughput(t.peak_tflops, devices=world)

    # --- the rollout engine: the policy itself, or a separate one (vLLM) pushed and verified after every update
    with inner.adapter("default"):
        engine, syncer = start_engine(
            g,
            policy=inner.policy,
            tokenizer=tokenizer,
            name_or_path=m.name_or_path,
            dtype=m.dtype,
            seed=t.seed + rank,
            device=accelerator.device,
            batch_size=pc.rollout_size,
            probe_prompts=prompt_ids,
            log=log,
        )

    def run_eval(reference_lengths: list[int] | None) -> tuple[dict, list[int]]:
        """The current policy's answers to the held-out prompts (sampled as in training, fixed seed): their mean raw
        score, length and diversity, the length relative to ``reference_lengths`` (the starting policy's answers to
        the same prompts). Returns the metrics and the answers' lengths in tokens."""
        mine = list(range(rank, len(held_ids), world))
        with inner.adapter("default"):
            got = sample_rollouts(
                engine,
                [held_ids[i] for i in mine],
                max_new_tokens=g.max_new_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                seed=t.seed + 17,
                batch_size=pc.rollout_size,
            )
        texts = tokenizer.batch_decode([x.ids for x in got], skip_special_tokens=True)
        scores = score_texts([held_messages[i] for i in mine], texts) if mine else []
        rows = [(score, [], len(x.ids), x.ended, text) for score, x, text in zip(scores, got, texts)]
        if world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        return eval_figures(rows, reference_lengths)

    use_stats = cfg.reward.normalize and reward_stats is not None
    log(
        f"reward: {reward_name}; normalised with "
        + ("its stored mean/std" if use_stats else "running statistics" if cfg.reward.normalize else "nothing (raw scores)")
    )

    # --- the starting policy on the held-out prompts (the reference of the eval's length ratio) ------------
    if held_ids and eval_start is None and start_step == 0:
        figures, lengths = run_eval(None)
        figures["eval_length_ratio"] = 1.0 if sum(lengths) else None  # the starting policy against itself
        eval_start = {"metrics": figures, "lengths": lengths}
        metrics.log({"step": 0, **figures})
        log(eval_line("eval of the starting policy", figures))
    reference_lengths = eval_start["lengths"] if eval_start else None

    # --- the loop -----------------------------------------------------------------------------------
    last: dict = {}
    with training_progress(enabled=main) as progress:
        task = progress.add_task("ppo", total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            moments_before = moments.state_dict()  # what a checkpoint of the state after `step` steps holds
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
            p_ids = [prompt_ids[i] for i in idx]
            with inner.adapter("default"):
                sampled = sample_rollouts(
                    engine,
                    p_ids,
                    max_new_tokens=g.max_new_tokens,
                    temperature=g.temperature,
                    top_p=g.top_p,
                    seed=t.seed * 1_000_003 + step * 1009 + rank,
                    batch_size=len(idx),
                )
            response_ids = [x.ids if x.ids else [tokenizer.eos_token_id] for x in sampled]
            ended = torch.tensor([x.ended for x in sampled], dtype=torch.float32)
            gen_time = time.perf_counter() - t0

            # 2. score
            t1 = time.perf_counter()
            texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
            raw = torch.tensor(score_texts([messages[i] for i in idx], texts), dtype=torch.float32)
            raw_all = accelerator.gather(raw.to(accelerator.device)).cpu()
            if use_stats:
                score = normalize_scores(raw, reward_stats[0], reward_stats[1], cfg.reward.clip)
            elif cfg.reward.normalize:
                moments.update(raw_all)
                std = moments.std if moments.std > 1e-8 else None  # all scores equal so far: centre only
                score = normalize_scores(raw, moments.mean, std, cfg.reward.clip)
            else:
                score = normalize_scores(raw, None, None, cfg.reward.clip)
            if cfg.reward.missing_eos_penalty:
                score = score - cfg.reward.missing_eos_penalty * (1 - ended)
            score_time = time.perf_counter() - t1

            # 3. old log-probs, reference log-probs, values (no gradient)
            t2 = time.perf_counter()
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
            mask = old.mask.cpu()  # (B, W)
            old_logps, ref_logps, old_values = old.logps.cpu() * mask, ref.logps.cpu() * mask, old.values.cpu() * mask
            tis, engine_figures = torch.ones(B, W), {}
            if syncer:  # the engine sampled: how far its log-probs are from the trainer's, and TIS if asked
                tis, engine_figures = engine_correction(old_logps, [x.logps if x.ids else None for x in sampled], mask, g.tis_cap)

            # 4. rewards, advantages: the step's rollout record
            kl = kl_penalty(old_logps, ref_logps, pc.kl_estimator) * mask  # (B, W)
            rewards = token_rewards(score, kl, mask, kl_ctl.value)
            adv, returns = gae(rewards, old_values, mask, pc.gamma, pc.lam)
            if pc.whiten_advantages:
                adv = masked_whiten(adv, mask)
            rollout = Rollout(
                prompt_ids=p_ids,
                response_ids=response_ids,
                mask=mask,
                ended=ended,
                scores=score,
                old_logps=old_logps,
                ref_logps=ref_logps,
                kl=kl,
                rewards=rewards,
                advantages=adv,
                values=old_values,
                returns=returns,
            )

            # 5. PPO epochs over shuffled mini-batches; a token mean over each mini-batch (all micro-batches, processes)
            sums = StepSums()  # token sums over every update of the step, reduced once at the end
            rng = random.Random(t.seed * 7919 + step * 31 + rank)
            grad_norm = None
            updates = 0
            for _ in range(pc.ppo_epochs):
                order = list(range(B))
                rng.shuffle(order)
                for mb_start in range(0, B, pc.mini_batch_size):
                    mb = order[mb_start : mb_start + pc.mini_batch_size]
                    n_tok = accelerator.reduce(rollout.mask[mb].sum().to(accelerator.device), "sum").item()
                    micro = [mb[k : k + t.batch_size] for k in range(0, len(mb), t.batch_size)]
                    mb_loss = torch.zeros((), device=accelerator.device)
                    for j, rows in enumerate(micro):
                        part = rollout.select(rows).to(accelerator.device)
                        mb_batch, w = collate(part.prompt_ids, part.response_ids)
                        mb_batch = mb_batch.to(accelerator.device)
                        mk = part.mask
                        sync = j == len(micro) - 1
                        ctx = accelerator.no_sync(ac) if not sync and world > 1 else nullcontext()
                        with ctx, accelerator.autocast():
                            new = ac(mb_batch, len(rows), w, entropy_grad=pc.entropy_coef != 0, temperature=g.temperature)
                            pl = policy_loss(new.logps, part.old_logps, part.advantages, mk, pc.clip_range)
                            vl = value_loss(new.values, part.values, part.returns, mk, pc.clip_range_value)
                            pg = pl.loss * tis[rows][:, : part.width].to(accelerator.device)  # TIS: ones unless asked
                            per_tok = pg + pc.vf_coef * vl.loss - pc.entropy_coef * new.entropy
                            loss = token_mean(per_tok, mk, max(n_tok, 1.0))
                            accelerator.backward(loss * world)
                        mb_loss += loss.detach()
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
                    stop_if_update_not_finite(
                        accelerator.reduce(mb_loss, "sum").item(),
                        step,
                        updates,
                        partial(save, reward_moments=moments_before),
                        partial(latest_checkpoint, run.ckpt_root),
                    )
                    if t.max_grad_norm is not None:
                        grad_norm = accelerator.clip_grad_norm_(ac.parameters(), t.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    updates += 1
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            train_time = time.perf_counter() - t2
            if syncer:  # the engine gets the updated policy, and the push is verified before the next rollout
                t3 = time.perf_counter()
                with inner.adapter("default"):
                    engine_figures.update(syncer.push(inner.policy))
                engine_figures["sync_time"] = time.perf_counter() - t3

            # 6. KL controller, metrics
            kl_seq = accelerator.gather(rollout.kl.sum(1).to(accelerator.device)).cpu()  # (B·world,) nats per response
            s = sums.reduce(accelerator)
            kl_coef_used = kl_ctl.value
            kl_ctl.update(kl_seq.mean().item(), len(kl_seq))
            lengths = accelerator.gather(rollout.mask.sum(1).to(accelerator.device)).cpu()
            ended_all = accelerator.gather(rollout.ended.to(accelerator.device)).cpu()
            score_all = accelerator.gather(rollout.scores.to(accelerator.device)).cpu()
            ev = explained_variance(rollout.values, rollout.returns, rollout.mask)
            dt = time.perf_counter() - t0
            seqs = [len(p) + len(r) for p, r in zip(p_ids, response_ids)]
            n_tokens_step = sum(seqs) * world
            # generation; old log-probs, values and reference (3 no-gradient passes); ppo_epochs × (policy + value)
            flops = (
                rl_step_flops(shape, seqs, seqs, forward_passes=3, train_passes=2 * pc.ppo_epochs) if shape is not None else 0.0
            )
            flops = accelerator.reduce(torch.tensor(flops, dtype=torch.float64, device=accelerator.device), "sum").item()
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
                **engine_figures,
                **(throughput.step(flops, dt) if shape is not None else {}),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            if main and step == start_step:
                log(f"sample: {texts[0][:120]!r} -> reward {raw[0].item():.3f}")
            progress.update(task, advance=1, stats=f"reward {last['reward']:.3f} kl {last['kl']:.2f} {dt:.1f}s/step")
            if held_ids and t.eval_every and done % t.eval_every == 0 and done != steps:
                metrics.log({"step": done, **run_eval(reference_lengths)[0]})
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    eval_result = None
    if held_ids:
        eval_result = run_eval(reference_lengths)[0]
        metrics.log({"step": steps, **eval_result})
        log(eval_line("eval", eval_result))

    final = out / "final"
    in_sync = replicas_in_sync(accelerator, ac)  # every process, before the main one saves
    accelerator.wait_for_everyone()
    if main:
        with inner.adapter("default"):  # shared-base: the policy adapter alone, a standard peft adapter directory
            save_model(inner.policy, tokenizer, str(final), adapters=["default"] if inner.shared else None)
        summary = {
            "stage": "ppo",
            "memory": cfg.memory,
            "generation_backend": g.backend,
            "throughput": throughput.summary() if shape is not None else None,
            "weight_pushes": syncer.pushes if syncer else None,
            "steps": steps,
            "resumed_from_step": start_step,
            "last_step": last,
            "eval": eval_result,
            "eval_start": eval_start["metrics"] if eval_start else None,
            "weights_mib": held_bytes / 2**20,
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "reward": reward_name,
            "data": data_stats,
            "final_dir": str(final),
            "replicas_in_sync": in_sync,
        }
        run.write_summary(summary)
        log(f"final policy saved to {final}")
    run.close()
    return PPOResult(out, final, steps, last)


def _check_same_vocabulary(policy_tokenizer, reward_dir: str) -> None:
    from alignkit.config.base import ConfigError
    from alignkit.models.loading import load_tokenizer

    rt = load_tokenizer(reward_dir)
    probe = "Hello, how are you? 12345"
    if len(rt) != len(policy_tokenizer) or rt(probe)["input_ids"] != policy_tokenizer(probe)["input_ids"]:
        raise ConfigError(f"value.init 'reward': {reward_dir} does not share the policy's tokenizer; use value.init: policy")
