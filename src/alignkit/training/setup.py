"""Set-up steps every training stage shares: the accelerator and run directory, an init model, held-out data."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignkit.training.batching import epoch_order
from alignkit.training.metrics import MetricsLogger


def holdout_split(examples: list, val_size: float, *, seed: int) -> tuple[list, list]:
    """Split off ``val_size`` examples (a count, or a fraction when < 1) by a seeded shuffle."""
    n_val = int(round(val_size * len(examples))) if val_size < 1 else int(val_size)
    n_val = min(max(n_val, 1), len(examples) - 1)
    order = epoch_order(len(examples), seed, epoch=-1)
    held = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def ensure_init_model(path: str, spec, accelerator) -> None:
    """Create the model directory ``path`` from ``spec`` (an InitModelConfig) on the main process."""
    from alignkit.models.init_model import init_model

    if accelerator.is_main_process and not Path(path).exists():
        accelerator.print(f"{path} does not exist: creating a {spec.arch}/{spec.size} model (model.init)")
        init_model(
            spec.arch,
            spec.size,
            spec.tokenizer_from,
            path,
            vocab_size=spec.vocab_size,
            seed=spec.seed,
            split_digits=spec.split_digits,
        )
    accelerator.wait_for_everyone()


# Keys a resumed run may change: they steer how far the run goes, how often it logs, evaluates and saves,
# and where it writes, never what a step computes. Any other change stops the resume (unless resume: force).
RESUMABLE_CHANGES = (
    "output_dir",
    "resume",
    "tensorboard",
    "train.max_steps",
    "train.log_every",
    "train.eval_every",
    "train.save_every",
    "train.save_total_limit",
    "train.eval_batch_size",
)
RESUMES_FILE = "resumes.jsonl"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """``{dotted key: (old, new)}`` for every value that differs between two resolved configs (as YAML dicts)."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k, missing) != b.get(k, missing)}


def _describe(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_resume_config(config_text: str, resume: str, ckpt: Path, log) -> dict | None:
    """Compare the run's config (``config_text``, the resolved YAML) with the config saved in checkpoint ``ckpt``.
    Changes of ``RESUMABLE_CHANGES`` are logged; any other change is a one-line ``ConfigError`` naming the keys,
    unless ``resume == "force"`` (then logged as forced). Returns the record of this resume for ``resumes.jsonl``
    (None when the checkpoint has no config)."""
    import yaml

    from alignkit.config.base import ConfigError
    from alignkit.training.checkpoint import CONFIG_FILE

    saved = ckpt / CONFIG_FILE
    if not saved.is_file():
        log(f"warning: {ckpt} has no {CONFIG_FILE} (saved by an older alignkit): the config cannot be compared")
        return None
    changes = config_changes(yaml.safe_load(saved.read_text()) or {}, yaml.safe_load(config_text))
    allowed = {k: v for k, v in changes.items() if k in RESUMABLE_CHANGES}
    other = {k: v for k, v in changes.items() if k not in RESUMABLE_CHANGES}
    if other and resume != "force":
        raise ConfigError(
            f"resume from {ckpt}: the config changed since it was saved ({_describe(other)}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change on resume. Restore the old values, set resume: force to "
            "apply the new ones from here on, or resume: never to start over"
        )
    if allowed:
        log(f"resume: applying {_describe(allowed)}")
    if other:
        log(f"resume: force: applying changed {_describe(other)} from step {ckpt.name.removeprefix('step-')} on")
    return {
        "checkpoint": str(ckpt),
        "changed": {k: list(v) for k, v in allowed.items()},
        "forced": {k: list(v) for k, v in other.items()},
    }


def check_distribution(accelerator, env=None) -> dict:
    """Stop before training when the launch asked for more than this accelerator got, never fall back silently.

    Two launches that look distributed but are not: ``torchrun``/``accelerate launch`` started N > 1 processes
    (``WORLD_SIZE``) while the accelerator sees one process, so N unsynchronised copies would train and race for
    the same output directory (``accelerate launch`` with an FSDP or DeepSpeed config on a machine without CUDA
    does this); or the launcher requested FSDP/DeepSpeed (``ACCELERATE_USE_FSDP``/``ACCELERATE_USE_DEEPSPEED``)
    and the accelerator runs without it. Returns ``{"world_size", "distributed_type"}`` for ``summary.json``.
    (``accelerate launch --cpu --num_processes 2`` starts one ordinary process and tells it nothing: that one
    cannot be detected from inside; docs/distributed.md says to use torchrun for multi-process CPU runs.)
    """
    import os

    from alignkit.training.errors import TrainingError

    env = os.environ if env is None else env
    launched = int(env.get("WORLD_SIZE", "1") or 1)
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    fix = "on a machine without CUDA run several processes with torchrun (real DDP over gloo): torchrun --nproc_per_node N -m alignkit ..."
    if launched > 1 and accelerator.num_processes == 1:
        raise TrainingError(
            f"launched as {launched} processes (WORLD_SIZE={launched}) but this process's accelerator sees 1 "
            f"(distributed type {kind}): the processes would train unsynchronised copies and overwrite each other's "
            f"output; {fix}"
        )
    for flag, want in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if str(env.get(flag, "false")).lower() == "true" and kind != want:
            raise TrainingError(
                f"the launch asked for {want} ({flag}=true) but the accelerator runs as {kind} "
                f"({'no CUDA device' if not torch.cuda.is_available() else 'the plugin did not load'}): nothing would be "
                f"sharded; {fix}, or launch on GPUs"
            )
    return {"world_size": accelerator.num_processes, "distributed_type": kind}


def run_facts(accelerator) -> dict:
    """Where a run ran, for its ``summary.json``: device, number of processes, accelerate's distributed type, and on
    CUDA the card and this process's peak allocated memory (``torch.cuda.max_memory_allocated``)."""
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    facts = {"device": str(accelerator.device), "world_size": accelerator.num_processes, "distributed_type": kind}
    device = torch.device(accelerator.device)
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["peak_cuda_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return facts


def replicas_in_sync(accelerator, model) -> bool | None:
    """Data-parallel processes hold the same weights after training (DDP keeps them so; a launch that silently
    trained independent copies would not): a float64 checksum of every parameter, gathered from every process and
    compared exactly. None on one process. Every process must call it (it gathers)."""
    if accelerator.num_processes == 1:
        return None
    with torch.no_grad():
        total = sum(p.detach().double().sum() * (i + 1) for i, p in enumerate(accelerator.unwrap_model(model).parameters()))
    sums = accelerator.gather(torch.as_tensor(total, dtype=torch.float64, device=accelerator.device).reshape(1)).cpu()
    return bool((sums == sums[0]).all())


@dataclass
class StageRun:
    """The bookkeeping of one training stage's run, the same for every stage: its accelerator, its output
    directory (``config.yaml``, ``metrics.jsonl``, ``resumes.jsonl``, ``checkpoints/step-N``, ``summary.json``)
    and how it resumes. Built by :func:`start_run`; the stage's loop stays in its own file and calls, in order,
    ``resume_state`` -> ``open_metrics`` -> ``save_checkpoint`` (as often as it saves) -> ``write_summary`` ->
    ``close``."""

    accelerator: Any
    out: Path  # the run's output directory
    resume: str  # "auto" | "force" | "never"
    metrics: MetricsLogger | None = None  # set by open_metrics

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def log(self, *args) -> None:
        """Print on the main process only."""
        self.accelerator.print(*args)

    def resume_state(self, total_steps: int) -> dict:
        """The trainer state of the checkpoint this run resumes from (``{}`` from scratch): see :func:`resume_state`.
        Call after ``accelerator.prepare``."""
        return resume_state(self.accelerator, self.ckpt_root, self.resume, total_steps)

    def open_metrics(self, *, tensorboard: bool, resume_step: int) -> MetricsLogger:
        """``metrics.jsonl`` (and TensorBoard) on the main process, rows after ``resume_step`` dropped."""
        self.metrics = MetricsLogger(self.out, enabled=self.main, tensorboard=tensorboard, resume_step=resume_step)
        return self.metrics

    def save_checkpoint(self, step: int, state: dict, *, keep: int, extra: Callable[[Path], None] | None = None) -> Path:
        """``checkpoints/step-{step}``, atomic and verified (:func:`alignkit.training.checkpoint.save_checkpoint`)."""
        from alignkit.training.checkpoint import save_checkpoint

        return save_checkpoint(self.accelerator, self.ckpt_root, step, state, keep=keep, extra=extra)

    def write_summary(self, summary: dict) -> Path:
        """``summary.json`` (written atomically, main process only): ``summary`` plus where the run ran
        (:func:`run_facts`) and every resume (:func:`resume_record`). A pipeline treats a stage whose summary
        exists as finished. Returns its path."""
        from alignkit.io_atomic import atomic_file

        path = self.out / "summary.json"
        if self.main:
            record = {**summary, **run_facts(self.accelerator), "resumes": resume_record(self.out)}
            with atomic_file(path) as tmp:
                tmp.write_text(json.dumps(record, indent=2))
        return path

    def close(self) -> None:
        """Close the metrics writers and end the accelerator's run (every process)."""
        if self.metrics is not None:
            self.metrics.close()
        self.accelerator.end_training()


def start_run(
    *,
    output_dir: str,
    resume: str,
    config_text: str,
    mixed_precision: str,
    seed: int,
    model_path: str,
    init_spec=None,
) -> StageRun:
    """The :class:`StageRun` of a training stage.

    Creates the accelerator (CPU when no CUDA), ``output_dir`` with ``config_text`` (the resolved config) written
    to ``config.yaml`` and leftovers of an interrupted checkpoint save removed; seeds everything; builds the model
    at ``model_path`` from ``init_spec`` (an InitModelConfig) when it does not exist yet.

    When the run will resume (``resume`` auto or force and a checkpoint exists), first picks the newest
    checkpoint that verifies (saying which damaged ones it passed over) and compares the config with the one
    saved in it (:func:`check_resume_config`); each resume is appended to ``resumes.jsonl``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from alignkit.io_atomic import atomic_file
    from alignkit.training.checkpoint import remove_partial, usable_checkpoint

    # step_scheduler_with_optimizer=False: our schedule counts optimizer steps already; accelerate would
    # otherwise advance it num_processes times per step.
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False
    )
    check_distribution(accelerator)
    run = StageRun(accelerator, Path(output_dir), resume)
    out = run.out
    if accelerator.is_main_process:
        remove_partial(run.ckpt_root)
    accelerator.wait_for_everyone()
    record = None
    if resume != "never":
        point = usable_checkpoint(run.ckpt_root)
        if point.path is not None:
            for problem in point.skipped:
                accelerator.print(f"checkpoint {problem}: skipped, falling back to {point.path.name}")
            if point.unverified:
                accelerator.print(f"warning: {point.path} has no manifest (saved by an older alignkit): not verified")
            record = check_resume_config(config_text, resume, point.path, accelerator.print) or {"checkpoint": str(point.path)}
            record["skipped"] = point.skipped
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "config.yaml") as tmp:
            tmp.write_text(config_text)
        resumes = out / RESUMES_FILE
        if record is None:
            resumes.unlink(missing_ok=True)
        else:
            with resumes.open("a") as f:
                f.write(json.dumps(record) + "\n")
    set_seed(seed)
    if init_spec is not None and not Path(model_path).exists():
        ensure_init_model(model_path, init_spec, accelerator)
    return run


def resume_record(out: Path) -> list[dict]:
    """Every resume of the run in ``out`` (checkpoint, allowed and forced config changes, damaged checkpoints
    skipped), oldest first, for ``summary.json``."""
    path = Path(out) / RESUMES_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _reapply_hyperparameters(accelerator, groups_before: list, base_lrs_before: list) -> None:
    """After ``load_state``: put back the optimizer hyper-parameters and scheduler base rates of the current
    config (loading restores the saved ones), and set each group's rate for the restored step from the current
    schedule. Identical values when the config did not change; the new ones after an allowed or forced change."""
    for opt, groups in zip(accelerator._optimizers, groups_before):
        for g, saved in zip(opt.param_groups, groups):
            g.update(saved)
    for sched, base_lrs in zip(accelerator._schedulers, base_lrs_before):
        inner = getattr(sched, "scheduler", sched)
        if base_lrs is None or not hasattr(inner, "lr_lambdas"):
            continue
        inner.base_lrs = list(base_lrs)
        lrs = [base_lr * lmbda(inner.last_epoch) for lmbda, base_lr in zip(inner.lr_lambdas, inner.base_lrs)]
        for g, lr in zip(inner.optimizer.param_groups, lrs):
            g["lr"] = lr
        inner._last_lr = lrs


def resume_state(accelerator, ckpt_root: Path, resume: str, total_steps: int) -> dict:
    """With ``resume`` auto or force, restore the newest checkpoint that verifies into the prepared objects and
    return its trainer state (``{"step": ..., ...}``); ``{}`` when starting from scratch. The optimizer and
    schedule follow the current config (see ``_reapply_hyperparameters``)."""
    from alignkit.training.checkpoint import load_checkpoint, usable_checkpoint

    ckpt = usable_checkpoint(ckpt_root).path if resume in ("auto", "force") else None
    if ckpt is None:
        return {}
    groups = [
        [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in o.param_groups] for o in accelerator._optimizers
    ]
    base_lrs = [getattr(getattr(s, "scheduler", s), "base_lrs", None) for s in accelerator._schedulers]
    base_lrs = [list(b) if b is not None else None for b in base_lrs]
    state = load_checkpoint(accelerator, ckpt)
    _reapply_hyperparameters(accelerator, groups, base_lrs)
    accelerator.print(f"resumed from {ckpt} (step {state['step']} of {total_steps})")
    return state
