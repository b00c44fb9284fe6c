"""Set-up steps every training stage shares: creating an init model, holding out eval data."""

from __future__ import annotations

from pathlib import Path

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
