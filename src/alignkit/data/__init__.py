"""Data: read rows, convert formats to ``Example``s, tokenize with a loss mask, collate batches.

    read_rows(source) -> (row, RowRef) ...        sources.py   local files, datasets folders, hub
    load_examples(source, fmt=...) -> LoadedData  formats.py   format detection and conversion
    tokenize_examples(examples, tokenizer, ...)   tokenize.py  chat template + loss mask
    collate_padded / collate_packed -> Batch      collate.py   pre-shifted labels, packing
    inspect_data / print_report                   inspect.py   ``alignkit data inspect``

The names below are importable from ``alignkit.data`` directly; submodules are imported on first
use, so ``import alignkit.data.errors`` stays light (no torch, no transformers).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "errors",
    "RowRef": "errors",
    "Example": "examples",
    "Message": "examples",
    "read_rows": "sources",
    "FORMATS": "formats",
    "LoadedData": "formats",
    "detect_format": "formats",
    "to_example": "formats",
    "load_examples": "formats",
    "ensure_chat_template": "tokenize",
    "TokenizedExample": "tokenize",
    "TokenizedData": "tokenize",
    "tokenize_example": "tokenize",
    "tokenize_examples": "tokenize",
    "Batch": "collate",
    "IGNORE_INDEX": "collate",
    "collate_padded": "collate",
    "collate_packed": "collate",
    "InspectReport": "inspect",
    "inspect_data": "inspect",
    "print_report": "inspect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"alignkit.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'alignkit.data' has no attribute {name!r}")
