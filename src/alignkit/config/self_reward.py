"""The self-rewarding stage's config (``alignkit self-reward``): iterations of sample -> judge -> pairs -> DPO.

```yaml
output_dir: runs/self-reward
model: {name_or_path: runs/sft/final}        # the starting (SFT) model
iterations: 2
prompts: {train: prompts.jsonl, heldout_rows: 32, self_instruct: {new_prompts: 16}}
generation: {n: 4, temperature: 0.8, top_p: 0.95, max_new_tokens: 128}
judge: {type: self, samples: 3}              # or {type: reward_model, model: DIR}, {type: function, function: "f.py:fn"}
pairs: {min_gap: 0.5}
dpo: {loss: {type: sigmoid, beta: 0.1}, train: {learning_rate: 5.0e-7}}
eval: {reward_model: runs/rm/final, human_pairs: data/pairs.jsonl}
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignkit.config.base import Closed
from alignkit.config.common import DataFormat, ModelConfig, RunConfig, TrainConfig
from alignkit.config.dpo import LossConfig, SigmoidLoss, loss_shorthand


class SelfInstructConfig(Closed):
    """New prompts the model writes from few-shot examples of the prompt set (self-instruct style)."""

    new_prompts: int = Field(0, ge=0, description="How many new prompts to ask for per iteration (0: none).")
    few_shot: int = Field(4, ge=1, description="Example prompts shown in each request.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the requests.")
    max_new_tokens: int = Field(64, ge=1, description="Longest new prompt.")
    min_words: int = Field(3, ge=1, description="Shorter new prompts are dropped (counted).")


class PromptsConfig(Closed):
    """Prompts: any format the data layer reads; the prompt part of each row is used, duplicates removed."""

    train: str = Field(..., description="Prompt source: file, datasets dir or hub name (any format).")
    format: DataFormat = Field("auto", description="Row format; 'auto' detects it from the first row's keys.")
    split: str = Field("train", description="Split of a hub dataset or DatasetDict.")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows: stop with an error, or skip and count.")
    max_rows: int | None = Field(None, ge=1, description="Read at most this many rows.")
    heldout: str | None = Field(None, description="Held-out evaluation prompts (default: the last heldout_rows of train).")
    heldout_rows: int = Field(32, ge=1, description="Held-out prompts used for evaluation.")
    per_iteration: int | None = Field(
        None, ge=1, description="Training prompts used per iteration (each iteration takes the next ones, cycling); null: all."
    )
    max_length: int = Field(256, ge=8, description="Longest prompt in tokens; longer prompts are dropped (counted).")
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig, description="Model-written prompts.")


class CandidateConfig(Closed):
    n: int = Field(4, ge=2, description="Samples per prompt (before removing duplicates).")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(128, ge=1, description="Longest candidate.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    backend: Literal["transformers", "vllm"] = Field(
        "transformers",
        description="Generate candidates, self-judgments and eval answers with transformers, or with vLLM (a CUDA GPU; "
        "each round's model loaded into a fresh engine, LoRA adapters merged first).",
    )


class JudgeConfig(Closed):
    type: Literal["self", "reward_model", "function"] = Field(
        "self", description="self: the current model with the rubric prompt; reward_model: a reward model dir; function: Python."
    )
    model: str | None = Field(None, description="reward_model: the reward model directory.")
    function: str | None = Field(
        None, description="function: 'file.py:fn' or 'module:fn', fn(prompts, responses) -> list[float | None]."
    )
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments passed to judge.function.")
    samples: int = Field(3, ge=1, description="self: judge samples per response, averaged (the paper: 3).")
    temperature: float = Field(0.7, ge=0, description="self: sampling temperature of the judge.")
    max_new_tokens: int = Field(160, ge=8, description="self: longest judgment (reasoning, then 'Score: N').")
    batch_size: int = Field(8, ge=1, description="Judge prompts per generate call / responses per reward-model forward.")

    @model_validator(mode="after")
    def _source(self):
        if self.type == "reward_model" and not self.model:
            raise ValueError("judge.type 'reward_model' needs judge.model (a reward model directory)")
        if self.type == "function" and not self.function:
            raise ValueError("judge.type 'function' needs judge.function ('file.py:fn' or 'module:fn')")
        if self.type != "reward_model" and self.model:
            raise ValueError(f"judge.model is only read by judge.type 'reward_model' (type is {self.type!r})")
        if self.type != "function" and self.function:
            raise ValueError(f"judge.function is only read by judge.type 'function' (type is {self.type!r})")
        return self


class PairsConfig(Closed):
    min_gap: float = Field(
        0.5, ge=0, description="Keep a prompt's (best, worst) pair only when their scores differ by this much."
    )
    max_length_ratio: float | None = Field(
        None,
        ge=1,
        description="Length-bias guard: drop pairs whose chosen answer has more than this many times the rejected one's "
        "words (counted); null: keep all.",
    )


class SelfRewardDPOConfig(Closed):
    """The training step of each iteration (mode dpo): any loss of the DPO stage."""

    loss: LossConfig = Field(default_factory=SigmoidLoss, description="The loss and its hyper-parameters.")
    max_length: int = Field(512, ge=8, description="Longest prompt + answer in tokens.")
    packing: bool = Field(True, description="Padding-free batches.")
    precompute_ref: bool = Field(False, description="Cache the reference log-probs before training (one model in memory).")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(learning_rate=1e-6, epochs=1.0), description="Optimisation of each iteration."
    )

    @model_validator(mode="before")
    @classmethod
    def _loss_shorthand(cls, data):
        return loss_shorthand(data)


class SelfRewardSFTConfig(Closed):
    """The training step of each iteration in mode best-of-n (SFT on the best candidate per prompt)."""

    max_length: int = Field(512, ge=8, description="Longest prompt + answer in tokens.")
    packing: bool = Field(False, description="Padding-free packing.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(learning_rate=1e-5, epochs=1.0), description="Optimisation of each iteration."
    )


class SelfRewardEvalConfig(Closed):
    """Evaluation after every iteration (and of the starting model, as iteration 0) on the held-out prompts."""

    judge: Literal["initial", "current"] = Field(
        "initial",
        description="judge.type self: who scores the held-out answers: the starting model (one fixed judge, comparable "
        "across iterations) or the iteration's own model (the paper's self-judge).",
    )
    reward_model: str | None = Field(None, description="A reward model that also scores the held-out answers.")
    human_pairs: str | None = Field(
        None, description="Preference pairs (any pair format): judge.type self also reports its agreement with the human labels."
    )
    max_pairs: int = Field(64, ge=1, description="At most this many human pairs.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature of the held-out answers (0: greedy).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest held-out answer (default: generation.max_new_tokens).")
    n_boot: int = Field(1000, ge=100, description="Bootstrap replicates behind the confidence intervals.")


class SelfRewardConfig(RunConfig):
    """Self-rewarding rounds (``alignkit self-reward``), or best-of-n rejection-sampling fine-tuning."""

    model: ModelConfig = Field(..., description="The starting model (usually an SFT model).")
    mode: Literal["dpo", "best-of-n"] = Field(
        "dpo", description="dpo: best vs worst candidate as preference pairs; best-of-n: SFT on the best candidate."
    )
    iterations: int = Field(2, ge=1, description="Rounds of sample -> judge -> train.")
    seed: int = Field(0, description="Seed of prompt order, sampling and judging.")
    prompts: PromptsConfig = Field(..., description="Where prompts come from.")
    generation: CandidateConfig = Field(default_factory=CandidateConfig, description="Candidate sampling.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Who scores the candidates.")
    pairs: PairsConfig = Field(default_factory=PairsConfig, description="Which candidates make a training pair.")
    dpo: SelfRewardDPOConfig = Field(default_factory=SelfRewardDPOConfig, description="Training in mode dpo.")
    sft: SelfRewardSFTConfig = Field(default_factory=SelfRewardSFTConfig, description="Training in mode best-of-n.")
    eval: SelfRewardEvalConfig = Field(default_factory=SelfRewardEvalConfig, description="Evaluation after each iteration.")
