"""The int8 ONNX Runtime path of the semantic cache's encoders (alignkit.rag.onnx_runtime, Embedder(runtime="onnx"),
Verifier.load(runtime=...)): exported once, reused, keyed by the weights, close to the float32 model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignkit.rag.errors import RagError
from alignkit.rag.onnx_runtime import OnnxRunner, export_key, quantized_onnx


class Tiny(torch.nn.Module):
    """Token embeddings -> a linear layer -> masked mean: (B, S) int64 ids and mask -> (B, 8)."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(50, 16)
        self.lin = torch.nn.Linear(16, 8)

    def forward(self, input_ids, attention_mask):
        h = self.lin(self.emb(input_ids))
        m = attention_mask.unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1)


def _example():
    return {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.tensor([[1, 1, 1]])}


def test_export_is_close_reused_and_keyed_by_the_weights(tmp_path):
    built = []

    def build(seed=0):
        built.append(seed)
        return Tiny(seed)

    key = export_key("tiny", "weights-a")
    path = quantized_onnx(build, _example(), key=key, output_name="out", root=tmp_path)
    assert path.is_file() and built == [0]
    assert quantized_onnx(build, _example(), key=key, output_name="out", root=tmp_path) == path
    assert built == [0]  # the second call reads the export, it does not rebuild or re-export

    ids = np.array([[4, 5, 6, 7], [8, 9, 0, 0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])  # dynamic batch and sequence axes, padding masked
    got = OnnxRunner(path, threads=1)({"input_ids": ids, "attention_mask": mask})
    want = Tiny(0)(torch.from_numpy(ids), torch.from_numpy(mask)).detach().numpy()
    assert got.shape == (2, 8)
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())  # int8 weights: close, not equal

    other = quantized_onnx(lambda: Tiny(1), _example(), key=export_key("tiny", "weights-b"), output_name="out", root=tmp_path)
    assert other != path
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_embedder_onnx_runtime_matches_float32(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE_DIR", str(tmp_path))
    from alignkit.rag.embed import Embedder

    texts = ["How do I reset my password?", "What is the capital of Australia?", "Explain dropout in neural networks."]
    fast, ref = Embedder(runtime="onnx"), Embedder()
    a, b = fast.encode(texts), ref.encode(texts)
    assert a.shape == b.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() > 0.98  # the same vectors within int8 rounding
    assert fast.name == ref.name and fast.encode([]).shape == (0, 384)
    with pytest.raises(RagError, match="runtime must be"):
        Embedder(runtime="tensorrt")


def test_verifier_calibration_belongs_to_one_runtime(tmp_path):
    from alignkit.rag.verifier import DEFAULT_PATH, Verifier

    for f in DEFAULT_PATH.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["runtime"] == "onnx"  # the shipped calibration is fitted on what the cache runs
    with pytest.raises(RagError, match="fitted on the onnx runtime") as err:
        Verifier.load(tmp_path, runtime="torch")
    assert "\n" not in str(err.value)
    raw = Verifier.load(tmp_path, runtime="torch", calibrated=False)  # raw float32 scores stay available
    fast = Verifier.load(tmp_path, calibrated=False)
    pairs = [("How do I reset my password?", "How can I reset my password?"), ("Is it hot?", "Is it cold?")]
    assert np.abs(raw.scores(pairs) - fast.scores(pairs)).max() < 1.5
