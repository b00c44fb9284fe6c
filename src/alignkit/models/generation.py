"""Batched chat generation: render with the chat template, left-pad, generate, decode the new text."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from alignkit.data.examples import Message, as_messages
from alignkit.models.errors import ModelError

Prompt = str | Sequence[Message] | Sequence[dict]


def _as_messages(prompt: Prompt) -> list[dict]:
    try:
        return as_messages(prompt)
    except ValueError as err:
        raise ModelError(str(err)) from None


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The prompt as text, through the tokenizer's chat template, ending with the assistant header."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template, so chat prompts cannot be rendered")
    return tokenizer.apply_chat_template(_as_messages(prompt), add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """The prompt's token ids through the chat template, ending with the assistant header; message content is
    tokenized as text, so a ``<|im_end|>`` typed by a user is never the control token
    (``alignkit.data.chat.encode_chat``). Tokenize this, not :func:`render_prompt`'s text."""
    from alignkit.data.chat import encode_chat

    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template, so chat prompts cannot be rendered")
    try:
        return encode_chat(tokenizer, _as_messages(prompt), add_generation_prompt=True)
    except ValueError as err:  # a template that rewrites content holding special-token strings
        raise ModelError(str(err)) from None


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in [tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]:
        if x is not None and x not in ids:
            ids.append(int(x))
    return ids


def generate(
    model,
    tokenizer,
    prompts: list[str] | list[list[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int | None = 0,
    batch_size: int = 8,
) -> list[str]:
    """One completion per prompt: only the new text, decoded without special tokens.

    Each prompt (a str becomes one user message) is rendered with the chat template and
    ``add_generation_prompt=True`` (:func:`encode_prompt`: message content never becomes control tokens),
    then generated in left-padded batches of ``batch_size``
    (prompts of similar length batched together; results come back in input order).
    ``temperature == 0`` is greedy; otherwise sampling with ``temperature`` and ``top_p`` only —
    the processors a model's generation_config may ask for (top_k, repetition_penalty, no_repeat_ngram_size,
    suppress_tokens...) are switched off (:func:`sampling_config`), so results do not depend on them. ``seed`` seeds sampling inside a forked RNG (the global torch
    RNG is left as it was); ``None`` uses the global RNG. Generation stops at the tokenizer's eos
    and any eos in the model's generation config. The model is put in eval mode for the call and
    its train/eval mode restored afterwards.
    """
    if max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ModelError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ModelError(f"top_p must be in (0, 1], got {top_p}")
    if batch_size < 1:
        raise ModelError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []

    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    check_context(model, [len(ids) for ids in encoded], max_new_tokens)  # before any generation: refused, not truncated
    new = generate_ids(
        model,
        tokenizer,
        encoded,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
    )
    return tokenizer.batch_decode([ids for ids, _ in new], skip_special_tokens=True)


def context_length(model) -> int | None:
    """The model's context (``config.max_position_embeddings``), or None when its config does not say."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_context(model, prompt_lengths: Sequence[int], max_new_tokens: int) -> None:
    """A one-line :class:`ModelError` when a prompt (token count) plus ``max_new_tokens`` exceeds the model's
    context: such prompts are refused, never truncated (a cut prompt is another question) nor run past the
    positions the model was trained on."""
    limit = context_length(model)
    if limit is None:
        return
    over = [(i, n) for i, n in enumerate(prompt_lengths) if n + max_new_tokens > limit]
    if over:
        i, n = over[0]
        more = f" (and {len(over) - 1} more prompts)" if len(over) > 1 else ""
        raise ModelError(
            f"prompt {i + 1} is {n:,} tokens{more}; with max_new_tokens {max_new_tokens} that exceeds the model's context "
            f"of {limit} tokens: shorten it or lower max_new_tokens"
        )


# Every GenerationConfig field that adds a logits processor or changes the decoding strategy, at the value that
# turns it off. Set explicitly, because transformers fills each field left at None from the model's own
# generation_config (a generation_config.json with top_k 20, repetition_penalty 1.1 ...) and then from its global
# defaults (top_k 50): with them the distribution sampled would not be softmax(logits / temperature).
_NEUTRAL: dict = dict(
    num_beams=1,
    num_return_sequences=1,
    top_k=0,
    typical_p=1.0,
    epsilon_cutoff=0.0,
    eta_cutoff=0.0,
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    min_length=0,
    min_new_tokens=0,
    renormalize_logits=False,
    remove_invalid_values=False,
    guidance_scale=1.0,
)
# What generate() may still take from the model's generation_config: its special token ids, nothing that samples.
_KEPT_FROM_MODEL = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def sampling_config(*, max_new_tokens: int, temperature: float, top_p: float, eos_token_id: list[int], pad_token_id: int | None):
    """The explicit ``transformers.GenerationConfig`` :func:`generate_ids` passes: greedy when ``temperature == 0``,
    otherwise pure sampling from softmax(logits / temperature), truncated to the nucleus when ``top_p < 1`` — and
    every other logits processor (top-k, repetition penalty, n-gram blocking, min length, typical-p...) off."""
    from transformers import GenerationConfig

    common = dict(_NEUTRAL, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True)
    if temperature == 0:
        return GenerationConfig(do_sample=False, **common)
    return GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, **common)


_SWAP_LOCK = threading.Lock()
_SWAPPED: dict[int, list] = {}  # id(model) -> [callers inside, [(module, its own generation_config), ...]]


@contextmanager
def _model_sampling_defaults_off(model):
    """While inside, each ``GenerationMixin`` under ``model`` holds a bare generation_config (its special token ids
    only): transformers merges that object into the config passed to ``generate``, filling every field left at
    None — so processors whose "off" value is None (suppress_tokens, bad_words_ids, sequence_bias, min_p,
    forced_eos_token_id...) cannot come back from a checkpoint's generation_config.json. Restored when the last
    caller leaves: concurrent callers on one model (the server's threads) share one swap, counted under a lock, so
    none restores the model's own config while another is still generating."""
    from transformers import GenerationConfig, GenerationMixin

    key = id(model)
    with _SWAP_LOCK:
        entry = _SWAPPED.get(key)
        if entry is None:
            modules = model.modules() if hasattr(model, "modules") else ()
            held = [
                (m, m.generation_config) for m in modules if isinstance(m, GenerationMixin) and m.generation_config is not None
            ]
            for m, cfg in held:
                m.generation_config = GenerationConfig(**{k: getattr(cfg, k, None) for k in _KEPT_FROM_MODEL})
            entry = _SWAPPED[key] = [0, held]
        entry[0] += 1
    try:
        yield
    finally:
        with _SWAP_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                for m, cfg in entry[1]:
                    m.generation_config = cfg
                del _SWAPPED[key]


def generate_ids(
    model,
    tokenizer,
    encoded: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int | None = 0,
    batch_size: int = 8,
) -> list[tuple[list[int], bool]]:
    """Sample a continuation of each token-id prompt: ``[(new ids up to and including the first EOS, ended with
    EOS?)]`` in input order. Left-padded batches of similar length, the KV cache, ``temperature == 0`` greedy;
    ``seed`` as in :func:`generate`. Tokens after the first EOS (another row of the batch still running) are dropped.

    The distribution sampled is exactly softmax(logits / temperature), restricted to the nucleus when
    ``top_p < 1``: the explicit :func:`sampling_config` is passed, and the model's own generation_config is
    swapped for a bare one (special token ids only) during the call, so nothing in a checkpoint's
    generation_config.json changes it (tested)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = sampling_config(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_token_id=eos, pad_token_id=pad_id
    )

    device = _model_device(model)
    was_training = model.training
    model.eval()
    results: list[tuple[list[int], bool]] = [([], False)] * len(encoded)
    rng_devices = []
    if device.type == "cuda":
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with (
            torch.random.fork_rng(devices=rng_devices, enabled=seed is not None),
            torch.no_grad(),
            _model_sampling_defaults_off(model),
        ):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = tokenizer.pad(
                    {"input_ids": [list(encoded[i]) for i in idx]},
                    padding=True,
                    padding_side="left",
                    return_tensors="pt",
                )
                input_ids = batch["input_ids"].to(device)
                attention_mask = batch["attention_mask"].to(device)
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
                new = out[:, input_ids.shape[1] :].tolist()  # (B, <= max_new_tokens)
                for i, ids in zip(idx, new):
                    cut = next((k for k, t in enumerate(ids) if t in eos), None)
                    results[i] = (ids[: cut + 1], True) if cut is not None else (ids, False)
    finally:
        model.train(was_training)
    return results
