"""Make a small randomly initialised causal LM, with its own tokenizer, offline.

The tokenizer is a byte-level BPE trained on the given files (see ``models/tokenizer.py``); the
model is a Llama, Qwen2 or Gemma2 config at a tiny or small size. The output directory loads with
plain ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from alignkit.models._fs import atomic_dir
from alignkit.models.errors import ModelError
from alignkit.models.tokenizer import build_tokenizer

ARCHS = ("llama", "qwen2", "gemma2")

# Shapes per size. tiny trains in seconds on a laptop CPU; small is a few million parameters.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=2048,
        vocab_size=2048,
    ),
    "small": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=1024,
        max_position_embeddings=2048,
        vocab_size=8192,
    ),
    "medium": dict(  # ~70M parameters: big enough that weights, not the framework, dominate memory
        hidden_size=768,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=4,
        intermediate_size=2048,
        max_position_embeddings=2048,
        vocab_size=8192,
    ),
}

TEXT_SUFFIXES = (".txt", ".md")


def _strings(value) -> Iterator[str]:
    """Every string inside ``value``, recursing into lists, tuples and dicts (values only)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def gather_texts(files: list[str]) -> list[str]:
    """Training text for the tokenizer: ``.txt``/``.md`` whole, data files row by row.

    Data files (jsonl, json, parquet, csv, datasets dirs) are read with
    ``alignkit.data.sources.read_rows``; every string value of every row is used.
    """
    texts: list[str] = []
    for f in files:
        path = Path(f).expanduser()
        if not path.exists():
            raise ModelError(f"tokenizer file {f!r} does not exist")
        if path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
            continue
        from alignkit.data.sources import read_rows

        for row, _ref in read_rows(str(path)):
            texts.extend(s for s in _strings(row) if s)
    return texts


def build_config(arch: str, size: str, *, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int):
    """The transformers config for ``arch`` at ``size`` (word embeddings tied to the output head)."""
    if arch not in ARCHS:
        raise ModelError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ModelError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    shape = {k: v for k, v in SIZES[size].items() if k != "vocab_size"}
    common = dict(
        **shape,
        vocab_size=vocab_size,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        # Tied: at these sizes the embedding matrix is most of the model; untying doubles it.
        tie_word_embeddings=True,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
    )
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common, head_dim=head_dim)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    from transformers import Gemma2Config

    return Gemma2Config(
        **common,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=min(1024, shape["max_position_embeddings"]),
    )


def _model_card(
    *,
    arch: str,
    size: str,
    files: list[str],
    n_texts: int,
    n_chars: int,
    split_digits: bool,
    vocab_size: int,
    tokenizer_vocab: int,
    n_params: int,
    seed: int,
    config,
    model_class: str,
) -> str:
    from alignkit import __version__

    file_list = "\n".join(f"- `{f}`" for f in files)
    return f"""# {arch}-{size} (random init)

A randomly initialised `{model_class}` made by
alignkit {__version__} with `alignkit.models.init_model.init_model(arch={arch!r}, size={size!r},
vocab_size={vocab_size}, seed={seed})`. It has not been trained: it is for tests, smoke runs and
learning the pipeline end to end.

- parameters: {n_params:,} (word embeddings tied to the output head)
- hidden size {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads
  ({config.num_key_value_heads} key/value heads), intermediate size {config.intermediate_size},
  max positions {config.max_position_embeddings}
- vocabulary: {vocab_size} embedding rows; the tokenizer has {tokenizer_vocab} tokens

## Tokenizer

Byte-level BPE trained on {n_texts:,} texts ({n_chars:,} characters){" with every digit a token of its own" if split_digits else ""} from:

{file_list}

Special tokens: `<|endoftext|>` (bos), `<|im_end|>` (eos, ends every chat turn), `<|pad|>`,
`<|im_start|>`. The chat template is ChatML. Generation stops at `<|im_end|>`.

Load it with `AutoModelForCausalLM.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`.
"""


def init_model(
    arch: str,
    size: str,
    tokenizer_files: list[str],
    out_dir: str,
    *,
    vocab_size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    split_digits: bool = False,
) -> Path:
    """Train a tokenizer on ``tokenizer_files``, randomly initialise an ``arch``/``size`` model, save both.

    ``arch``: llama | qwen2 | gemma2. ``size``: tiny | small (see ``SIZES``). ``vocab_size``
    defaults to the size's (2048 tiny, 8192 small and medium); the model has exactly that many embedding rows
    (the tokenizer may learn fewer on a small corpus). ``split_digits``: the tokenizer keeps every digit
    a token of its own (see ``build_tokenizer``). Weights are drawn with ``seed``; the global
    torch RNG is left as it was.

    ``out_dir`` is written atomically (temp dir beside it, then rename); an existing non-empty
    ``out_dir`` is an error unless ``overwrite``. Returns the absolute output path.
    """
    if arch not in ARCHS:
        raise ModelError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ModelError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    if not tokenizer_files:
        raise ModelError("init_model needs at least one file to train the tokenizer on")
    vocab_size = SIZES[size]["vocab_size"] if vocab_size is None else int(vocab_size)
    if vocab_size < 300:
        raise ModelError(f"vocab_size {vocab_size} is too small (the byte alphabet alone is 256 + 4 special tokens)")

    out = Path(out_dir).expanduser().absolute()
    with atomic_dir(out, overwrite=overwrite) as tmp:  # checks `out` before the slow work
        texts = gather_texts([str(f) for f in tokenizer_files])
        if not any(t.strip() for t in texts):
            raise ModelError(f"no text found in {', '.join(map(str, tokenizer_files))}")
        tokenizer = build_tokenizer(texts, vocab_size=vocab_size, split_digits=split_digits)
        if len(tokenizer) > vocab_size:  # cannot happen with BpeTrainer, but never index past the table
            raise ModelError(f"tokenizer has {len(tokenizer)} tokens, more than vocab_size {vocab_size}")

        config = build_config(
            arch,
            size,
            vocab_size=vocab_size,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        from transformers import AutoModelForCausalLM, GenerationConfig

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        n_params = sum(p.numel() for p in model.parameters())
        (tmp / "README.md").write_text(
            _model_card(
                arch=arch,
                size=size,
                files=[str(f) for f in tokenizer_files],
                n_texts=len(texts),
                n_chars=sum(len(t) for t in texts),
                split_digits=split_digits,
                vocab_size=vocab_size,
                tokenizer_vocab=len(tokenizer),
                n_params=n_params,
                seed=seed,
                config=model.config,
                model_class=type(model).__name__,
            ),
            encoding="utf-8",
        )
    return out
