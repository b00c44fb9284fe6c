"""Pieces of a stage's ``run`` that read the shared config sections (so they live with the algorithms)."""

from __future__ import annotations

from collections.abc import Callable

from alignkit.config.common import TrainConfig
from alignkit.training.optim import build_optimizer, build_scheduler, warmup_steps_for


def optimizer_and_schedule(model, t: TrainConfig, steps: int, lr_for: Callable[[str], float | None] | None = None):
    """``t.optimizer`` (AdamW, 8-bit or paged) over ``model``'s trainable parameters and its warm-up + decay schedule over ``steps`` optimizer steps."""
    optimizer = build_optimizer(
        model,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        betas=(t.adam_beta1, t.adam_beta2),
        eps=t.adam_eps,
        lr_for=lr_for,
        optimizer=t.optimizer,
    )
    scheduler = build_scheduler(
        optimizer, name=t.lr_scheduler, warmup=warmup_steps_for(steps, t.warmup_steps, t.warmup_ratio), total=steps
    )
    return optimizer, scheduler


def optimizer_step(accelerator, model, optimizer, scheduler, max_grad_norm: float | None) -> tuple[float | None, float]:
    """Clip (when ``max_grad_norm`` is set), step the optimizer and the schedule, zero the gradients.
    Returns ``(grad norm before clipping or None, the learning rate the step used)``."""
    grad_norm = None
    if max_grad_norm is not None:
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def run_identity(cfg) -> dict:
    """What :func:`alignkit.training.setup.start_run` needs of a stage config: ``output_dir``, ``resume`` and
    ``config_text`` (the resolved config as YAML, written to ``config.yaml`` and compared on resume)."""
    from alignkit.config.base import dump_config

    return {"output_dir": cfg.output_dir, "resume": cfg.resume, "config_text": dump_config(cfg)}


def model_options(m) -> dict:
    """The loader options of a ``model`` section that every loader takes (policy, reference, value model):
    ``dtype``, ``attn_implementation``, ``trust_remote_code``, ``revision``."""
    return {
        "dtype": m.dtype,
        "attn_implementation": m.attn_implementation,
        "trust_remote_code": m.trust_remote_code,
        "revision": m.revision,
    }


def lora_options(m) -> dict:
    """A ``model`` section's LoRA settings: ``{r, alpha, dropout, target_modules}`` (used when finetune is lora/qlora)."""
    return {"r": m.lora.r, "alpha": m.lora.alpha, "dropout": m.lora.dropout, "target_modules": m.lora.target_modules}


def load_policy(m):
    """The trainable causal LM a ``model`` section (``ModelConfig``) describes: its weights, ``finetune`` mode,
    LoRA settings, gradient checkpointing and loader options (:func:`alignkit.models.loading.load_causal_lm`)."""
    from alignkit.models.loading import load_causal_lm, lora_keywords

    return load_causal_lm(
        m.name_or_path,
        finetune=m.finetune,
        gradient_checkpointing=m.gradient_checkpointing,
        **lora_keywords(lora_options(m)),
        **model_options(m),
    )
