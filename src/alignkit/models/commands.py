"""``alignkit init-model``, ``merge`` and ``generate``: each an options schema (pydantic only at import) and the entry
point that takes it (the heavy imports inside). Registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed


class InitModelOptions(Closed):
    """``alignkit init-model``: a randomly initialised model and a tokenizer trained on local files."""

    arch: Literal["llama", "qwen2", "gemma2"] = Field("llama", description="model architecture")
    size: Literal["tiny", "small", "medium"] = Field("tiny", description="model size (see docs/models.md)")
    tokenizer_from: Annotated[list[str], Opt(nargs="+", metavar="FILE")] = Field(
        description="text or data files to train the tokenizer on"
    )
    out: str = Field(description="output directory")
    vocab_size: int | None = Field(None, description="tokenizer vocabulary size (default: the size's own)")
    seed: int = Field(0, description="weight initialisation seed")
    overwrite: bool = Field(False, description="replace a non-empty --out directory")
    split_digits: bool = Field(False, description="tokenize every digit on its own (no merged digit runs)")


def init_model(opts: InitModelOptions) -> int:
    from alignkit.models.init_model import init_model as build

    out = build(
        opts.arch,
        opts.size,
        opts.tokenizer_from,
        opts.out,
        vocab_size=opts.vocab_size,
        seed=opts.seed,
        overwrite=opts.overwrite,
        split_digits=opts.split_digits,
    )
    print(f"wrote {opts.arch}/{opts.size} model and tokenizer to {out}")
    return 0


class MergeOptions(Closed):
    """``alignkit merge``: a LoRA adapter folded into its base model."""

    adapter: str = Field(description="LoRA adapter directory (with adapter_config.json)")
    out: str = Field(description="output directory for the merged model")
    dtype: str = Field("float32", description="dtype of the merged weights")
    overwrite: bool = Field(False, description="replace a non-empty --out directory")


def merge(opts: MergeOptions) -> int:
    from alignkit.models.merge import merge_adapter

    out = merge_adapter(opts.adapter, opts.out, dtype=opts.dtype, overwrite=opts.overwrite)
    print(f"merged {opts.adapter} into its base: {out}")
    return 0


class GenerateOptions(Closed):
    """``alignkit generate``: replies to one or more user messages, sampled (temperature 0.7) by default."""

    model: str = Field(description="model or adapter directory, or Hub id")
    prompt: list[str] = Field(description="a user message (repeatable)")
    max_new_tokens: int = Field(64, ge=1, description="most tokens generated per reply")
    temperature: float = Field(0.7, ge=0, description="sampling temperature, 0: greedy (default: 0.7, sampled; serve is greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (1: off)")
    seed: int = Field(0, description="sampling seed")


def generate(opts: GenerateOptions) -> int:
    from alignkit.models.generation import generate as sample
    from alignkit.models.loading import load_for_inference

    model, tokenizer = load_for_inference(opts.model)
    texts = sample(
        model,
        tokenizer,
        opts.prompt,
        max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        top_p=opts.top_p,
        seed=opts.seed,
    )
    for prompt, text in zip(opts.prompt, texts):
        print(f"### {prompt}\n{text}\n")
    return 0
