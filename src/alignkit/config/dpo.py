"""The preference-optimisation stage's config (``alignkit dpo``; aliases ``orpo``, ``simpo``, ``kto``).

``loss`` is a tagged union on ``type``: each loss has exactly its own hyper-parameters, so a key that
does not belong to the chosen loss (``gamma`` under ``sigmoid``, ``label_smoothing`` under ``ipo``) is
an error, not silently ignored. ``loss: orpo`` (a bare name) is short for ``loss: {type: orpo}``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from alignkit.config.base import Closed
from alignkit.config.common import ModelConfig, RunConfig, SourceConfig, TrainConfig


class SigmoidLoss(Closed):
    """DPO (Rafailov et al. 2023); with ``label_smoothing`` > 0 conservative DPO (cDPO)."""

    type: Literal["sigmoid"] = "sigmoid"
    beta: float = Field(0.1, gt=0, description="Strength of the KL constraint to the reference (β).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed probability that a label is flipped (ε).")


class IPOLoss(Closed):
    """IPO (Azar et al. 2023): squared distance of the log-ratio margin to 1/(2β)."""

    type: Literal["ipo"] = "ipo"
    beta: float = Field(0.1, gt=0, description="Regularisation τ; the target margin is 1/(2τ).")


class HingeLoss(Closed):
    """SLiC-HF hinge loss (Zhao et al. 2023): max(0, 1 - β·margin)."""

    type: Literal["hinge"] = "hinge"
    beta: float = Field(0.1, gt=0, description="Scale of the log-ratio margin (1/β is the hinge margin).")


class RobustLoss(Closed):
    """Robust DPO (Chowdhury et al. 2024): unbiased under labels flipped with probability ε."""

    type: Literal["robust"] = "robust"
    beta: float = Field(0.1, gt=0, description="Strength of the KL constraint to the reference (β).")
    label_smoothing: float = Field(0.1, ge=0, lt=0.5, description="Label-noise rate ε the loss corrects for.")


class ORPOLoss(Closed):
    """ORPO (Hong et al. 2024): SFT loss on chosen + λ·odds-ratio loss; no reference model."""

    type: Literal["orpo"] = "orpo"
    lam: float = Field(0.1, ge=0, alias="lambda", description="Weight λ of the odds-ratio term.")
    nll: Literal["sequence", "token"] = Field(
        "sequence",
        description="SFT term: per-pair mean NLL of the chosen completion's tokens, averaged over pairs (the "
        "paper), or the mean over every chosen completion token of the step (TRL's reduction; TRL also counts "
        "the prompt's tokens).",
    )

    model_config = {**Closed.model_config, "populate_by_name": True}


class SimPOLoss(Closed):
    """SimPO (Meng et al. 2024): length-normalised log-probs as rewards, target margin γ; no reference."""

    type: Literal["simpo"] = "simpo"
    beta: float = Field(2.0, gt=0, description="Reward scale β (the paper uses 2.0-2.5).")
    gamma: float = Field(1.0, ge=0, description="Target reward margin γ (the paper: γ/β ≈ 0.5).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed probability that a label is flipped (ε).")


class KTOLoss(Closed):
    """KTO (Ethayarajh et al. 2024) on unpaired desirable / undesirable completions."""

    type: Literal["kto"] = "kto"
    beta: float = Field(0.1, gt=0, description="Strength of the KL constraint to the reference (β).")
    desirable_weight: float = Field(1.0, gt=0, description="λ_D, weight of desirable examples' losses.")
    undesirable_weight: float = Field(1.0, gt=0, description="λ_U, weight of undesirable examples' losses.")


LossConfig = Annotated[
    SigmoidLoss | IPOLoss | HingeLoss | RobustLoss | ORPOLoss | SimPOLoss | KTOLoss, Field(discriminator="type")
]


def loss_shorthand(data):
    """``loss: orpo`` (a bare name) -> ``loss: {type: orpo}`` in a section's raw data."""
    if isinstance(data, dict) and isinstance(data.get("loss"), str):
        data = {**data, "loss": {"type": data["loss"]}}
    return data


LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "orpo", "simpo", "kto")
REFERENCE_FREE = ("orpo", "simpo")


class PreferenceDataConfig(SourceConfig):
    """Preference pairs (every pair format), or for KTO unpaired ``{prompt, completion, label}`` rows."""

    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Hold out this fraction of the training rows for eval when eval is unset."
    )
    max_length: int = Field(
        1024,
        ge=8,
        description="Longest prompt + completion; longer ones lose the prompt's first tokens, then the completion's last (counted).",
    )
    packing: bool = Field(
        True, description="Padding-free batches: a micro-batch's sequences concatenated, positions restarting per sequence."
    )


class RefConfig(Closed):
    model: str | None = Field(
        None,
        description="Reference model directory; null: the policy's starting weights (a frozen copy for full "
        "fine-tuning, the base with the adapter disabled for LoRA/QLoRA).",
    )
    precompute: bool = Field(
        False,
        description="Compute the reference log-probs in one pass before training and cache them on disk "
        "(output_dir/ref_logps), so training holds a single model.",
    )


class DPOConfig(RunConfig):
    """Direct preference optimisation and relatives (``alignkit dpo``)."""

    model: ModelConfig = Field(..., description="The policy: a causal LM (usually an SFT model).")
    data: PreferenceDataConfig = Field(..., description="Preference pairs (or unpaired rows for KTO).")
    loss: LossConfig = Field(default_factory=SigmoidLoss, description="The loss and its hyper-parameters (by type).")
    ref: RefConfig = Field(default_factory=RefConfig, description="The reference model (losses that use one).")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(learning_rate=1e-6),
        description="Optimisation and schedule (batch_size counts pairs; for KTO, rows).",
    )
    disable_dropout: bool = Field(True, description="Set every dropout probability to 0 in the policy and reference.")

    @model_validator(mode="before")
    @classmethod
    def _loss_shorthand(cls, data):
        return loss_shorthand(data)

    @property
    def uses_reference(self) -> bool:
        return self.loss.type not in REFERENCE_FREE
