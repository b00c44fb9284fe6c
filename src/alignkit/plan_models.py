"""The shapes of the hub models the shipped recipes name, for ``alignkit plan`` offline.

Copied from each model's ``config.json`` on the hub (only the keys the planner reads). ``alignkit plan`` reads a
local ``config.json``, or the hub's when online, first; this table is the fallback when the hub cannot be reached
(``HF_HUB_OFFLINE=1``, no network, a gated repository without a token).
"""

from __future__ import annotations

_LLAMA32_3B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 8192,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
_LLAMA3_8B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 14336,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
_GEMMA2_9B = {
    "model_type": "gemma2",
    "vocab_size": 256000,
    "hidden_size": 3584,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "intermediate_size": 14336,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
}
_QWEN25_15B = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 1536,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "intermediate_size": 8960,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

KNOWN_CONFIGS: dict[str, dict] = {
    "meta-llama/Llama-3.2-3B": _LLAMA32_3B,
    "meta-llama/Llama-3.2-3B-Instruct": _LLAMA32_3B,
    "meta-llama/Meta-Llama-3-8B": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B": _LLAMA3_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "google/gemma-2-9b": _GEMMA2_9B,
    "google/gemma-2-9b-it": _GEMMA2_9B,
    "Qwen/Qwen2.5-1.5B-Instruct": _QWEN25_15B,
    "Qwen/Qwen2.5-1.5B": _QWEN25_15B,
}
