"""Critic-free RL (``alignkit grpo``; ``alignkit rloo``, ``alignkit reinforce-pp``): GRPO, Dr. GRPO, DAPO, RLOO,
REINFORCE++ and GSPO as settings of one loop.

The loop, top to bottom. For each step:
1. rollout: take the next ``grpo.prompts_per_step`` prompts, sample ``grpo.group_size`` responses to each (a
   group), with the KV cache, at the sampling temperature;
2. score: every reward function (and the reward model) on the decoded text, summed with their weights, plus
   DAPO's soft overlong penalty when set. With dynamic sampling, groups whose rewards are all equal (no
   signal) are dropped and more prompts are sampled, up to ``dynamic_sampling.max_rounds`` rounds;
3. with no gradient: the old log-probs (sampling policy, sampling temperature) when an update will be
   off-policy (``num_iterations`` > 1 or several mini-batches), and the reference's when ``kl.coef`` > 0;
4. advantages (``advantage.estimator``): a group baseline (grpo, dr_grpo, rloo) or whitened per-token returns
   (reinforce_pp, reinforce_pp_baseline); the KL enters the reward here when ``kl.placement`` is ``reward``;
5. ``grpo.num_iterations`` passes over the step's responses in mini-batches: the clipped policy loss
   (``loss.clip_low``/``clip_high``, token or sequence ratio), plus β·KL per token when ``kl.placement`` is
   ``loss``, reduced by ``loss.aggregation`` with a normaliser counted over the whole mini-batch (every
   micro-batch and process), backward, clip, step;
6. metrics and checkpoints (the whole state, including the position in the prompt stream).

Every formula is a pure function: advantages and shaping in :mod:`alignkit.rl.advantages`, the loss in
:mod:`alignkit.losses.grpo`, the reductions in :mod:`alignkit.rl.aggregate`, KL in :mod:`alignkit.rl.kl`.
A non-finite loss stops the run before the optimizer step that would apply it. With held-out prompts the
starting policy is evaluated once (step 0), then every ``train.eval_every`` steps and at the end, decoded at
``eval.temperature`` (greedy by default): mean reward per function (exact match, for a verifier) and the
diversity figures of ``alignkit compare``.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import lora_options, model_options, optimizer_and_schedule, run_identity
from alignkit.algorithms.rollouts import collate_rollout, eval_figures, eval_line, load_prompts
from alignkit.config.grpo import GRPOConfig
from alignkit.data.mixture import repeat_by_source
from alignkit.io_atomic import write_jsonl
from alignkit.losses.grpo import clipped_policy_loss
from alignkit.rl.advantages import critic_free_advantages, group_std, overlong_penalty
from alignkit.rl.aggregate import fixed_length_mean, sequence_mean, token_mean
from alignkit.rl.kl import kl_penalty
from alignkit.rl.rollout import Rollout
from alignkit.scoring import Scorer, checked_scores
from alignkit.training import batching
from alignkit.training.checkpoint import latest_checkpoint
from alignkit.training.errors import stop_if_update_not_finite
from alignkit.training.flops import rl_step_flops, shape_or_none
from alignkit.training.metrics import StepSums, Throughput
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, replicas_in_sync, start_run


@dataclass
class GRPOResult:
    output_dir: Path
    final_dir: Path
    steps: int
    last: dict  # the last step's metrics


@dataclass
class RewardTerm:
    """One summand of the reward: ``weight × scorer(prompts, responses[, references])``."""

    name: str
    weight: float
    scorer: Scorer
    takes_references: bool = False


class PromptStream:
    """The training prompts as an endless, seeded sequence: epoch e is a permutation seeded by (seed, e). A
    ``cursor`` counts the prompts consumed by all processes; it is all the state a resumed run needs."""

    def __init__(self, num_prompts: int, seed: int):
        self.n, self.seed, self._orders = num_prompts, seed, {}

    def at(self, position: int) -> int:
        epoch, k = divmod(position, self.n)
        if epoch not in self._orders:
            self._orders = {epoch: batching.epoch_order(self.n, self.seed, epoch)}  # one epoch cached at a time
        return self._orders[epoch][k]

    def take(self, cursor: int, count: int, world: int, rank: int) -> list[int]:
        """This process's ``count`` prompts of the block of ``count × world`` starting at ``cursor``."""
        start = cursor + rank * count
        return [self.at(p) for p in range(start, start + count)]


def reward_terms(cfg: GRPOConfig, device) -> list[RewardTerm]:
    """The reward functions and the reward model of ``cfg.rewards``, loaded."""
    from alignkit.rl.rewards import RewardSource

    terms = []
    for f in cfg.rewards.functions:
        src = RewardSource(function=f.function, kwargs=f.kwargs)
        name = f.name or f.function.rsplit(":", 1)[1]
        terms.append(RewardTerm(name, f.weight, src, src.takes_references))
    if cfg.rewards.model is not None:
        rm = cfg.rewards.model
        src = RewardSource(model_dir=rm.path, device=device, batch_size=rm.batch_size, dtype=rm.dtype)
        terms.append(RewardTerm(rm.name, rm.weight, src))
    names = [t.name for t in terms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        from alignkit.config.base import ConfigError

        raise ConfigError(f"rewards: two reward terms are named {dup[0]!r}; give them distinct `name`s")
    return terms


def run(cfg: GRPOConfig, scorer: Scorer | None = None) -> GRPOResult:
    """Train the policy of ``cfg`` with a critic-free method. ``scorer`` (prompts as chat messages, decoded
    responses -> one finite score each), when given, is the whole reward instead of ``cfg.rewards``' sources
    (the overlong penalty still applies)."""
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.actor_critic import parameter_bytes
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import disable_dropout, load_tokenizer, save_model, trainable_parameters
    from alignkit.models.policy import build_policy
    from alignkit.models.rollout_engine import engine_correction, sample_rollouts, start_engine

    quiet_libraries()
    t, m, d, g, gc = cfg.train, cfg.model, cfg.data, cfg.generation, cfg.grpo
    G, P = gc.group_size, gc.prompts_per_step
    run = start_run(
        **run_identity(cfg), mixed_precision=t.mixed_precision, seed=t.seed, model_path=m.name_or_path, init_spec=m.init
    )
    accelerator, out, main, log = run.accelerator, run.out, run.main, run.log
    world, rank = accelerator.num_processes, accelerator.process_index

    # --- prompts ------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    ensure_chat_template(tokenizer)
    sources = d.train_sources()
    load = partial(load_prompts, tokenizer=tokenizer, fmt=d.format, max_length=d.max_length, on_error=d.on_error, log=log)
    messages, prompt_ids, data_stats, prompt_sources, references = load(sources, split=d.split, max_rows=d.max_rows)
    held_messages, held_ids, held_refs = [], [], []
    if d.eval:
        held_messages, held_ids, _, _, held_refs = load(d.eval, split=d.eval_split, max_rows=d.eval_rows)
    elif d.eval_fraction > 0:
        keep, held = holdout_split(list(range(len(prompt_ids))), d.eval_fraction, seed=t.seed)
        held_messages, held_ids, held_refs = ([x[i] for i in held] for x in (messages, prompt_ids, references))
        messages, prompt_ids, references, prompt_sources = (
            [x[i] for i in keep] for x in (messages, prompt_ids, references, prompt_sources)
        )
    rows = repeat_by_source(list(range(len(prompt_ids))), sources, lambda i: prompt_sources[i])  # after the hold-out
    if len(rows) != len(prompt_ids):
        log(f"{len(rows)} training prompts after each source's repeat ({len(prompt_ids)} distinct)")
        messages, prompt_ids, references = ([x[i] for i in rows] for x in (messages, prompt_ids, references))
    if held_ids and main:
        write_jsonl(out / "heldout_prompts.jsonl", ({"prompt": m, "completion": r} for m, r in zip(held_messages, held_refs)))
        log(f"{len(held_ids)} held-out prompts -> {out / 'heldout_prompts.jsonl'}")

    # --- models and rewards ---------------------------------------------------------------------------
    model_kw, lora = model_options(m), lora_options(m)
    use_ref = cfg.kl.coef > 0
    policy = build_policy(
        m.name_or_path,
        memory=cfg.memory,
        finetune=m.finetune,
        lora=lora,
        model_kw=model_kw,
        with_reference=use_ref,
        device=accelerator.device,
    )
    if cfg.disable_dropout:
        for module in (policy.policy, policy.reference):
            if module is not None:
                disable_dropout(module)
    if m.gradient_checkpointing:
        policy.policy.gradient_checkpointing_enable()
    terms = [RewardTerm("scorer", 1.0, scorer)] if scorer is not None else reward_terms(cfg, accelerator.device)
    reward_models = [getattr(term.scorer, "model", None) for term in terms]
    held_bytes = parameter_bytes(policy.policy, policy.reference, *[getattr(rm, "scorer", None) for rm in reward_models if rm])
    n_train, n_total = trainable_parameters(policy)
    log(
        f"{cfg.advantage.estimator}, G={G}, {P} prompts per step, memory {cfg.memory}: {n_train:,} trainable parameters; "
        f"{held_bytes / 2**20:,.1f} MiB of weights held; reward = "
        + " + ".join(f"{term.weight:g}×{term.name}" for term in terms)
        + (f"; KL β={cfg.kl.coef} ({cfg.kl.estimator}, in the {cfg.kl.placement})" if use_ref else "; no KL term, no reference")
    )

    def score(prompts: list, texts: list[str], refs: list, lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(N,) total rewards and each term's raw (N,) scores (and the overlong penalty, when set)."""
        parts = {}
        total = torch.zeros(len(texts))
        for term in terms:
            raw = term.scorer(prompts, texts, refs) if term.takes_references else term.scorer(prompts, texts)
            s = torch.tensor(checked_scores(raw, len(texts), name=f"reward {term.name}", allow_missing=False))
            parts[term.name] = s
            total += term.weight * s
        if cfg.rewards.overlong_buffer:
            pen = overlong_penalty(lengths, g.max_new_tokens, cfg.rewards.overlong_buffer, cfg.rewards.overlong_penalty)
            parts["overlong_penalty"] = pen
            total += pen
        return total, parts

    # --- optimisation -------------------------------------------------------------------------------
    steps = batching.total_steps(len(prompt_ids), P, 1, world, t.epochs, t.max_steps)
    optimizer, scheduler = optimizer_and_schedule(policy, t, steps)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    inner = accelerator.unwrap_model(policy)
    stream = PromptStream(len(prompt_ids), t.seed)
    state = run.resume_state(steps)
    start_step = state.get("step", 0)
    cursor = state.get("cursor", 0)
    totals = state.get("totals", {"groups_sampled": 0, "groups_dropped": 0, "prompts_used": 0})
    eval_start = state.get("eval_start")
    metrics = run.open_metrics(tensorboard=cfg.tensorboard, resume_step=start_step)
    rows_per_step = P * G
    mini = gc.mini_batch_size or rows_per_step
    on_policy = gc.num_iterations == 1 and mini >= rows_per_step
    collate = partial(collate_rollout, pad_token_id=tokenizer.pad_token_id, max_row_tokens=d.max_length + g.max_new_tokens)
    shape = shape_or_none(inner.policy.config, trust_remote_code=m.trust_remote_code, log=log)  # model FLOPs
    throughput = Throughput(t.peak_tflops, devices=world)
    eval_tokens = cfg.eval.max_new_tokens or g.max_new_tokens

    # --- the rollout engine: the policy itself, or a separate one (vLLM) pushed and verified after every update
    engine, syncer = start_engine(
        g,
        policy=inner.policy,
        tokenizer=tokenizer,
        name_or_path=m.name_or_path,
        dtype=m.dtype,
        seed=t.seed + rank,
        device=accelerator.device,
        batch_size=gc.generation_batch_size or P * G,
        probe_prompts=prompt_ids,
        log=log,
    )

    kl_in_reward = use_ref and cfg.kl.placement == "reward"
    old_pass = not on_policy or kl_in_reward or syncer is not None  # off-policy, the reward's KL, or a separate engine

    def save(step: int, position: tuple[int, dict] | None = None) -> Path:
        """Checkpoint the state after ``step`` steps; ``position``: the prompt stream's (cursor, totals) as they
        were then, when this step has already drawn its prompts."""
        at_cursor, at_totals = position or (cursor, totals)
        st = {"step": step, "total_steps": steps, "cursor": at_cursor, "totals": at_totals, "eval_start": eval_start}
        return run.save_checkpoint(
            step,
            st,
            keep=t.save_total_limit,
            extra=lambda path: save_model(inner.policy, tokenizer, str(path / "model")),
        )

    def run_eval(reference_lengths: list[int] | None) -> tuple[dict, list[int]]:
        """The current policy's answers to the held-out prompts at ``eval.temperature``: the mean of each reward
        term and of the total, length and diversity (length relative to ``reference_lengths``, the starting policy's)."""
        mine = list(range(rank, len(held_ids), world))
        got = sample_rollouts(
            engine,
            [held_ids[i] for i in mine],
            max_new_tokens=eval_tokens,
            temperature=cfg.eval.temperature,
            seed=t.seed + 17,
            batch_size=max(P * G, 8),
        )
        texts = tokenizer.batch_decode([x.ids for x in got], skip_special_tokens=True)
        lengths = torch.tensor([len(x.ids) for x in got], dtype=torch.float32)
        total, parts = score([held_messages[i] for i in mine], texts, [held_refs[i] for i in mine], lengths)
        names = list(parts)
        rows = [
            (total[k].item(), [parts[n][k].item() for n in names], len(x.ids), x.ended, text)
            for k, (x, text) in enumerate(zip(got, texts))
        ]
        if world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        return eval_figures(rows, reference_lengths, names)

    if held_ids and eval_start is None and start_step == 0:
        figures, lengths = run_eval(None)
        figures["eval_length_ratio"] = 1.0 if sum(lengths) else None
        eval_start = {"metrics": figures, "lengths": lengths}
        metrics.log({"step": 0, **figures})
        log(eval_line("eval of the starting policy", figures))
    reference_lengths = eval_start["lengths"] if eval_start else None

    # --- the loop -----------------------------------------------------------------------------------
    last: dict = {}
    with training_progress(enabled=main) as progress:
        task = progress.add_task(cfg.advantage.estimator, total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            position = (cursor, dict(totals))  # the stream before this step: what a checkpoint of `step` steps holds

            # 1-2. sample groups and score them; dynamic sampling drops groups without signal and draws more
            kept: list[tuple] = []  # (prompt, response ids, ended, reward, the engine's log-probs or None) per row
            sampled_total, sampled_parts, sampled_len, sampled_ended, zero_std, n_groups = [], {}, [], [], 0, 0
            sampled_seqs: list[int] = []  # prompt + response length of every sampled row (model FLOPs)
            rounds = 0
            while True:
                idx = stream.take(cursor, P, world, rank)
                rows_prompts = [i for i in idx for _ in range(G)]
                # each generation batch seeded by its first row's place in the whole run's stream of responses:
                # a resumed run, or the same rows split over more processes, samples the same responses
                first_row = (cursor + rank * P) * G
                gen_bs = gc.generation_batch_size or len(rows_prompts)
                got = []
                for c in range(0, len(rows_prompts), gen_bs):
                    got += sample_rollouts(
                        engine,
                        [prompt_ids[i] for i in rows_prompts[c : c + gen_bs]],
                        max_new_tokens=g.max_new_tokens,
                        temperature=g.temperature,
                        seed=t.seed * 1_000_003 + first_row + c,
                        batch_size=gen_bs,
                    )
                cursor += P * world
                resp = [x.ids if x.ids else [tokenizer.eos_token_id] for x in got]
                ended = [x.ended for x in got]
                engine_logps = [x.logps if x.ids else None for x in got]  # an empty answer is trained as EOS
                texts = tokenizer.batch_decode(resp, skip_special_tokens=True)
                lengths = torch.tensor([len(r) for r in resp], dtype=torch.float32)
                sampled_seqs += [len(prompt_ids[i]) + len(r) for i, r in zip(rows_prompts, resp)]
                total, parts = score([messages[i] for i in rows_prompts], texts, [references[i] for i in rows_prompts], lengths)
                stds = group_std(total, G) if G > 1 else None  # answers of one: no group, no spread to measure
                sampled_total.append(total)
                sampled_len.append(lengths)
                sampled_ended.append(torch.tensor(ended, dtype=torch.float32))
                for k, v in parts.items():
                    sampled_parts.setdefault(k, []).append(v)
                zero_std += int((stds == 0).sum()) if stds is not None else 0
                n_groups += P
                for gi in range(P):
                    if stds is not None and cfg.dynamic_sampling.enabled and stds[gi] == 0:
                        continue
                    for r in range(gi * G, (gi + 1) * G):
                        kept.append((rows_prompts[r], resp[r], ended[r], total[r].item(), engine_logps[r]))
                rounds += 1
                if not cfg.dynamic_sampling.enabled:
                    break
                fewest = _reduce_int(accelerator, len(kept) // G, "min")
                if fewest >= P or rounds >= cfg.dynamic_sampling.max_rounds:
                    break
            n_keep = min(P, _reduce_int(accelerator, len(kept) // G, "min")) if cfg.dynamic_sampling.enabled else P
            dropped = _reduce_int(accelerator, n_groups - n_keep, "sum")  # groups sampled and not trained on
            kept = kept[: n_keep * G]
            totals["groups_sampled"] += n_groups * world
            totals["groups_dropped"] += dropped
            totals["prompts_used"] = cursor
            gen_time = time.perf_counter() - t0

            B = len(kept)
            step_metrics: dict = {}
            updates, grad_norm, lr = 0, None, scheduler.get_last_lr()[0]
            sums = StepSums()
            if B == 0:
                log(f"step {step + 1}: every sampled group had equal rewards on some process; no update")
            else:
                # 3. old and reference log-probs (no gradient)
                t2 = time.perf_counter()
                p_ids = [prompt_ids[r[0]] for r in kept]
                response_ids = [r[1] for r in kept]
                ended_t = torch.tensor([float(r[2]) for r in kept])
                scores = torch.tensor([r[3] for r in kept])
                batch, W = collate(p_ids, response_ids)
                batch = batch.to(accelerator.device)
                with torch.no_grad(), accelerator.autocast():
                    mask = _response_mask(response_ids, W)
                    old_logps = torch.zeros(B, W)
                    if old_pass:
                        inner.eval()
                        old_logps = inner(batch, B, W, with_entropy=False, temperature=g.temperature).logps.cpu() * mask
                        inner.train()
                    ref_logps = torch.zeros(B, W)
                    if use_ref:
                        ref_logps = inner.reference_logps(batch, B, W, temperature=g.temperature).logps.cpu() * mask
                kl_seq_est = kl_penalty(old_logps, ref_logps, "k1") * mask if kl_in_reward else None
                tis = torch.ones(B, W)
                if syncer:  # the engine sampled: how far its log-probs are from the trainer's, and TIS if asked
                    tis, figures = engine_correction(old_logps, [r[4] for r in kept], mask, g.tis_cap)
                    step_metrics.update(figures)

                # 4. advantages (over the rows of every process where the estimator needs the whole batch)
                adv, token_r = _advantages(cfg, accelerator, scores, mask, kl_seq_est, G)
                rollout = Rollout(
                    prompt_ids=p_ids,
                    response_ids=response_ids,
                    mask=mask,
                    ended=ended_t,
                    scores=scores,
                    old_logps=old_logps,
                    ref_logps=ref_logps,
                    kl=kl_seq_est if kl_seq_est is not None else torch.zeros(B, W),
                    rewards=token_r,
                    advantages=adv,
                )
                loss_mask = rollout.mask * (rollout.ended.unsqueeze(-1) if cfg.loss.mask_truncated else 1.0)

                # 5. num_iterations passes over mini-batches
                rng = torch.Generator().manual_seed(t.seed * 7919 + step * 31 + rank)
                for _ in range(gc.num_iterations):
                    order = torch.randperm(B, generator=rng).tolist() if not on_policy else list(range(B))
                    for mb_start in range(0, B, mini):
                        mb = order[mb_start : mb_start + mini]
                        norm = _normaliser(cfg, accelerator, loss_mask[mb])
                        micro = [mb[k : k + t.batch_size] for k in range(0, len(mb), t.batch_size)]
                        mb_loss = torch.zeros((), device=accelerator.device)
                        for j, rows_ in enumerate(micro):
                            part = rollout.select(rows_).to(accelerator.device)
                            lm = loss_mask[rows_][:, : part.width].to(accelerator.device)
                            mb_batch, w = collate(part.prompt_ids, part.response_ids)
                            mb_batch = mb_batch.to(accelerator.device)
                            sync = j == len(micro) - 1
                            ctx = accelerator.no_sync(policy) if not sync and world > 1 else nullcontext()
                            with ctx, accelerator.autocast():
                                new = policy(
                                    mb_batch, len(rows_), w, with_entropy=True, entropy_grad=False, temperature=g.temperature
                                )
                                old = part.old_logps if not on_policy else new.logps.detach()
                                pl = clipped_policy_loss(
                                    new.logps, old, part.advantages, lm, cfg.loss.clip_low, cfg.loss.clip_high, cfg.loss.ratio
                                )
                                per_tok = pl.loss * tis[rows_][:, : part.width].to(accelerator.device)
                                if use_ref and cfg.kl.placement == "loss":
                                    kl_tok = kl_penalty(new.logps, part.ref_logps, cfg.kl.estimator) * lm
                                    per_tok = per_tok + cfg.kl.coef * kl_tok
                                    sums.add("kl", kl_tok.detach() * lm)
                                loss = _aggregate(cfg, per_tok, lm, norm, g.max_new_tokens)
                                accelerator.backward(loss * world)
                            mb_loss += loss.detach()
                            sums.add("clip_frac_low", pl.clipped_low)
                            sums.add("clip_frac_high", pl.clipped_high)
                            sums.add("entropy", new.entropy.detach() * lm)
                            sums.add("tokens", lm)
                        stop_if_update_not_finite(
                            accelerator.reduce(mb_loss, "sum").item(),
                            step,
                            updates,
                            partial(save, position=position),
                            partial(latest_checkpoint, run.ckpt_root),
                        )
                        if t.max_grad_norm is not None:
                            grad_norm = accelerator.clip_grad_norm_(policy.parameters(), t.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        updates += 1
                step_metrics["training_time"] = time.perf_counter() - t2
                if syncer:  # the engine gets the updated weights, and the push is verified before the next rollout
                    t3 = time.perf_counter()
                    step_metrics.update(syncer.push(inner.policy))
                    step_metrics["sync_time"] = time.perf_counter() - t3
                if kl_seq_est is not None:
                    step_metrics["kl"] = accelerator.gather(kl_seq_est.sum(1).to(accelerator.device)).mean().item()
            scheduler.step()

            # 6. metrics
            s = sums.reduce(accelerator) if B else {}
            n = max(s.get("tokens", 0.0), 1.0)
            all_total = accelerator.gather(torch.cat(sampled_total).to(accelerator.device)).cpu()
            all_len = accelerator.gather(torch.cat(sampled_len).to(accelerator.device)).cpu()
            all_ended = accelerator.gather(torch.cat(sampled_ended).to(accelerator.device)).cpu()
            dt = time.perf_counter() - t0
            kept_seqs = [len(prompt_ids[r[0]]) + len(r[1]) for r in kept]
            flops = 0.0
            if shape is not None:  # generation, the no-gradient passes (old, reference), num_iterations trained passes
                no_grad = int(B > 0 and old_pass) + int(B > 0 and use_ref)
                flops = rl_step_flops(
                    shape, sampled_seqs, kept_seqs, forward_passes=no_grad, train_passes=gc.num_iterations if B else 0
                )
            n_tok, flops = (
                x.item()
                for x in accelerator.reduce(
                    torch.tensor([float(sum(kept_seqs)), flops], dtype=torch.float64, device=accelerator.device), "sum"
                )
            )
            done = step + 1
            last = {
                "step": done,
                "reward": all_total.mean().item(),
                **{
                    f"reward/{k}": accelerator.gather(torch.cat(v).to(accelerator.device)).mean().item()
                    for k, v in sampled_parts.items()
                },
                "reward_std": all_total.std().item() if len(all_total) > 1 else 0.0,
                "frac_zero_std": _reduce_int(accelerator, zero_std, "sum") / (n_groups * world) if G > 1 else None,
                "groups_trained": n_keep * world,
                "groups_dropped": dropped,
                "sampling_rounds": rounds,
                "entropy": s.get("entropy", 0.0) / n if B else None,
                "clip_frac_low": s.get("clip_frac_low", 0.0) / n if B else None,
                "clip_frac_high": s.get("clip_frac_high", 0.0) / n if B else None,
                "kl": step_metrics.get("kl", s["kl"] / n if "kl" in s else None),
                "response_length": all_len.mean().item(),
                "truncated_share": 1 - all_ended.mean().item(),
                "updates": updates,
                "generation_time": gen_time,
                "training_time": step_metrics.get("training_time", 0.0),
                "step_time": dt,
                "tokens_per_second": n_tok / dt,
                "learning_rate": lr,
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "epoch": cursor / len(prompt_ids),
                **{k: v for k, v in step_metrics.items() if k.startswith(("rollout/", "sync/")) or k == "sync_time"},
                **(throughput.step(flops, dt) if shape is not None else {}),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            if main and step == start_step:
                log(f"sample: {texts[0][:120]!r} -> reward {total[0].item():.3f}")
            progress.update(task, advance=1, stats=f"reward {last['reward']:.3f} {dt:.1f}s/step")
            if held_ids and t.eval_every and done % t.eval_every == 0 and done != steps:
                figures = run_eval(reference_lengths)[0]
                metrics.log({"step": done, **figures})
                log(eval_line(f"eval at step {done}", figures))
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    eval_result = None
    if held_ids:
        eval_result = run_eval(reference_lengths)[0]
        metrics.log({"step": steps, **eval_result})
        log(eval_line("eval", eval_result))

    final = out / "final"
    in_sync = replicas_in_sync(accelerator, policy)  # every process, before the main one saves
    accelerator.wait_for_everyone()
    if main:
        # shared-base: the policy adapter alone, a standard peft adapter directory
        save_model(inner.policy, tokenizer, str(final), adapters=["default"] if inner.shared else None)
        summary = {
            "stage": "grpo",
            "estimator": cfg.advantage.estimator,
            "aggregation": cfg.loss.aggregation,
            "memory": cfg.memory,
            "generation_backend": g.backend,
            "throughput": throughput.summary() if shape is not None else None,
            "weight_pushes": syncer.pushes if syncer else None,
            "steps": steps,
            "resumed_from_step": start_step,
            "last_step": last,
            "eval": eval_result,
            "eval_start": eval_start["metrics"] if eval_start else None,
            "sampling": totals,
            "weights_mib": held_bytes / 2**20,
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "rewards": [{"name": x.name, "weight": x.weight} for x in terms],
            "data": data_stats,
            "final_dir": str(final),
            "replicas_in_sync": in_sync,
        }
        run.write_summary(summary)
        log(f"final policy saved to {final}")
    run.close()
    return GRPOResult(out, final, steps, last)


# --------------------------------------------------------------------------------------------------
# the pieces of a step that depend on the config (the arithmetic itself is in alignkit.rl and alignkit.losses)


def _response_mask(response_ids: list[list[int]], width: int) -> torch.Tensor:
    """(B, W) 1.0 on each response's tokens."""
    lengths = torch.tensor([len(r) for r in response_ids])
    return (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()


def _reduce_int(accelerator, value: int, op: str) -> int:
    if accelerator.num_processes == 1:
        return int(value)
    x = torch.tensor([value], dtype=torch.long, device=accelerator.device)
    if op == "min":
        import torch.distributed as dist

        dist.all_reduce(x, op=dist.ReduceOp.MIN)
        return int(x.item())
    return int(accelerator.reduce(x, "sum").item())


def _advantages(cfg: GRPOConfig, accelerator, scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None, G: int):
    """Per-token advantages (B, W) of this process's rows and the per-token rewards they came from.

    Statistics that span the batch (grpo's batch std, REINFORCE++'s whitening) are taken over every process's
    rows: the tensors are gathered (responses padded to one width), the advantages computed on the whole,
    and this process's rows kept. ``kl``: (B, W) per-token k1 when the KL is placed in the reward, else None."""
    a, beta = cfg.advantage, cfg.kl.coef if kl is not None else 0.0
    world, rank, B = accelerator.num_processes, accelerator.process_index, len(scores)
    if world > 1:
        dev = accelerator.device

        def gather_rows(x: torch.Tensor) -> torch.Tensor:  # (B, W) from every process, padded to one width
            return accelerator.gather(accelerator.pad_across_processes(x.to(dev), dim=1)).cpu()

        scores_all, mask_all = accelerator.gather(scores.to(dev)).cpu(), gather_rows(mask)
        kl_all = gather_rows(kl) if kl is not None else None
    else:
        scores_all, mask_all, kl_all = scores, mask, kl
    adv_all, rewards_all = critic_free_advantages(
        scores_all,
        mask_all,
        estimator=a.estimator,
        group_size=G,
        scale=a.scale,
        kl=kl_all,
        kl_coef=beta,
        gamma=a.gamma,
    )
    keep, W = slice(rank * B, (rank + 1) * B), mask.shape[1]
    return adv_all[keep, :W].contiguous(), rewards_all[keep, :W].contiguous()


def _normaliser(cfg: GRPOConfig, accelerator, loss_mask: torch.Tensor) -> float:
    """The mini-batch's normaliser, counted over every micro-batch and process: its loss tokens (token), its
    responses with a loss token (sequence), or its responses (fixed)."""
    if cfg.loss.aggregation == "token":
        count = loss_mask.sum()
    elif cfg.loss.aggregation == "sequence":
        count = (loss_mask.sum(-1) > 0).float().sum()
    else:
        count = torch.tensor(float(loss_mask.shape[0]))
    return max(accelerator.reduce(count.to(accelerator.device), "sum").item(), 1.0)


def _aggregate(cfg: GRPOConfig, per_token_loss: torch.Tensor, mask: torch.Tensor, norm: float, max_new_tokens: int):
    if cfg.loss.aggregation == "token":
        return token_mean(per_token_loss, mask, norm)
    if cfg.loss.aggregation == "sequence":
        return sequence_mean(per_token_loss, mask, norm)
    return fixed_length_mean(per_token_loss, mask, norm, max_new_tokens)
