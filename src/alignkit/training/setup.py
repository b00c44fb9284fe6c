"""Set-up steps every training stage shares: the accelerator and run directory, an init model, held-out data."""

from __future__ import annotations

from pathlib import Path

import torch

from alignkit.training.batching import epoch_order


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
        init_model(spec.arch, spec.size, spec.tokenizer_from, path, vocab_size=spec.vocab_size, seed=spec.seed)
    accelerator.wait_for_everyone()


def start_run(cfg, *, mixed_precision: str, seed: int, model_path: str, init_spec=None):
    """``(accelerator, output dir, checkpoint root)`` for a training stage.

    Creates the accelerator (CPU when no CUDA), ``cfg.output_dir`` with the resolved ``cfg`` written to
    ``config.yaml`` and leftovers of an interrupted checkpoint save removed; seeds everything; builds
    the model at ``model_path`` from ``init_spec`` (an InitModelConfig) when it does not exist yet.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from alignkit.config.base import write_config
    from alignkit.training.checkpoint import remove_partial

    # step_scheduler_with_optimizer=False: our schedule counts optimizer steps already; accelerate would
    # otherwise advance it num_processes times per step.
    accelerator = Accelerator(
        mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False
    )
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_config(cfg, out / "config.yaml")
        remove_partial(ckpt_root)
    set_seed(seed)
    if init_spec is not None and not Path(model_path).exists():
        ensure_init_model(model_path, init_spec, accelerator)
    return accelerator, out, ckpt_root


def resume_state(accelerator, ckpt_root: Path, resume: str, total_steps: int) -> dict:
    """With ``resume="auto"``, restore the newest complete checkpoint into the prepared objects and return
    its trainer state (``{"step": ..., ...}``); ``{}`` when starting from scratch."""
    from alignkit.training.checkpoint import latest_checkpoint, load_checkpoint

    ckpt = latest_checkpoint(ckpt_root) if resume == "auto" else None
    if ckpt is None:
        return {}
    state = load_checkpoint(accelerator, ckpt)
    accelerator.print(f"resumed from {ckpt} (step {state['step']} of {total_steps})")
    return state
