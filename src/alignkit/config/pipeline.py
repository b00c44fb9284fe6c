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
``${stage.dir}`` the run directory (references are resolved when the config is loaded, in the compare section
too). Stages run in the order sft, rm, ppo, grpo, dpo, compare (those present; at least one).
Each stage section is validated by that stage's own schema when the pipeline config is (the fields are typed
as the stage configs; references are resolved and ``output_dir`` set first), and an error names the key in the
pipeline file (``pipeline.yaml: unknown key 'sft.train.max_stpes'``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from alignkit.config.base import Closed, ConfigError
from alignkit.config.common import InitModelConfig
from alignkit.config.dpo import DPOConfig
from alignkit.config.grpo import GRPOConfig
from alignkit.config.ppo import PPOConfig
from alignkit.config.reward import RewardConfig
from alignkit.config.sft import SFTConfig

STAGE_ORDER = ("sft", "rm", "ppo", "grpo", "dpo", "compare")
SECTION_SCHEMAS = {"sft": SFTConfig, "rm": RewardConfig, "ppo": PPOConfig, "grpo": GRPOConfig, "dpo": DPOConfig}
_REF = re.compile(r"\$\{([A-Za-z_]+)(\.dir)?\}")


def resolve_refs(value, refs: dict[str, str | None], where: str):
    """Replace ``${name}`` / ``${name.dir}`` in every string of ``value`` (nested dicts and lists)."""
    if isinstance(value, dict):
        return {k: resolve_refs(v, refs, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, refs, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        key = m.group(1) + (m.group(2) or "")
        if key not in refs or refs[key] is None:
            known = ", ".join(sorted(k for k, v in refs.items() if v is not None))
            raise ConfigError(f"pipeline: {where}: unknown reference ${{{key}}} (known: {known})")
        return str(refs[key])

    return _REF.sub(sub, value)


def references(output_dir: str, base: str | None) -> dict[str, str | None]:
    """What ``${...}`` may name: ``base``, ``output_dir``, and each stage's ``final`` (``${sft}``) and run
    directory (``${sft.dir}``)."""
    out = Path(output_dir)
    refs: dict[str, str | None] = {"base": base, "output_dir": str(out)}
    for stage in STAGE_ORDER:
        refs[stage] = str(out / stage / "final")
        refs[f"{stage}.dir"] = str(out / stage)
    return refs


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

    @model_validator(mode="after")
    def _one_scorer(self):
        if self.reward_model is not None and self.reward_function is not None:
            raise ValueError("set one of reward_model and reward_function, not both")
        return self


class PipelineConfig(Closed):
    """Stages run one after another; a finished stage (its summary.json exists) is skipped on a re-run."""

    output_dir: str = Field(..., description="Each stage writes output_dir/<stage>.")
    base: str | None = Field(None, description="The starting model (referred to as ${base}).")
    init: InitModelConfig | None = Field(None, description="Create `base` first when it does not exist (offline).")
    sft: SFTConfig | None = Field(None, description="An `alignkit sft` config without output_dir.")
    rm: RewardConfig | None = Field(None, description="An `alignkit rm` config without output_dir.")
    ppo: PPOConfig | None = Field(None, description="An `alignkit ppo` config without output_dir.")
    grpo: GRPOConfig | None = Field(None, description="An `alignkit grpo` config (any estimator) without output_dir.")
    dpo: DPOConfig | None = Field(None, description="An `alignkit dpo` config (any loss) without output_dir.")
    compare: CompareStageConfig | None = Field(None, description="Side-by-side comparison of the models.")

    @model_validator(mode="before")
    @classmethod
    def _stage_sections(cls, data: Any) -> Any:
        """Each stage section (a mapping) with its references resolved and ``output_dir`` set to
        ``output_dir/<stage>``, still a mapping: pydantic validates it as the field's stage config, so an error
        is named by its key in the pipeline file (``sft.train.max_stpes``). The compare section's references
        are resolved too."""
        if not isinstance(data, dict) or not isinstance(data.get("output_dir"), str):
            return data  # the field validation reports it
        out = Path(data["output_dir"])
        refs = references(data["output_dir"], data.get("base") if isinstance(data.get("base"), str) else None)
        data = dict(data)
        for stage in SECTION_SCHEMAS:
            section = data.get(stage)
            if not isinstance(section, dict):
                continue
            if "output_dir" in section and section["output_dir"] != str(out / stage):
                raise ConfigError(f"pipeline: {stage}.output_dir is set by the pipeline ({out / stage}); remove it")
            data[stage] = resolve_refs({**section, "output_dir": str(out / stage)}, refs, stage)
        if isinstance(data.get("compare"), dict):  # not a stage run: no output_dir of its own to set
            data["compare"] = resolve_refs(data["compare"], refs, "compare")
        return data

    @model_validator(mode="after")
    def _some_stage(self):
        if not self.present():
            raise ValueError(f"no stage sections ({', '.join(STAGE_ORDER)})")
        return self

    def present(self) -> list[str]:
        """The stages with a section, in run order (``STAGE_ORDER``)."""
        return [s for s in STAGE_ORDER if getattr(self, s) is not None]
