"""Retrieval-augmented generation: read and chunk documents, embed, index, retrieve, answer, cache answers.

The public names load on first use (module ``__getattr__``), so ``import alignkit.rag`` stays light: faiss,
sentence-transformers and torch are imported only by what needs them.

- :class:`Embedder` (``embed``): sentence embeddings (all-MiniLM-L6-v2 by default, offline).
- :class:`VectorIndex` (``vectors``): persistent cosine top-k (faiss HNSW).
- :class:`CorpusIndex` (``store``): chunk texts in SQLite + their vectors; incremental, crash-safe updates.
- :class:`Retriever`, :class:`Hit` (``retrieve``): top-k with optional MMR re-ranking.
- :class:`RagPipeline`, :class:`RagAnswer` (``pipeline``): cache check, retrieval, prompt, generation.
- :class:`SemanticCache` (``cache``): answers reused for paraphrased questions.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Embedder": "embed",
    "EmbedderLike": "embed",
    "VectorIndex": "vectors",
    "CorpusIndex": "store",
    "IndexReport": "store",
    "Retriever": "retrieve",
    "Hit": "retrieve",
    "mmr_select": "retrieve",
    "RagPipeline": "pipeline",
    "RagAnswer": "pipeline",
    "SemanticCache": "cache",
    "RagError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:  # AttributeError lets `from alignkit.rag import commands` fall back to the submodule
        raise AttributeError(f"module 'alignkit.rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"alignkit.rag.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
