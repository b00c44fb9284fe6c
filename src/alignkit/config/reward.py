"""The reward-model stage's config (``alignkit rm``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.config.base import Closed
from alignkit.config.common import InitModelConfig, LoraConfig, RunConfig, SourceConfig, TrainConfig


class RewardModelConfig(Closed):
    name_or_path: str = Field(
        ..., description="Hub id or local directory of the backbone: a decoder LM or an encoder (BERT-like)."
    )
    pooling: Literal["auto", "last", "cls", "mean", "response_mean"] = Field(
        "auto",
        description="Sequence -> vector: last non-padding token (decoders), CLS token (encoders), mean of all "
        "tokens, or mean of the response's tokens; auto: last for decoders, mean for encoders.",
    )
    template: Literal["auto", "chat", "plain"] = Field(
        "auto",
        description="Text rendering: the tokenizer's chat template (ChatML if it has none), or plain "
        "'User: ...\\n\\nAssistant: ...' text; auto: chat for decoders, plain for encoders.",
    )
    finetune: Literal["full", "lora", "qlora"] = Field(
        "full",
        description="Train all weights, LoRA adapters, or LoRA on a 4-bit NF4 base (bitsandbytes); the head always trains. "
        "A QLoRA reward model is saved merged into the full-precision base.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (finetune: lora).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype when loading.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    disable_dropout: bool = Field(True, description="Set every dropout probability to 0 (as TRL's RewardTrainer does).")
    trust_remote_code: bool = Field(False, description="Allow model code from the model directory/hub.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    init: InitModelConfig | None = Field(
        None, description="If set and name_or_path does not exist, create a tiny decoder there first (offline)."
    )


class RewardDataConfig(SourceConfig):
    """Preference pairs: ``{prompt, chosen, rejected}``, hh-rlhf transcripts, rm-static or message lists."""

    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Hold out this fraction of the training pairs for eval when eval is unset."
    )
    max_length: int = Field(512, ge=8, description="Longest tokenised prompt + response; longer ones lose tokens from the left.")
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="Padding-free batches (all sequences of a micro-batch in one row); auto: on for decoders "
        "with pooling 'last', which are the only backbones it works with.",
    )


class RewardLossConfig(Closed):
    margin: bool = Field(True, description="Use a pair's 'margin' field when present: -log σ(r_c - r_r - margin).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Probability the preference label is wrong (ε).")
    center_coef: float = Field(0.0, ge=0, description="Reward centering weight c: + c (r_c + r_r)².")


class RewardConfig(RunConfig):
    """Bradley–Terry reward model on preference pairs (``alignkit rm``)."""

    model: RewardModelConfig = Field(..., description="Backbone and scalar head.")
    data: RewardDataConfig = Field(..., description="Preference pairs.")
    loss: RewardLossConfig = Field(default_factory=RewardLossConfig, description="Pairwise loss options.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation and schedule (batch_size counts pairs).")
    head_learning_rate: float | None = Field(
        None, gt=0, description="Learning rate of the scalar head (null: train.learning_rate)."
    )
    stats_rows: int | None = Field(
        None, ge=1, description="Pairs scored after training for the stored reward mean/std (null: all training pairs)."
    )
