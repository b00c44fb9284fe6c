"""The only code that touches transformers/peft: init, loading, LoRA/QLoRA, saving, merging, generation.

Nothing heavy is imported here; the public names are resolved lazily on first use, so
``import alignkit.models`` (and ``alignkit --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelError": "alignkit.models.errors",
    "load_tokenizer": "alignkit.models.loading",
    "load_causal_lm": "alignkit.models.loading",
    "trainable_parameters": "alignkit.models.loading",
    "save_model": "alignkit.models.loading",
    "load_for_inference": "alignkit.models.loading",
    "merge_adapter": "alignkit.models.merge",
    "generate": "alignkit.models.generation",
    "build_tokenizer": "alignkit.models.tokenizer",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs only
    from alignkit.models.errors import ModelError
    from alignkit.models.generation import generate
    from alignkit.models.loading import (
        load_causal_lm,
        load_for_inference,
        load_tokenizer,
        save_model,
        trainable_parameters,
    )
    from alignkit.models.merge import merge_adapter
    from alignkit.models.tokenizer import build_tokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alignkit.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
