"""The stage registry: stage name -> (config schema, entry point) as "module:attr" strings, so that nothing
heavy is imported until a stage runs. The CLI and the pipeline both read it."""

from __future__ import annotations

import importlib

STAGES: dict[str, tuple[str, str]] = {
    "sft": ("alignkit.config.sft:SFTConfig", "alignkit.algorithms.sft:run"),
    "rm": ("alignkit.config.reward:RewardConfig", "alignkit.algorithms.reward:run"),
    "dpo": ("alignkit.config.dpo:DPOConfig", "alignkit.algorithms.dpo:run"),
    "orpo": ("alignkit.config.dpo:DPOConfig", "alignkit.algorithms.dpo:run"),
    "simpo": ("alignkit.config.dpo:DPOConfig", "alignkit.algorithms.dpo:run"),
    "kto": ("alignkit.config.dpo:DPOConfig", "alignkit.algorithms.dpo:run"),
    "ppo": ("alignkit.config.ppo:PPOConfig", "alignkit.algorithms.ppo:run"),
    "grpo": ("alignkit.config.grpo:GRPOConfig", "alignkit.algorithms.grpo:run"),
    "rloo": ("alignkit.config.grpo:GRPOConfig", "alignkit.algorithms.grpo:run"),
    "reinforce-pp": ("alignkit.config.grpo:GRPOConfig", "alignkit.algorithms.grpo:run"),
    "pipeline": ("alignkit.config.pipeline:PipelineConfig", "alignkit.orchestrate.pipeline:run"),
    "self-reward": ("alignkit.config.self_reward:SelfRewardConfig", "alignkit.orchestrate.self_reward:run"),
}
# Aliases of ``dpo`` that preset ``loss.type`` (a config naming another loss type is an error).
LOSS_ALIASES = ("orpo", "simpo", "kto")
# Aliases of ``grpo`` that preset ``advantage.estimator`` (a config naming another estimator is an error).
ESTIMATOR_ALIASES = {"rloo": "rloo", "reinforce-pp": "reinforce_pp"}


def load(ref: str):
    """``"module:attr"`` -> the object."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def schema(stage: str):
    return load(STAGES[stage][0])


def entry(stage: str):
    return load(STAGES[stage][1])
