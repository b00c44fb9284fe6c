"""The PPO stage's config (``alignkit ppo``): RLHF against a reward model or a reward function."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from alignkit.config.base import Closed
from alignkit.config.common import ModelConfig, RunConfig, SourceConfig, TrainConfig


class PromptDataConfig(SourceConfig):
    """Prompts: any format the data layer reads; the prompt part of each row is used (duplicates kept)."""

    max_length: int = Field(256, ge=8, description="Longest prompt in tokens; longer prompts lose their earliest tokens.")
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Hold out this fraction of the prompts (written to heldout_prompts.jsonl)."
    )


class RewardSourceConfig(Closed):
    model: str | None = Field(
        None, description="A reward model directory (alignkit rm's final/, or any 1-label sequence classifier)."
    )
    function: str | None = Field(
        None, description="'file.py:fn' or 'module:fn' with fn(prompts: list[str], responses: list[str]) -> list[float]."
    )
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments passed to reward.function.")
    normalize: bool = Field(
        True,
        description="Scale scores to zero mean and unit variance: with the reward model's stored statistics, or "
        "running statistics over the run when it has none (and for functions).",
    )
    clip: float | None = Field(10.0, gt=0, description="Clip the (normalised) score to [-clip, clip] (null: no clipping).")
    missing_eos_penalty: float | None = Field(
        None, ge=0, description="Subtract this from the score of a response that hit max_new_tokens without EOS."
    )
    batch_size: int = Field(16, ge=1, description="Responses scored per reward-model forward.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="The reward model's weights dtype when loading (bfloat16 halves its memory on a GPU)."
    )

    @model_validator(mode="after")
    def _one_source(self):
        if (self.model is None) == (self.function is None):
            raise ValueError("set exactly one of reward.model and reward.function")
        return self


class ValueConfig(Closed):
    init: Literal["policy", "reward"] = Field(
        "policy",
        description="Value model backbone: the policy's starting weights, or the reward model's (a decoder sharing "
        "the policy's vocabulary; memory: separate only). The scalar head is new (policy) or the reward head (reward).",
    )
    learning_rate: float | None = Field(None, gt=0, description="Value model learning rate (null: train.learning_rate).")


class VLLMSettings(Closed):
    """The colocated vLLM engine of ``generation.backend: vllm`` (one per process, on its GPU)."""

    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of the GPU's memory vLLM may take (weights + KV cache); the rest is the trainer's."
    )
    max_model_len: int | None = Field(None, ge=16, description="vLLM's context length (null: the model's).")
    dtype: str = Field("auto", description="vLLM's weight dtype (auto: the checkpoint's; bfloat16 for a QLoRA policy's base).")
    sleep_mode: bool = Field(True, description="Offload vLLM's weights and free its KV cache while the trainer works.")


class SyncCheckConfig(Closed):
    """The check after every weight push to a separate rollout engine (see alignkit.rl.rollout_sync.check_sync)."""

    tolerance: float = Field(
        0.05,
        gt=0,
        description="Largest mean |trainer - engine| log-prob over the probe tokens (fp32 engines agree to ~1e-5, bf16 "
        "ones to ~1e-2).",
    )
    probe_prompts: int = Field(2, ge=1, description="Training prompts the probe answers are drawn for.")
    probe_tokens: int = Field(16, ge=1, description="Greedy tokens per probe prompt, scored by both sides after every push.")


class GenerationConfig(Closed):
    """Rollout sampling: softmax(logits / temperature) and nothing else, because PPO's old log-probs are computed
    under exactly that distribution (any truncation, top_p < 1, top-k or a repetition penalty, would make them
    the log-probs of a distribution that was not sampled). The model's own generation_config is ignored."""

    max_new_tokens: int = Field(32, ge=1, description="Longest response; one that reaches it without EOS is truncated.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Nucleus sampling threshold: must stay 1 (PPO's log-probs are of the untruncated distribution).",
    )

    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="transformers: generate with the policy being trained; vllm: a colocated vLLM engine with its own "
        "weights, pushed and verified after every update.",
    )
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="The vLLM engine (backend vllm).")
    sync_check: SyncCheckConfig = Field(default_factory=SyncCheckConfig, description="Verification of every weight push.")
    tis_cap: float | None = Field(
        None,
        gt=0,
        description="Truncated importance sampling for a separate rollout engine: weight each token's policy loss by "
        "min(p_trainer / p_engine, tis_cap) (e.g. 2). null: off.",
    )

    @model_validator(mode="after")
    def _tis_needs_an_engine(self) -> GenerationConfig:
        if self.tis_cap is not None and self.backend == "transformers":
            raise ValueError(
                "generation.tis_cap corrects the mismatch of a separate rollout engine (backend vllm); with backend "
                "transformers the rollouts come from the policy itself and there is nothing to correct"
            )
        return self

    @field_validator("top_p")
    @classmethod
    def _untruncated(cls, v: float) -> float:
        if v < 1:
            raise ValueError(
                f"top_p {v} is not supported by PPO: its old log-probs must be those of the distribution sampled, and "
                "top_p < 1 truncates it; use temperature only (compare, generate and serve accept top_p)"
            )
        return v


class PPOAlgoConfig(Closed):
    rollout_size: int = Field(16, ge=2, description="Prompts sampled per PPO step (per process).")
    mini_batch_size: int = Field(
        8, ge=1, description="Rollout rows per optimizer update (split into train.batch_size micro-batches)."
    )
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ of GAE.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clip ε.")
    clip_range_value: float = Field(0.2, gt=0, description="Value clip around the rollout's values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the entropy bonus.")
    kl_coef: float = Field(0.05, ge=0, description="Initial coefficient of the per-token KL penalty to the reference.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k1", description="Per-token KL estimator: k1 = log π - log π_ref; k2 = (log r)²/2, biased, ≥ 0; k3 unbiased, ≥ 0."
    )
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive KL (Ziegler et al. 2019): steer the KL toward this many nats (null: fixed coefficient)."
    )
    kl_horizon: int = Field(10000, ge=1, description="Horizon of the adaptive KL controller.")
    whiten_advantages: bool = Field(True, description="Normalise advantages over each rollout.")


class PPOConfig(RunConfig):
    """RLHF with PPO (``alignkit ppo``)."""

    model: ModelConfig = Field(..., description="The policy (usually an SFT model).")
    memory: Literal["separate", "shared-base"] = Field(
        "separate",
        description="separate: policy, value, reference (and reward) models of their own; shared-base: one frozen base "
        "with LoRA adapters for policy and value, the reference being the base with adapters off (model.finetune lora/qlora).",
    )
    data: PromptDataConfig = Field(..., description="Prompts.")
    reward: RewardSourceConfig = Field(..., description="Where the scores come from.")
    value: ValueConfig = Field(default_factory=ValueConfig, description="The value model.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Rollout sampling.")
    ppo: PPOAlgoConfig = Field(default_factory=PPOAlgoConfig, description="PPO hyper-parameters.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(learning_rate=1e-5, batch_size=8),
        description="Optimisation: max_steps counts PPO steps (rollouts); batch_size is the micro-batch of an update.",
    )
    disable_dropout: bool = Field(True, description="Zero every dropout in policy, value and reference.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.memory == "shared-base" and self.model.finetune not in ("lora", "qlora"):
            raise ValueError("memory 'shared-base' needs model.finetune lora or qlora (the adapters hold policy and value)")
        if self.memory == "shared-base" and self.value.init == "reward":
            raise ValueError(
                "value.init 'reward' needs memory 'separate' (shared-base values are an adapter on the policy's base)"
            )
        if self.ppo.mini_batch_size > self.ppo.rollout_size:
            raise ValueError("ppo.mini_batch_size cannot exceed ppo.rollout_size")
        if self.train.grad_accum != 1:
            raise ValueError("train.grad_accum is not used by PPO: ppo.mini_batch_size / train.batch_size sets the accumulation")
        return self
