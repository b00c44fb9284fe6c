"""Model FLOPs of a decoder causal LM step, for throughput (TFLOP/s) and model FLOP utilisation (MFU).

The count is the usual *model* FLOPs (PaLM, appendix B; Megatron-LM's MFU), not the hardware's:

- **Weights**: ``2·N`` FLOPs per token forward (one multiply-add per weight) and ``4·N`` backward, so
  ``6·N`` per trained token. ``N`` is every parameter that a token meets in a matmul: all of the decoder
  layers, the final norm, **and the LM head (vocab × d)**, which is a real matmul — counted once even when
  it is tied to the input embedding. The input embedding (a table lookup) and learned position embeddings
  are left out. Norm weights and biases are in ``N`` (negligible; counting them is simpler than not).
- **Attention scores**: per layer and sequence of length ``s``, ``QKᵀ`` and ``softmax·V`` are
  ``2·s²·d_attn`` FLOPs each forward (``d_attn = heads × head_dim``), i.e. ``4·L·d_attn·s`` per token
  forward and ``12·L·d_attn·s`` fwd+bwd — the PaLM/Megatron term. We count the **full s×s** score matrix,
  not the causal half, as PaLM and nanoGPT's MFU do; every figure alignkit reports uses this same rule.
  ``s`` is each sequence's own length (packed documents attend only within themselves), so padding is
  never counted: it is waste, and MFU should show it.
- **Forward-only passes** (DPO's reference model, PPO/GRPO log-prob passes, KTO's KL estimate) count
  ``2·N`` per token plus the forward attention term ``4·L·d_attn·s``.

Conventions that make model FLOPs differ from the work done, on purpose (so MFU compares across setups):

- **LoRA / QLoRA**: still ``6·N`` for the base (the convention). The real backward through frozen weights
  skips the weight gradients (about ``2·N`` per token), so the true work is nearer ``4·N``; MFU with LoRA
  therefore overstates how busy the device is. Adapter parameters are not added (tiny).
- **Gradient checkpointing** recomputes the forward (``8·N`` real); model FLOPs stay ``6·N`` (that is the
  difference between MFU and "hardware FLOP utilisation").
- alignkit projects only completion positions onto the vocabulary (``logits_to_keep``); the LM head is
  still counted for every token, as the formula does for any implementation.

Pure functions of numbers; :func:`shape_from_config` imports transformers lazily.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a decoder causal LM."""

    n_params: int  # N: non-embedding parameters, LM head (vocab × d) included once even when tied
    n_layers: int  # L: decoder layers
    attn_dim: int  # d_attn: num_attention_heads × head_dim (the width of Q; = hidden_size for most models)


def forward_flops(shape: ModelShape, seq_lens: Iterable[int]) -> float:
    """FLOPs of one forward pass over sequences of the given lengths (tokens, no padding):
    ``Σ_s (2·N·s + 4·L·d_attn·s²)``."""
    total = 0.0
    for s in seq_lens:
        total += 2.0 * shape.n_params * s + 4.0 * shape.n_layers * shape.attn_dim * s * s
    return total


def train_flops(shape: ModelShape, seq_lens: Iterable[int]) -> float:
    """FLOPs of forward + backward over the sequences: three times the forward,
    ``Σ_s (6·N·s + 12·L·d_attn·s²)``."""
    return 3.0 * forward_flops(shape, seq_lens)


def step_flops(shape: ModelShape, trained: Iterable[int], forward_only: Iterable[int] = ()) -> float:
    """FLOPs of a step that trains on the sequences ``trained`` (lengths) and runs a forward-only pass of
    the same model shape over ``forward_only`` (e.g. a reference model's log-probs)."""
    return train_flops(shape, trained) + forward_flops(shape, forward_only)


def rl_step_flops(
    shape: ModelShape, sampled: Iterable[int], trained: Iterable[int], *, forward_passes: int, train_passes: int
) -> float:
    """FLOPs of an RL step (PPO, GRPO) with models of one shape: generating the ``sampled`` sequences (prompt +
    response lengths; with a KV cache each token still meets every weight once, so one forward over the whole
    sequence), ``forward_passes`` no-gradient passes over the ``trained`` sequences (old, reference, value
    log-probs) and ``train_passes`` forward+backward passes over them (epochs / iterations, and PPO's value
    model). A reward model of another shape is not counted."""
    trained = list(trained)
    return (
        forward_flops(shape, sampled)
        + forward_passes * forward_flops(shape, trained)
        + train_passes * train_flops(shape, trained)
    )


def achieved(flops: float, seconds: float, peak_tflops: float | None, devices: int = 1) -> dict[str, float]:
    """``{"tflops": flops / seconds / 1e12}`` and, when the peak (TFLOP/s per device) is known,
    ``"mfu": tflops / (peak · devices)``. ``flops`` is the step's total over all ``devices``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    tflops = flops / seconds / 1e12
    out = {"tflops": tflops}
    if peak_tflops is not None:
        out["mfu"] = tflops / (peak_tflops * devices)
    return out


def _get(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def shape_from_config(hf_config, *, trust_remote_code: bool = False) -> ModelShape:
    """The :class:`ModelShape` of a transformers causal-LM config (``model.config``), counted exactly:
    the model is built on the ``meta`` device (no memory, no weights), its parameters counted, the input
    embedding (and learned position embeddings) taken out and the LM head's ``vocab × d`` put in once
    (it is tied to the input embedding in many small models and would otherwise be missing).

    The count is of the base model: a PEFT model's ``config`` is its base's, and a 4-bit model's packed
    weights do not change it (they are counted at their logical size)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = getattr(hf_config, "text_config", None) or hf_config  # multimodal wrappers: the language model
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors are yielded once
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    head_numel = head.weight.numel() if head is not None else embed.numel()
    tied = head is not None and head.weight is embed
    n = total - embed.numel() + (head_numel if tied else 0)
    for name, p in model.named_parameters():  # learned absolute positions (GPT-2's wpe, OPT's embed_positions)
        if name.endswith(("wpe.weight", "embed_positions.weight", "position_embeddings.weight")):
            n -= p.numel()
    n_layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _get(cfg, "hidden_size", "n_embd", "d_model")
    heads = _get(cfg, "num_attention_heads", "n_head", "num_heads")
    head_dim = _get(cfg, "head_dim", default=None) or (hidden // heads)
    return ModelShape(n_params=int(n), n_layers=int(n_layers), attn_dim=int(heads * head_dim))


def shape_or_none(hf_config, *, trust_remote_code: bool = False, log=print) -> ModelShape | None:
    """:func:`shape_from_config` for a training stage: a model it cannot build on the meta device (an exotic
    remote-code architecture) costs the ``tflops``/``mfu`` metrics, said once through ``log``, not the run."""
    try:
        return shape_from_config(hf_config, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - an optional metric must not stop training
        log(f"no tflops/mfu metrics: cannot count this model's FLOPs ({type(e).__name__}: {e})")
        return None
