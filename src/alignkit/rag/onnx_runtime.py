"""The semantic cache's two small encoders on ONNX Runtime with int8 weights: a lookup's latency budget.

A ``get`` embeds the question and runs the verifier on a few candidates. In PyTorch both are memory-bound on a
CPU (a short input reads every weight once per forward: ~12 ms per MiniLM pass here); exported to ONNX with
weights quantised to int8 per output channel (ONNX Runtime's dynamic quantisation: activations stay float and are
quantised on the fly) the same pass takes ~3 ms. The export is deterministic given the weights and is written
once per machine, atomically, under ``$ALIGNKIT_CACHE_DIR/onnx/<key>/`` (default ``~/.cache/alignkit``), keyed by
the sha256 of the weights and the export settings; it takes a few seconds and never touches the network.

    path = quantized_onnx(build_module, example, key=export_key(weights_sha256, ...), output_name="out")
    run = OnnxRunner(path)                # thread-safe; intra-op threads = torch.get_num_threads()
    run({"input_ids": ..., ...})          # -> np.ndarray

Where ONNX Runtime is not installed this is a one-line error naming the package (never a silent fallback to the
slower path). Changing weights changes the key, so a stale export is never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

EXPORT_VERSION = 1  # bump when the export or quantisation settings below change
OPSET = 17


def cache_root() -> Path:
    """Where exports are kept: ``$ALIGNKIT_CACHE_DIR`` or ``~/.cache/alignkit``."""
    return Path(os.environ.get("ALIGNKIT_CACHE_DIR") or Path.home() / ".cache" / "alignkit")


def _require_onnxruntime():
    from alignkit.errors import require

    require("onnx", "the semantic cache's int8 encoders (ONNX export)")
    return require("onnxruntime", "the semantic cache's int8 encoders (ONNX Runtime)")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_key(*parts: object) -> str:
    """A short key for an export: sha256 over the parts (weights' sha256, model kind, ...) and the export settings."""
    import torch

    text = "\n".join(str(p) for p in (*parts, EXPORT_VERSION, OPSET, torch.__version__.split("+")[0]))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def quantized_onnx(
    build: Callable[[], object],
    example: Mapping[str, object],
    *,
    key: str,
    output_name: str,
    call: Callable[[object, dict], object] = lambda module, inputs: module(**inputs),
    root: str | Path | None = None,
) -> Path:
    """The int8 ONNX file for the module ``build()`` returns, exported and quantised on first use and reused after
    (``build`` is called only to export). ``call(module, inputs)`` runs it on a dict of the tensors of ``example``
    and returns the one tensor to export (default: ``module(**inputs)``; e.g. ``module(**inputs).logits``).

    ``example``: name -> (B, S) int64 tensor, one example batch (batch and sequence axes are dynamic); ``key``: from
    :func:`export_key`, identifies the weights. Concurrent first uses in several processes are safe: each writes a
    temporary directory and renames it into place; the loser's copy is discarded."""
    _require_onnxruntime()
    final = Path(root or cache_root()) / "onnx" / key
    model_path = final / "model.int8.onnx"
    if model_path.is_file():
        return model_path
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        names = list(example)

        class Positional(torch.nn.Module):  # the exporter passes inputs by position
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return call(self.inner, dict(zip(names, args)))

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on the BERT graph (checked: the export matches the model)
            torch.onnx.export(
                Positional(build().eval()),
                tuple(example[n] for n in names),
                str(tmp / "model.onnx"),
                input_names=names,
                output_names=[output_name],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed, exact for these BERT encoders
            )
        logging.disable(logging.WARNING)  # its root-logger advice to pre-process the graph first (not needed here)
        try:
            quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model.int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        (tmp / "model.onnx").unlink()
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if not model_path.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model_path


class OnnxRunner:
    """One ONNX Runtime session on the CPU; ``__call__(inputs) -> np.ndarray`` (the single output). Intra-op
    threads follow ``torch.get_num_threads()`` at construction (tests and benchmarks pin it); sessions are safe to
    call from several threads."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        ort = _require_onnxruntime()
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        # no busy-waiting after a run: the cache runs two sessions back to back (embedder, verifier), and threads of
        # one spinning while the other runs halved the second's speed on 2 cores (p99 40 -> 16 ms for both)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names: Sequence[str] = [i.name for i in self.session.get_inputs()]

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {n: np.asarray(inputs[n], dtype=np.int64) for n in self.input_names}
        return self.session.run(None, feed)[0]


__all__ = ["OnnxRunner", "cache_root", "export_key", "file_sha256", "quantized_onnx"]
