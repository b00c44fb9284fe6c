"""Direct preference optimisation (``alignkit dpo``; ``alignkit orpo|simpo|kto`` preset the loss).

The loop, top to bottom: load pairs (unpaired rows for KTO) and the policy -> set up the reference
(a frozen copy, the same base with the LoRA adapter switched off, or log-probs precomputed once and
cached on disk) -> plan micro-batches -> for each optimizer step: [KTO: estimate KL(π‖π_ref) on the
step's mismatched completions] -> for each micro-batch: chosen and rejected sequences in one forward
pass (padding-free when packed), completion log-probs, reference log-probs, the loss, global
per-pair mean, backward -> check the loss is finite, clip, step -> log / evaluate / checkpoint ->
``final/``.

Which log-probability each loss reads is decided in :func:`unit_losses`, in one place: sums over the
completion's tokens for DPO/IPO/hinge/robust and KTO, per-token means for SimPO and ORPO.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from alignkit.algorithms.common import load_policy, model_options, optimizer_and_schedule, optimizer_step, run_identity
from alignkit.config.dpo import DPOConfig
from alignkit.data.mixture import repeat_by_source
from alignkit.io_atomic import atomic_file
from alignkit.losses.preference import DPO_LOSS_TYPES, dpo_loss, kto_loss, orpo_loss, simpo_loss
from alignkit.models.logprobs import SequenceLogps, sequence_logps
from alignkit.training import batching
from alignkit.training.errors import stop_if_not_finite
from alignkit.training.flops import forward_flops, shape_or_none, train_flops
from alignkit.training.metrics import StepSums, Throughput
from alignkit.training.progress import training_progress
from alignkit.training.setup import holdout_split, start_run


@dataclass
class DPOResult:
    output_dir: Path
    final_dir: Path
    steps: int
    train_loss: float  # pair-mean (KTO: row-mean) loss of the last step
    eval: dict | None  # held-out metrics


# ----------------------------------------------------------------------------------------------- data


def load_units(source, tokenizer, *, kto: bool, seed: int, fmt, split, max_length, on_error, max_rows, log):
    """Read and tokenize one source: pairs, or for KTO unpaired rows (pairs are unpaired: chosen -> desirable,
    rejected -> undesirable). Returns ``(SequenceSet, stats, {row ref: Example})``."""
    from alignkit.data.errors import DataError, report_skipped
    from alignkit.data.formats import load_examples
    from alignkit.data.mixture import describe
    from alignkit.data.preference import tokenize_pairs_for_policy, tokenize_unpaired, unpair

    loaded = load_examples(source, fmt=fmt, split=split, on_error=on_error, max_rows=max_rows)
    source = describe(source)
    examples = loaded.examples
    paired = bool(examples) and all(ex.is_preference for ex in examples)
    if kto:
        if paired:
            examples = unpair(examples, on_error=on_error, skipped=loaded.skipped)
            log(f"{source}: {len(loaded.examples)} preference pairs unpaired into {len(examples)} KTO rows")
        data = tokenize_unpaired(examples, tokenizer, max_length=max_length, seed=seed, on_error=on_error)
    else:
        if not paired:
            raise DataError(
                source,
                f"format {loaded.format}: this loss needs preference pairs (prompt, chosen, rejected); "
                "unpaired rows {prompt, completion, label} are for loss kto",
            )
        data = tokenize_pairs_for_policy(examples, tokenizer, max_length=max_length, on_error=on_error)
    skipped = loaded.skipped + data.skipped
    unit = "rows" if kto else "pairs"
    log(
        f"{source}: format {loaded.format}, {loaded.rows_read} rows read, {len(skipped)} skipped, "
        f"{data.truncated} {unit} cut at max_length={max_length} -> {len(data)} {unit}"
    )
    report_skipped(skipped, log)
    if len(data) < (2 if kto else 1):
        raise DataError(source, f"not enough usable {unit} after skipping ({len(data)})")
    stats = {
        "rows_read": loaded.rows_read,
        "skipped": len(skipped),
        "truncated": data.truncated,
        unit: len(data),
        "format": loaded.format,
    }
    if kto:
        stats["desirable"] = sum(data.desirable)
    return data, stats, {ex.ref: ex for ex in loaded.examples}


def collate_sequences(data, seq_ids: list[int], *, pad_token_id: int, packed: bool, max_row_tokens: int):
    """The sequences ``seq_ids`` of ``data`` as one batch (``example_index`` numbers them 0..len-1 in order)."""
    from alignkit.data.collate import collate_packed, collate_padded

    seqs = [data.sequences[i] for i in seq_ids]
    if packed:
        return collate_packed(seqs, max_row_tokens=max_row_tokens, pad_token_id=pad_token_id)
    return collate_padded(seqs, pad_token_id)


# ----------------------------------------------------------------------------------------- reference


class Reference:
    """Reference log-probs of sequences, from one of three sources (the same numbers from each):

    - ``model``: a frozen copy (full fine-tuning, or ``ref.model``);
    - ``adapter_of``: the policy itself with its LoRA adapter disabled (no second copy);
    - ``tables``: precomputed per-sequence values, ``{"train": SequenceLogps, "eval": ...}`` indexed by sequence id.
    """

    def __init__(self, *, model=None, adapter_of=None, tables: dict[str, SequenceLogps] | None = None):
        self.model, self.adapter_of, self.tables = model, adapter_of, tables

    @torch.no_grad()
    def logps(self, batch, seq_ids: list[int], split: str = "train") -> SequenceLogps:
        if self.tables is not None:
            t = self.tables[split]
            idx = torch.tensor(seq_ids, dtype=torch.long)
            return SequenceLogps(t.sum[idx].to(batch.input_ids.device), t.tokens[idx].to(batch.input_ids.device))
        if self.adapter_of is not None:
            return adapter_off_logps(self.adapter_of, batch, len(seq_ids))
        return sequence_logps(self.model, batch, len(seq_ids))


@torch.no_grad()
def adapter_off_logps(peft_model, batch, n: int) -> SequenceLogps:
    """``sequence_logps`` of the base under a PEFT model: adapters disabled, eval mode (no dropout)."""
    was_training = peft_model.training
    peft_model.eval()
    try:
        with peft_model.disable_adapter():
            return sequence_logps(peft_model, batch, n)
    finally:
        peft_model.train(was_training)


@torch.no_grad()
def all_logps(logps_fn, data, accelerator, *, batch_size: int, collate) -> SequenceLogps:
    """``logps_fn(batch, seq_ids)`` for every sequence of ``data`` (sharded over processes, gathered in order)."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    order = sorted(range(len(data.sequences)), key=lambda i: len(data.sequences[i].input_ids))
    mine: list[tuple[int, float, float]] = []
    for start in range(rank * batch_size, len(order), batch_size * world):
        ids = order[start : start + batch_size]
        batch = collate(data, ids).to(accelerator.device)
        with accelerator.autocast():
            out = logps_fn(batch, ids)
        mine += list(zip(ids, out.sum.tolist(), out.tokens.tolist()))
    rows = sorted(gather_object(mine) if world > 1 else mine)
    return SequenceLogps(torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]))


def cached_reference(logps_fn, datasets: dict, accelerator, *, cache_dir: Path, ref_name: str, batch_size: int, collate, log):
    """Reference log-probs of every sequence of each ``datasets[split]``, from ``cache_dir/<split>.safetensors`` when
    it was made for the same sequences and reference, else computed now (``logps_fn``) and written atomically."""
    from safetensors.torch import load_file, save_file

    tables = {}
    for split, data in datasets.items():
        path = cache_dir / f"{split}.safetensors"
        key = f"{ref_name}|{data.fingerprint()}"
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    t = load_file(str(path))
                    tables[split] = SequenceLogps(t["sum"], t["tokens"])
                    log(f"reference log-probs ({split}): {len(data.sequences)} sequences from {path}")
                    continue
        t0 = time.perf_counter()
        tables[split] = all_logps(logps_fn, data, accelerator, batch_size=batch_size, collate=collate)
        if accelerator.is_main_process:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                save_file(
                    {"sum": tables[split].sum.contiguous(), "tokens": tables[split].tokens.contiguous()},
                    str(tmp),
                    metadata={"key": key},
                )
        accelerator.wait_for_everyone()
        log(
            f"reference log-probs ({split}): {len(data.sequences)} sequences computed in {time.perf_counter() - t0:.1f}s -> {path}"
        )
    return tables


# ---------------------------------------------------------------------------------------------- loss


def unit_losses(loss_cfg, policy: tuple, ref: tuple | None, *, desirable=None, kl=None, nll_scale=None):
    """Per-unit losses and metrics for one micro-batch.

    ``policy``/``ref``: ``(first, second)`` SequenceLogps — chosen and rejected of each pair, or (KTO)
    the row's completion and nothing. Returns ``(loss (B,), {metric name: (B,) values})``; the metrics
    are summed over units and divided by the step's unit count when logged. ``nll_scale`` (ORPO with
    ``nll: token``): pairs / chosen tokens of the whole step, making the SFT term a token mean.
    """
    t = loss_cfg.type
    pc = policy[0]
    if t == "kto":
        out = kto_loss(
            pc.sum,
            ref[0].sum,
            desirable,
            kl,
            beta=loss_cfg.beta,
            desirable_weight=loss_cfg.desirable_weight,
            undesirable_weight=loss_cfg.undesirable_weight,
        )
        good = desirable.float()
        correct = torch.where(desirable.bool(), out.rewards > loss_cfg.beta * out.kl, out.rewards < loss_cfg.beta * out.kl)
        return out.loss, {
            "rewards/chosen_sum": out.rewards * good,
            "rewards/rejected_sum": out.rewards * (1 - good),
            "logps/chosen_sum": pc.sum.detach() * good,
            "logps/rejected_sum": pc.sum.detach() * (1 - good),
            "count/chosen": good,
            "count/rejected": 1 - good,
            "rewards/accuracy": correct.float(),
        }
    pr = policy[1]
    extra = {}
    if t in DPO_LOSS_TYPES:  # sums over completion tokens (DPO eq. 7 and relatives)
        out = dpo_loss(
            pc.sum,
            pr.sum,
            ref[0].sum,
            ref[1].sum,
            beta=loss_cfg.beta,
            loss_type=t,
            label_smoothing=getattr(loss_cfg, "label_smoothing", 0.0),
        )
        loss, rc, rr = out.loss, out.chosen_rewards, out.rejected_rewards
    elif t == "simpo":  # per-token means (SimPO eq. 6)
        out = simpo_loss(pc.mean, pr.mean, beta=loss_cfg.beta, gamma=loss_cfg.gamma, label_smoothing=loss_cfg.label_smoothing)
        loss, rc, rr = out.loss, out.chosen_rewards, out.rejected_rewards
    elif t == "orpo":  # per-token means in the odds; the SFT term by loss_cfg.nll
        nll = -pc.mean if loss_cfg.nll == "sequence" else -pc.sum * nll_scale
        out = orpo_loss(pc.mean, pr.mean, nll, lam=loss_cfg.lam)
        loss, rc, rr = out.loss, out.chosen_rewards, out.rejected_rewards
        extra = {"nll": out.nll.detach(), "log_odds_ratio": out.log_odds_ratio}
    else:
        raise ValueError(f"unknown loss type {t!r}")
    margin = rc - rr
    return loss, {
        "rewards/chosen": rc,
        "rewards/rejected": rr,
        "rewards/margins": margin,
        "rewards/accuracy": (margin > 0).float() + 0.5 * (margin == 0).float(),
        "logps/chosen": pc.sum.detach(),
        "logps/rejected": pr.sum.detach(),
        **extra,
    }


def summarise(sums: dict[str, float], n_units: int, prefix: str = "") -> dict[str, float]:
    """Step sums -> logged means. KTO's per-label sums become means over that label's rows."""
    out = {}
    for k, v in sums.items():
        if k.startswith("count/"):
            continue
        if k.endswith("_sum"):  # KTO: per-label mean
            label = k.split("/")[1].removesuffix("_sum")
            n = sums[f"count/{label}"]
            out[prefix + k.removesuffix("_sum")] = v / n if n else float("nan")
        else:
            out[prefix + k] = v / n_units
    if "rewards/margins" not in sums and "rewards/chosen_sum" in sums:
        out[prefix + "rewards/margins"] = out[prefix + "rewards/chosen"] - out[prefix + "rewards/rejected"]
    return out


def kl_estimate(model, reference, data, groups, *, collate, accelerator) -> tuple[torch.Tensor, int]:
    """KTO's reference point: mean of log π(y') - log π_ref(y') over the step's KL-partner sequences, all
    micro-batches and processes (no gradient). Returns ``(z0 (), sequences counted)``."""
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # [log-ratio sum, count]
    with torch.no_grad():
        for idx in groups:
            ids = [data.second[u] for u in idx]
            batch = collate(data, ids).to(accelerator.device)
            with accelerator.autocast():
                pol = sequence_logps(model, batch, len(ids))
                ref = reference.logps(batch, ids)
            total += torch.stack(
                [(pol.sum - ref.sum).double().sum(), torch.tensor(len(ids), dtype=torch.float64, device=total.device)]
            )
    total = accelerator.reduce(total, "sum")
    return (total[0] / total[1].clamp(min=1)).float(), int(total[1].item())


@torch.no_grad()
def evaluate(model, accelerator, data, *, loss_cfg, reference, batch_size: int, collate) -> dict:
    """Held-out loss and metrics: every sequence's policy (and reference) log-probs, then the same loss as
    training over the whole set (KTO's KL point from the set's KL partners; ORPO's token mean over the set)."""
    was_training = model.training
    model.eval()
    pol = all_logps(lambda b, ids: sequence_logps(model, b, len(ids)), data, accelerator, batch_size=batch_size, collate=collate)
    ref = None
    if reference is not None:
        ref = all_logps(lambda b, ids: reference.logps(b, ids, "eval"), data, accelerator, batch_size=batch_size, collate=collate)
    model.train(was_training)

    def pick(table, ids):
        return SequenceLogps(table.sum[ids], table.tokens[ids])

    first, second = torch.tensor(data.first), torch.tensor(data.second)
    sums = StepSums()
    if loss_cfg.type == "kto":
        kl = (pick(pol, second).sum - pick(ref, second).sum).mean()
        loss, parts = unit_losses(
            loss_cfg, (pick(pol, first),), (pick(ref, first),), desirable=torch.tensor(data.desirable), kl=kl
        )
        parts["kl"] = kl.expand(len(data))
    else:
        scale = len(data) / float(pick(pol, first).tokens.sum())
        loss, parts = unit_losses(
            loss_cfg,
            (pick(pol, first), pick(pol, second)),
            None if ref is None else (pick(ref, first), pick(ref, second)),
            nll_scale=scale,
        )
    sums.add("loss", loss)
    for k, v in parts.items():
        sums.add(k, v)
    return {**summarise({k: v.item() for k, v in sums.values.items()}, len(data), prefix="eval_"), "eval_n": len(data)}


# ---------------------------------------------------------------------------------------------- run


def run(cfg: DPOConfig) -> DPOResult:
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.models.loading import (
        disable_dropout,
        is_adapter_dir,
        load_causal_lm,
        load_tokenizer,
        resolve_source,
        save_model,
        trainable_parameters,
    )

    quiet_libraries()
    t, m, d, L = cfg.train, cfg.model, cfg.data, cfg.loss
    kto = L.type == "kto"
    run = start_run(
        **run_identity(cfg),
        mixed_precision=t.mixed_precision,
        seed=t.seed,
        model_path=m.name_or_path,
        init_spec=m.init,
    )
    accelerator, out, main, log = run.accelerator, run.out, run.main, run.log

    # --- data ---------------------------------------------------------------------------------------
    tokenizer = load_tokenizer(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    ensure_chat_template(tokenizer)
    data_kw = dict(kto=kto, seed=t.seed, max_length=d.max_length, on_error=d.on_error, log=log)
    sources = d.train_sources()
    train, train_stats, train_rows = load_units(sources, tokenizer, fmt=d.format, split=d.split, max_rows=d.max_rows, **data_kw)
    held = None
    if d.eval:
        held, _, _ = load_units(d.eval, tokenizer, fmt=d.format, split=d.eval_split, max_rows=d.eval_rows, **data_kw)
    elif d.eval_fraction > 0:
        keep, hold = holdout_split(list(range(len(train))), d.eval_fraction, seed=t.seed)
        train, held = train.subset(keep), train.subset(hold)
        log(f"held out {len(held)} training {'rows' if kto else 'pairs'} for eval (data.eval_fraction={d.eval_fraction})")
        if main and not kto:
            from alignkit.data.pairs import write_preference_jsonl

            write_preference_jsonl([train_rows[r] for r in held.refs], out / "heldout.jsonl")
    if not isinstance(sources, str):  # each source's repeat, after the hold-out
        train = train.subset(repeat_by_source(list(range(len(train))), sources, lambda i: train.refs[i].source))
    collate = partial(collate_sequences, pad_token_id=tokenizer.pad_token_id, packed=d.packing, max_row_tokens=d.max_length)
    log(f"batches: {'packed (padding-free)' if d.packing else 'padded'}")

    # --- policy ------------------------------------------------------------------------------------
    model = load_policy(m)
    if cfg.disable_dropout:
        disable_dropout(model)
    n_train, n_total = trainable_parameters(model)
    log(f"policy {m.name_or_path}: {n_train:,} trainable of {n_total:,} parameters ({m.finetune}); loss {L.type}")
    shape = shape_or_none(model.config, trust_remote_code=m.trust_remote_code, log=log)  # model FLOPs: 6N + attention

    # --- reference: who computes it (the cache, if asked for, is filled after resume below) ------------
    lora = m.finetune in ("lora", "qlora")
    ref_source = cfg.ref.model or m.name_or_path
    adapter_ref = cfg.uses_reference and lora and cfg.ref.model is None and not is_adapter_dir(resolve_source(m.name_or_path))
    ref_model = None

    def load_ref_copy():
        r = load_causal_lm(ref_source, finetune="none", **model_options(m)).to(accelerator.device)
        disable_dropout(r)
        return r

    if cfg.uses_reference and not adapter_ref and not cfg.ref.precompute:
        ref_model = load_ref_copy()
    ref_what = (
        "none (reference-free loss)"
        if not cfg.uses_reference
        else ("adapter disabled on the policy" if adapter_ref else f"frozen copy of {ref_source}")
        + (", log-probs precomputed to disk" if cfg.ref.precompute else "")
    )
    log(f"reference: {ref_what}")

    # --- optimisation -------------------------------------------------------------------------------
    world, rank = accelerator.num_processes, accelerator.process_index
    steps = batching.total_steps(len(train), t.batch_size, t.grad_accum, world, t.epochs, t.max_steps)
    optimizer, scheduler = optimizer_and_schedule(model, t, steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = run.resume_state(steps)
    start_step, units_seen = state.get("step", 0), state.get("units_seen", 0)
    policy = accelerator.unwrap_model(model)

    reference = None
    if cfg.uses_reference:
        if cfg.ref.precompute:
            # Before the first step the policy still is the reference (adapter off for LoRA); after a resume it
            # no longer is, so a missing cache is then filled from a fresh copy.
            fresh = start_step == 0 and cfg.ref.model is None
            if adapter_ref:
                fn = lambda b, ids: adapter_off_logps(policy, b, len(ids))  # noqa: E731
            elif fresh:
                fn = lambda b, ids: sequence_logps(policy, b, len(ids))  # noqa: E731
            else:
                ref_model = None  # loaded only if a cache is missing

                def fn(b, ids):
                    nonlocal ref_model
                    ref_model = ref_model or load_ref_copy()
                    return sequence_logps(ref_model, b, len(ids))

            was_training = policy.training
            policy.eval()
            splits = {"train": train, **({"eval": held} if held is not None else {})}
            tables = cached_reference(
                fn,
                splits,
                accelerator,
                cache_dir=out / "ref_logps",
                ref_name=str(ref_source) + ("|adapter-off" if adapter_ref else ""),
                batch_size=t.eval_batch_size or t.batch_size,
                collate=collate,
                log=log,
            )
            policy.train(was_training)
            ref_model = None  # training holds one model
            reference = Reference(tables=tables)
        elif adapter_ref:
            reference = Reference(adapter_of=policy)
        else:
            reference = Reference(model=ref_model)

    metrics = run.open_metrics(tensorboard=cfg.tensorboard, resume_step=start_step)

    def save(step: int) -> Path:
        state = {"step": step, "units_seen": units_seen, "total_steps": steps}

        def write_model(path: Path) -> None:
            save_model(accelerator.unwrap_model(model), tokenizer, str(path / "model"))

        return run.save_checkpoint(step, state, keep=t.save_total_limit, extra=write_model)

    # --- the loop -----------------------------------------------------------------------------------
    model.train()
    plan_kw = dict(num_examples=len(train), batch_size=t.batch_size, grad_accum=t.grad_accum, world_size=world)
    lengths = None
    if t.group_by_length:
        lengths = [
            len(train.sequences[a].input_ids) + len(train.sequences[b].input_ids) for a, b in zip(train.first, train.second)
        ]
    run_eval = partial(
        evaluate,
        model,
        accelerator,
        held,
        loss_cfg=L,
        reference=reference,
        batch_size=t.eval_batch_size or t.batch_size,
        collate=collate,
    )
    last: dict = {}
    eval_result = None
    unit_name = "rows" if kto else "pairs"
    throughput = Throughput(t.peak_tflops, devices=world)
    # Model FLOPs of a step: the policy trains on its sequences; a reference model (not a precomputed table)
    # runs a forward over the same ones; KTO's KL estimate adds a policy and a reference forward over the
    # mismatched partners. The reference is counted with the policy's shape (ref.model may differ: a same-size
    # model is the usual case).
    ref_forwards = reference is not None and reference.tables is None
    seq_len = lambda i: len(train.sequences[i].input_ids)  # noqa: E731
    with training_progress(enabled=main) as progress:
        task = progress.add_task(L.type, total=steps, completed=start_step, stats="")
        for step in range(start_step, steps):
            t0 = time.perf_counter()
            groups = batching.step_micro_batches(step, rank=rank, seed=t.seed, lengths=lengths, **plan_kw)
            mine = [u for idx in groups for u in idx]
            local = [len(mine), sum(train.learned_tokens(train.first[u]) for u in mine)]
            n_units, n_first_tokens = (int(x) for x in accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum"))
            kl = None
            flops = 0.0
            if shape is not None:
                trained = [
                    seq_len(i) for idx in groups for u in idx for i in ([train.first[u]] + ([] if kto else [train.second[u]]))
                ]
                flops = train_flops(shape, trained) + (forward_flops(shape, trained) if ref_forwards else 0.0)
                if kto:
                    partners = [seq_len(train.second[u]) for idx in groups for u in idx]
                    flops += forward_flops(shape, partners) * (2 if ref_forwards else 1)
            if kto:
                kl, _ = kl_estimate(model, reference, train, groups, collate=collate, accelerator=accelerator)
            sums = StepSums()
            n_tokens = 0
            for i, idx in enumerate(groups):
                ids = [train.first[u] for u in idx] + ([] if kto else [train.second[u] for u in idx])
                batch = collate(train, ids).to(accelerator.device)
                n_tokens += batch.num_tokens
                B = len(idx)
                sync = i == len(groups) - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else nullcontext()
                with ctx, accelerator.autocast():
                    pol = sequence_logps(model, batch, len(ids))
                    ref = reference.logps(batch, ids) if reference is not None else None

                    def split(x: SequenceLogps | None, B: int = B) -> tuple | None:
                        if x is None:
                            return None
                        return (x,) if kto else (SequenceLogps(x.sum[:B], x.tokens[:B]), SequenceLogps(x.sum[B:], x.tokens[B:]))

                    desirable = torch.tensor([train.desirable[u] for u in idx], device=accelerator.device) if kto else None
                    loss, parts = unit_losses(
                        L, split(pol), split(ref), desirable=desirable, kl=kl, nll_scale=n_units / max(n_first_tokens, 1)
                    )
                    # DDP averages gradients over processes; the global normaliser already divides by all.
                    accelerator.backward(loss.sum() / n_units * world)
                sums.add("loss", loss)
                for k, v in parts.items():
                    sums.add(k, v)
            step_sums = sums.reduce(accelerator)
            train_loss = step_sums["loss"] / n_units
            stop_if_not_finite(train_loss, step, save)
            grad_norm, lr = optimizer_step(accelerator, model, optimizer, scheduler, t.max_grad_norm)
            n_tokens, flops = (
                int(x) for x in accelerator.reduce(torch.tensor([n_tokens, round(flops)], device=accelerator.device), "sum")
            )
            units_seen += n_units
            dt = time.perf_counter() - t0
            done = step + 1
            last = {
                "step": done,
                **summarise(step_sums, n_units),
                **({"kl": max(float(kl), 0.0)} if kl is not None else {}),  # z0 as the loss uses it (clamped at 0)
                "learning_rate": lr,
                "grad_norm": grad_norm,
                f"{unit_name}_per_second": n_units / dt,
                "tokens_per_second": n_tokens / dt,
                "epoch": batching.epoch_of_step(done, **plan_kw),
                f"{unit_name}_seen": units_seen,
                **(throughput.step(flops, dt) if shape is not None else {}),
            }
            if done % t.log_every == 0 or done == steps:
                metrics.log(last)
            progress.update(
                task,
                advance=1,
                stats=f"loss {train_loss:.4f} acc {last['rewards/accuracy']:.2f} {n_units / dt:,.1f} {unit_name}/s",
            )
            if held is not None and t.eval_every and done % t.eval_every == 0 and done != steps:
                eval_result = run_eval()
                metrics.log({"step": done, **eval_result})
            if t.save_every and done % t.save_every == 0 and done != steps:
                save(done)

    if held is not None:
        eval_result = run_eval()
        metrics.log({"step": steps, **eval_result})
        log(
            f"eval: loss {eval_result['eval_loss']:.4f}, reward accuracy {eval_result['eval_rewards/accuracy']:.4f}, "
            f"margin {eval_result['eval_rewards/margins']:.4f} on {eval_result['eval_n']} held-out {unit_name}"
        )

    final = out / "final"
    accelerator.wait_for_everyone()
    if main:
        save_model(accelerator.unwrap_model(model), tokenizer, str(final))
        summary = {
            "stage": "dpo",
            "loss": L.model_dump(by_alias=True),
            "steps": steps,
            "resumed_from_step": start_step,
            "final_loss": last.get("loss"),
            "last_step": last,
            "eval": eval_result,
            f"{unit_name}_seen": units_seen,
            "reference": ref_what,
            "throughput": throughput.summary() if shape is not None else None,
            "trainable_parameters": n_train,
            "total_parameters": n_total,
            "data": train_stats,
            "final_dir": str(final),
        }
        run.write_summary(summary)
        log(f"final model saved to {final}")
    run.close()
    return DPOResult(out, final, steps, last.get("loss", float("nan")), eval_result)
