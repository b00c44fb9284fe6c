"""The critic-free RL stage's config (``alignkit grpo``; ``alignkit rloo`` and ``alignkit reinforce-pp`` preset
``advantage.estimator``): GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++ and GSPO are settings of one loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignkit.config.base import Closed
from alignkit.config.common import ModelConfig, RunConfig, TrainConfig
from alignkit.config.ppo import GenerationConfig, PromptDataConfig

GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")


class RewardFunctionConfig(Closed):
    function: str = Field(
        ...,
        description="'file.py:fn' or 'module:fn': fn(prompts: list[str], responses: list[str], **kwargs) -> list[float]; "
        "a function with a `references` parameter also gets each prompt's reference answer (the row's completion).",
    )
    weight: float = Field(1.0, description="Its weight in the summed reward.")
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments passed to the function.")
    name: str | None = Field(None, description="Name in the metrics (reward/<name>); default: the function's name.")


class RewardModelConfig(Closed):
    path: str = Field(..., description="A reward model directory (alignkit rm's final/, or any 1-label sequence classifier).")
    weight: float = Field(1.0, description="Its weight in the summed reward.")
    batch_size: int = Field(16, ge=1, description="Responses scored per reward-model forward.")
    name: str = Field("reward_model", description="Name in the metrics.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="The reward model's weights dtype when loading (bfloat16 halves its memory on a GPU)."
    )


class RewardsConfig(Closed):
    """The reward of a response: Σ weight × score over the functions and the reward model (each logged apart)."""

    functions: list[RewardFunctionConfig] = Field(default_factory=list, description="Reward functions (verifiers, rules).")
    model: RewardModelConfig | None = Field(
        None, description="A reward model, scored on the decoded text with its own tokenizer."
    )
    overlong_buffer: int | None = Field(
        None,
        ge=1,
        description="DAPO's soft overlong penalty: the last this-many tokens before max_new_tokens ramp to -overlong_penalty.",
    )
    overlong_penalty: float = Field(1.0, ge=0, description="Largest soft overlong penalty (at max_new_tokens).")

    @model_validator(mode="after")
    def _some_source(self):
        if not self.functions and self.model is None:
            raise ValueError("set at least one of rewards.functions and rewards.model")
        return self


class AdvantageConfig(Closed):
    estimator: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"] = Field(
        "grpo",
        description="grpo: group mean and std; dr_grpo: group mean only; rloo: mean of the other G-1; reinforce_pp: "
        "returns whitened over the batch, no group baseline; reinforce_pp_baseline: group mean, then batch whitening.",
    )
    scale: Literal["group", "batch", "none"] = Field(
        "group", description="grpo only: divide by the group's std, the whole batch's, or nothing (TRL scale_rewards)."
    )
    gamma: float = Field(1.0, ge=0, le=1, description="reinforce_pp*: discount of the per-token returns.")


class LossConfig(Closed):
    aggregation: Literal["token", "sequence", "fixed"] = Field(
        "token",
        description="token: Σ over the step's response tokens / their global count (DAPO); sequence: mean per "
        "response, then over responses (GRPO paper); fixed: Σ / (responses × max_new_tokens) (Dr. GRPO).",
    )
    clip_low: float = Field(0.2, gt=0, description="Lower clip ε: the ratio is kept above 1 - clip_low.")
    clip_high: float | None = Field(None, gt=0, description="Upper clip ε (DAPO clip-higher, e.g. 0.28); null: clip_low.")
    ratio: Literal["token", "sequence"] = Field(
        "token", description="token: a ratio per token (GRPO); sequence: one per response, exp of the mean log-ratio (GSPO)."
    )
    mask_truncated: bool = Field(False, description="Overlong filtering (DAPO): responses without EOS take no part in the loss.")


class KLConfig(Closed):
    coef: float = Field(0.0, ge=0, description="β of the KL to the reference (the starting policy); 0 loads no reference.")
    estimator: Literal["k1", "k2", "k3"] = Field("k3", description="Per-token KL estimator (k3: GRPO's).")
    placement: Literal["loss", "reward"] = Field(
        "loss",
        description="loss: β·KL per token added to the loss (GRPO); reward: β·k1 subtracted from the reward before the "
        "advantages (RLOO, REINFORCE++).",
    )


class DynamicSamplingConfig(Closed):
    enabled: bool = Field(False, description="DAPO: drop groups whose rewards are all equal; refill from the next prompts.")
    max_rounds: int = Field(3, ge=1, description="Sampling rounds per step at most (then train on the groups kept).")


class GRPOAlgoConfig(Closed):
    group_size: int = Field(8, ge=1, description="G: responses sampled per prompt.")
    prompts_per_step: int = Field(
        8, ge=1, description="Prompts per step (per process): a step trains on prompts_per_step × G responses."
    )
    num_iterations: int = Field(1, ge=1, description="Passes over each step's responses (μ); > 1 reuses the old log-probs.")
    mini_batch_size: int | None = Field(
        None, ge=1, description="Responses per optimizer update (null: all of the step's: one update per pass)."
    )
    generation_batch_size: int | None = Field(None, ge=1, description="Responses generated per forward batch (null: all).")


class GRPOEvalConfig(Closed):
    temperature: float = Field(0.0, ge=0, description="Held-out eval sampling temperature (0: greedy).")
    max_new_tokens: int | None = Field(None, ge=1, description="Eval answer length (null: generation.max_new_tokens).")


class GRPOConfig(RunConfig):
    """Critic-free RL (``alignkit grpo``)."""

    model: ModelConfig = Field(..., description="The policy (usually an SFT model).")
    memory: Literal["separate", "shared-base"] = Field(
        "separate",
        description="separate: the policy (and, when kl.coef > 0, a reference model); shared-base: one frozen base, the "
        "policy a LoRA adapter on it, the reference the starting policy from the same base weights (lora/qlora).",
    )
    data: PromptDataConfig = Field(
        ..., description="Prompts (and each row's completion, passed to reward functions as its reference)."
    )
    rewards: RewardsConfig = Field(..., description="Where the rewards come from.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Rollout sampling.")
    grpo: GRPOAlgoConfig = Field(default_factory=GRPOAlgoConfig, description="Groups and updates.")
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="The advantage estimator.")
    loss: LossConfig = Field(default_factory=LossConfig, description="The policy loss and its aggregation.")
    kl: KLConfig = Field(default_factory=KLConfig, description="KL to the reference.")
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig, description="DAPO's dynamic sampling.")
    eval: GRPOEvalConfig = Field(default_factory=GRPOEvalConfig, description="Held-out eval (data.eval or data.eval_fraction).")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(learning_rate=1e-6, batch_size=8, lr_scheduler="constant"),
        description="Optimisation: max_steps counts GRPO steps; batch_size is the micro-batch (responses) of an update.",
    )
    disable_dropout: bool = Field(True, description="Zero every dropout in the policy and reference.")

    @model_validator(mode="after")
    def _consistent(self):
        a, g = self.advantage, self.grpo
        if a.estimator in GROUP_ESTIMATORS and g.group_size < 2:
            raise ValueError(
                f"advantage.estimator {a.estimator} needs grpo.group_size >= 2 (a group baseline), got {g.group_size}"
            )
        if a.estimator != "grpo" and a.scale == "batch":
            raise ValueError(f"advantage.scale 'batch' is for estimator grpo; {a.estimator} does not divide by a std")
        if self.dynamic_sampling.enabled and g.group_size < 2:
            raise ValueError("dynamic_sampling needs grpo.group_size >= 2 (it drops groups whose rewards are all equal)")
        if self.memory == "shared-base" and self.model.finetune not in ("lora", "qlora"):
            raise ValueError("memory 'shared-base' needs model.finetune lora or qlora (the policy is an adapter on the base)")
        if self.kl.placement == "reward" and self.kl.estimator != "k1" and self.kl.coef > 0:
            raise ValueError("kl.placement 'reward' sums k1 into the reward (RLOO, REINFORCE++): set kl.estimator k1")
        rows = g.prompts_per_step * g.group_size
        if g.mini_batch_size is not None and g.mini_batch_size > rows:
            raise ValueError(
                f"grpo.mini_batch_size {g.mini_batch_size} exceeds the step's responses ({rows} = prompts_per_step × group_size)"
            )
        if self.train.grad_accum != 1:
            raise ValueError(
                "train.grad_accum is not used by GRPO: grpo.mini_batch_size / train.batch_size sets the accumulation"
            )
        if self.rewards.overlong_buffer is not None and self.rewards.overlong_buffer > self.generation.max_new_tokens:
            raise ValueError("rewards.overlong_buffer cannot exceed generation.max_new_tokens")
        return self
