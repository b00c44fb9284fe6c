"""The pipeline's config (``alignkit pipeline``): several stages in one YAML, each in its own section.

```yaml
output_dir: runs/quickstart
base: runs/quickstart/base-model        # the starting model; ${base} in any stage
init: {arch: llama, size: tiny, tokenizer_from: [data/...]}   # create base when missing (offline)
sft: {model: {name_or_path: ${base}}, data: ..., train: ...}   # a stage config without output_dir
rm: {...}
ppo: {model: {name_or_path: ${sft}}, reward: {model: ${rm}}, ...}   # or dpo: {...}
compare: {models: {base: ${base}, sft: ${sft}, ppo: ${ppo}}, prompts: ${ppo.dir}/heldout_prompts.jsonl, reward_model: ${rm}}
```

A stage's output is ``output_dir/<stage>``; ``${stage}`` is its ``final`` model directory and
``${stage.dir}`` the run directory. Stages run in the order sft, rm, ppo, grpo, dpo, compare (those present).
Each stage section is validated by that stage's own schema before anything runs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.config.base import Closed
from alignkit.config.common import InitModelConfig

STAGE_ORDER = ("sft", "rm", "ppo", "grpo", "dpo", "compare")


class CompareStageConfig(Closed):
    models: dict[str, str] = Field(..., min_length=1, description="name -> model directory; the first is the reference.")
    prompts: str = Field(..., description="Prompt file (any data format; its prompt part), e.g. a stage's held-out prompts.")
    reward_model: str | None = Field(None, description="Reward model directory that scores every answer.")
    reward_function: str | None = Field(
        None, description="Or a reward function ('file.py:fn' / 'module:fn'), e.g. a verifier: its mean is the exact match."
    )
    reward_kwargs: dict = Field(default_factory=dict, description="Keyword arguments of reward_function.")
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts.")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0)
    batch_size: int = Field(8, ge=1)
    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="Generate with transformers, or with vLLM (a CUDA GPU; LoRA adapters merged first)."
    )
    min_distinct_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Warn of collapse below this share of distinct answers (lower it where right answers repeat).",
    )


class PipelineConfig(Closed):
    """Stages run one after another; a finished stage (its summary.json exists) is skipped on a re-run."""

    output_dir: str = Field(..., description="Each stage writes output_dir/<stage>.")
    base: str | None = Field(None, description="The starting model (referred to as ${base}).")
    init: InitModelConfig | None = Field(None, description="Create `base` first when it does not exist (offline).")
    sft: dict | None = Field(None, description="An `alignkit sft` config without output_dir.")
    rm: dict | None = Field(None, description="An `alignkit rm` config without output_dir.")
    ppo: dict | None = Field(None, description="An `alignkit ppo` config without output_dir.")
    grpo: dict | None = Field(None, description="An `alignkit grpo` config (any estimator) without output_dir.")
    dpo: dict | None = Field(None, description="An `alignkit dpo` config (any loss) without output_dir.")
    compare: CompareStageConfig | None = Field(None, description="Side-by-side comparison of the models.")
