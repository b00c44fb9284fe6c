"""The SFT stage's config."""

from __future__ import annotations

from pydantic import Field

from alignkit.config.common import DataConfig, ModelConfig, RunConfig, TrainConfig


class SFTConfig(RunConfig):
    """Supervised fine-tuning: next-token loss on completions (``alignkit sft``)."""

    model: ModelConfig = Field(..., description="The causal LM to fine-tune.")
    data: DataConfig = Field(..., description="Training (and eval) data.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation and schedule.")
