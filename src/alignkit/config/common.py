"""Config sections shared by every training stage: model, data, train.

Each stage's schema (``alignkit.config.sft.SFTConfig`` ...) composes these; only a stage's entry point
reads a config, library functions take explicit arguments.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.config.base import Closed

DataFormat = Literal[
    "auto", "text", "prompt_only", "prompt_completion", "unpaired", "messages", "sharegpt", "preference", "hh_rlhf", "rm_static"
]


class LoraConfig(Closed):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt; 'all-linear' = every linear layer but the LM head."
    )


class InitModelConfig(Closed):
    """Build a fresh model with ``alignkit init-model`` when ``name_or_path`` does not exist yet."""

    arch: Literal["llama", "qwen2", "gemma2"] = Field("llama", description="Architecture family.")
    size: Literal["tiny", "small", "medium"] = Field(
        "tiny", description="tiny: fast tests on CPU; small: a few M parameters; medium: ~70M (memory benchmarks)."
    )
    tokenizer_from: list[str] = Field(..., min_length=1, description="Text or data files the tokenizer is trained on.")
    vocab_size: int | None = Field(None, ge=300, description="Tokenizer vocabulary (default: by size).")
    seed: int = Field(0, description="Seed of the random initialisation.")
    split_digits: bool = Field(False, description="Tokenize every digit on its own (arithmetic tasks).")


class ModelConfig(Closed):
    name_or_path: str = Field(..., description="Hub id or local directory of a causal LM (save_pretrained layout).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype when loading (float32 on CPU)."
    )
    finetune: Literal["full", "lora", "qlora"] = Field(
        "full", description="Train all weights, LoRA adapters, or LoRA on a 4-bit NF4 base (CUDA + bitsandbytes)."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (lora / qlora).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; sdpa and eager support padding-free packing."
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the model directory/hub.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    init: InitModelConfig | None = Field(
        None, description="If set and name_or_path does not exist, create it first (random init, offline)."
    )


class TrainSource(Closed):
    """One of several training sources: ``data.train: [a.jsonl, {path: b.jsonl, repeat: 3}]``."""

    path: str = Field(..., description="File (.jsonl/.jsonl.gz/.json/.parquet/.csv), datasets dir, or hub name.")
    name: str | None = Field(None, description="Label in logs and per-source eval metrics (default: the file name).")
    repeat: int = Field(
        1,
        ge=1,
        description="Use each training row this many times per epoch (upsample a small source); held-out rows never repeat.",
    )
    max_rows: int | None = Field(None, ge=1, description="Read at most this many rows of this source.")


class SourceConfig(Closed):
    """Where the rows come from and how bad rows are handled (every stage's data section has these)."""

    train: str | list[str | TrainSource] = Field(
        ...,
        description="Training data: file (.jsonl/.jsonl.gz/.json/.parquet/.csv), datasets dir, or hub name; or a "
        "list of them (paths or {path, name, repeat, max_rows}), read one after the other.",
        min_length=1,
    )
    eval: str | None = Field(None, description="Evaluation data, same kinds as train.")
    format: DataFormat = Field("auto", description="Row format; 'auto' detects it from the first row's keys.")
    split: str = Field("train", description="Split to read from a hub dataset or datasets DatasetDict.")
    eval_split: str = Field("test", description="Split for eval when eval is a hub name/DatasetDict.")
    max_length: int = Field(1024, ge=8, description="Longest tokenised example (prompt + completion).")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows: stop with an error, or skip, count and report.")
    max_rows: int | None = Field(None, ge=1, description="Read at most this many training rows.")
    eval_rows: int | None = Field(None, ge=1, description="Read at most this many eval rows.")

    def train_sources(self):
        """``data.train`` for the data layer: the path itself, or a list of ``alignkit.data.mixture.DataSource``."""
        if isinstance(self.train, str):
            return self.train
        from alignkit.data.mixture import as_sources

        return as_sources([t.model_dump() if isinstance(t, TrainSource) else t for t in self.train])


class DataConfig(SourceConfig):
    """SFT data: sources plus how examples are cut, masked and packed."""

    val_size: float = Field(
        0, ge=0, description="Hold out this many training examples (or this fraction, if < 1) for eval when eval is unset."
    )
    overlong: Literal["truncate", "drop"] = Field(
        "truncate", description="Over-long examples: truncate from the right, or drop (both are counted)."
    )
    train_on_prompt: bool = Field(False, description="Also put loss on the prompt tokens (default: completion only).")
    packing: bool = Field(False, description="Padding-free packing: a micro-batch is one row, positions restart per example.")


class TrainConfig(Closed):
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Examples per micro-batch (per process).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit"] = Field(
        "adamw",
        description="adamw: torch AdamW (fp32 states); adamw_8bit: bitsandbytes 8-bit states; paged_*: bitsandbytes "
        "states in CUDA unified memory (CUDA only).",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW beta2.")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps (takes precedence over warmup_ratio).")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Warm-up as a fraction of total steps.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm (null: no clipping).")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="Autocast precision (accelerate).")
    log_every: int = Field(1, ge=1, description="Log metrics every N steps.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N steps (and at the end) when data.eval is set.")
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps (null: only the final model).")
    save_total_limit: int = Field(2, ge=1, description="Keep the newest K checkpoints.")
    eval_batch_size: int | None = Field(None, ge=1, description="Eval micro-batch size (default: batch_size).")
    group_by_length: bool = Field(
        False, description="Batch examples of similar length (sorted within shuffled runs of 50 batches): less padding."
    )
    peak_tflops: float | None = Field(
        None,
        gt=0,
        description="This device's matmul peak in TFLOP/s (benchmarks/matmul_peak.py measures it): metrics log mfu "
        "= achieved tflops / peak; null: tflops only.",
    )


class RunConfig(Closed):
    """Keys every training stage has."""

    output_dir: str = Field(..., description="Where config.yaml, metrics.jsonl, checkpoints/ and final/ go.")
    resume: Literal["auto", "never", "force"] = Field(
        "auto",
        description="auto: continue from the newest checkpoint that verifies, if the config changed only in "
        "max_steps/intervals/output options; force: also apply any other change (recorded); never: start over.",
    )
    tensorboard: bool = Field(True, description="Also log metrics to output_dir/tensorboard (when tensorboard is installed).")
