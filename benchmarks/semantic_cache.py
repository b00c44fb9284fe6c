"""Benchmark: the semantic cache's answer quality (plain cosine vs cosine + second check) and lookup latency.

Claims measured (and stated again in the output):
  1. Quality, on the paraphrase / hard-negative set in data/cache_eval (see its README): with false hits and
     wrong answers held at <= 2% on the dev split, cosine + the second check of alignkit.rag.match finds
     far more paraphrases than a plain cosine threshold (GPTCache's default). The threshold is chosen on dev
     and reported on test; the test split is never used to choose anything.
  2. Latency: a lookup's index part stays <= 5 ms p99 at 100k entries on this CPU, growing sub-linearly.

Protocol (quality): for each split, every distinct cached question goes into a fresh SemanticCache (real
embedder, its answer = the question's group id); every query is looked up once with ``explain`` (the
nearest candidates, their cosine and the second check's verdict, exactly what ``get`` walks through), and
the thresholds are swept offline: at threshold t, plain cosine serves the best candidate if its cosine
>= t; the checked cache serves the first candidate (best first) with cosine >= t that passes the check.
  - recall = paraphrase queries served their own answer / paraphrase queries
  - wrong-answer rate = paraphrase queries served ANOTHER question's answer / paraphrase queries
  - false-hit rate = negative queries (answer not in the cache: hard and easy negatives) served anything /
    negative queries
Chosen threshold = the one with the best dev recall subject to false-hit and wrong-answer rates <= 0.3%
(highest such threshold on ties): a sixth of the 2% goal, as a margin for new questions (on the held-out sets
so far, each written after the rules were frozen, false hits came out 2.4x to 6x dev's). The chosen settings
are then replayed through ``SemanticCache.get`` on test, which must agree with the offline sweep.

Protocol (latency): one cache filled with the dev questions (real embeddings) plus random unit vectors
(the filler, "filler question i"; random vectors are HNSW's hardest case) up to 1k, 10k, 100k entries with
``put_many``. At each size, p50/p99 over the dev queries of: the whole ``get`` with the query vector
precomputed (exact-repeat probe, generation check, HNSW search, rows, second check), the HNSW search
alone, the embedding alone (MiniLM, one query; also on one torch thread) and ``get`` with live embedding;
plus ``put``. Threads are
pinned: OMP_NUM_THREADS=2, torch.set_num_threads(2); the cache runs each single-query faiss search on one
OpenMP thread (see SemanticCache._search).

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/semantic_cache.py
      OMP_NUM_THREADS=2 .venv/bin/python benchmarks/semantic_cache.py --quick   # sizes 1k, 5k: a quick check
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = REPO / "data" / "cache_eval"
MAX_BAD = 0.02  # the goal: false-hit and wrong-answer rates at the default
DEFAULT_BOUND = 0.003  # the default threshold is chosen with dev rates <= 0.3%, a sixth of the goal: on the held-out
# sets so far (each written after the rules were frozen) false hits came out 2.4x to 6x dev's (1.0% -> 2.4%,
# 0.44% -> 2.6%)
THRESHOLDS = np.round(np.arange(0.30, 1.0001, 0.005), 3)
GOAL_P99_MS = 5.0


# --- quality -----------------------------------------------------------------------------------------
def load_split(name: str) -> list[dict]:
    return [json.loads(line) for line in (EVAL_DIR / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def candidates_for(rows: list[dict], embedder, work: Path, k: int) -> list[dict]:
    """Cache the split's questions, look up every query with ``explain``: one record per query."""
    from alignkit.rag.cache import SemanticCache

    path = work / "quality"
    shutil.rmtree(path, ignore_errors=True)
    cached = sorted({r["cached"] for r in rows})
    group = {r["cached"]: r["group"] for r in rows}
    with SemanticCache(path, embedder=embedder) as cache:
        cache.put_many([(q, group[q]) for q in cached])
        out = []
        for r in rows:
            cands = cache.explain(r["query"], k=k)
            out.append({"row": r, "cands": [(c.answer, c.score, c.verdict.ok, list(c.verdict.reasons)) for c in cands]})
    return out


def served(cands: list, t: float, checked: bool) -> str | None:
    """The answer id a cache at threshold ``t`` serves (None: a miss). Candidates are best first."""
    for answer, score, ok, _ in cands:
        if score < t:
            return None
        if ok or not checked:
            return answer
    return None


def rates(records: list[dict], t: float, checked: bool, *, kinds: tuple[str, ...] | None = None) -> dict:
    pos = [x for x in records if x["row"]["same_answer"]]
    neg = [x for x in records if not x["row"]["same_answer"] and (kinds is None or x["row"]["kind"] in kinds)]
    right = sum(served(x["cands"], t, checked) == x["row"]["group"] for x in pos)
    wrong = sum(served(x["cands"], t, checked) not in (None, x["row"]["group"]) for x in pos)
    false = sum(served(x["cands"], t, checked) is not None for x in neg)
    return {
        "threshold": float(t),
        "recall": right / len(pos),
        "wrong_answer": wrong / len(pos),
        "false_hit": false / len(neg) if neg else 0.0,
        "n_paraphrase": len(pos),
        "n_negative": len(neg),
        "false_hits": false,
        "wrong_answers": wrong,
    }


def curve(records: list[dict], checked: bool) -> list[dict]:
    return [rates(records, t, checked) for t in THRESHOLDS]


def choose(points: list[dict], max_false: float = MAX_BAD, max_wrong: float = MAX_BAD) -> dict:
    """Best recall with false hits and wrong answers within bounds; the highest threshold on ties."""
    ok = [p for p in points if p["false_hit"] <= max_false + 1e-12 and p["wrong_answer"] <= max_wrong + 1e-12]
    if not ok:
        return max(points, key=lambda p: p["threshold"])
    best = max(p["recall"] for p in ok)
    return max((p for p in ok if p["recall"] == best), key=lambda p: p["threshold"])


def by_variant(records: list[dict], t: float, checked: bool) -> dict[str, dict]:
    """False hits per hard-negative variant (number, entity, negation, ...) and for easy negatives."""
    out: dict[str, dict] = {}
    for x in records:
        r = x["row"]
        if r["same_answer"]:
            continue
        key = r["variant"] or r["kind"]
        d = out.setdefault(key, {"n": 0, "false_hits": 0})
        d["n"] += 1
        d["false_hits"] += served(x["cands"], t, checked) is not None
    return dict(sorted(out.items()))


def replay_get(rows: list[dict], embedder, work: Path, threshold: float) -> dict:
    """Run the test split through ``SemanticCache.get`` at ``threshold`` (no sweep): the shipped code path."""
    from alignkit.rag.cache import SemanticCache

    path = work / "replay"
    shutil.rmtree(path, ignore_errors=True)
    cached = sorted({r["cached"] for r in rows})
    group = {r["cached"]: r["group"] for r in rows}
    with SemanticCache(path, embedder=embedder, threshold=threshold) as cache:
        cache.put_many([(q, group[q]) for q in cached])
        got = [(r, cache.get(r["query"])) for r in rows]
    pos = [(r, a) for r, a in got if r["same_answer"]]
    neg = [(r, a) for r, a in got if not r["same_answer"]]
    return {
        "threshold": threshold,
        "recall": sum(a == r["group"] for r, a in pos) / len(pos),
        "wrong_answer": sum(a not in (None, r["group"]) for r, a in pos) / len(pos),
        "false_hit": sum(a is not None for r, a in neg) / len(neg),
    }


def examples(records: list[dict], t: float, limit: int = 8) -> dict[str, list]:
    """Some of the checked cache's mistakes on a split, to read."""
    fh, missed = [], []
    for x in records:
        r = x["row"]
        got = served(x["cands"], t, True)
        if not r["same_answer"] and got is not None:
            fh.append({"query": r["query"], "served_for": got, "variant": r["variant"] or r["kind"]})
        if r["same_answer"] and got != r["group"]:
            own = [c for c in x["cands"] if c[0] == r["group"]]
            missed.append(
                {
                    "query": r["query"],
                    "cached": r["cached"],
                    "cosine": round(own[0][1], 3) if own else None,
                    "refused": own[0][3] if own and own[0][1] >= t else "below threshold",
                }
            )
    return {"false_hits": fh[:limit], "missed_paraphrases": missed[:limit]}


def quality(embedder, work: Path, k: int) -> dict:
    dev, test = load_split("dev"), load_split("test")
    t0 = time.perf_counter()
    rec = {"dev": candidates_for(dev, embedder, work, k), "test": candidates_for(test, embedder, work, k)}
    curves = {s: {"plain": curve(rec[s], False), "checked": curve(rec[s], True)} for s in rec}
    chosen_checked = choose(curves["dev"]["checked"], max_false=DEFAULT_BOUND, max_wrong=DEFAULT_BOUND)
    checked_2pct = choose(curves["dev"]["checked"])
    chosen_plain = choose(curves["dev"]["plain"])
    # plain cosine held to the false-hit rate the checked cache reaches on dev, and to ~1%
    plain_same_fh = choose(curves["dev"]["plain"], max_false=chosen_checked["false_hit"])
    plain_1pct = choose(curves["dev"]["plain"], max_false=0.01)
    on_test = {
        name: {
            **rates(rec["test"], p["threshold"], checked),
            "hard_negative_false_hit": rates(rec["test"], p["threshold"], checked, kinds=("hard_negative",))["false_hit"],
            "easy_negative_false_hit": rates(rec["test"], p["threshold"], checked, kinds=("easy_negative",))["false_hit"],
        }
        for name, p, checked in [
            ("checked", chosen_checked, True),
            ("plain", chosen_plain, False),
            ("plain_same_false_hit", plain_same_fh, False),
            ("plain_1pct", plain_1pct, False),
            ("checked_2pct", checked_2pct, True),
        ]
    }
    replay = replay_get(test, embedder, work, chosen_checked["threshold"])
    agree = all(abs(replay[m] - on_test["checked"][m]) < 1e-9 for m in ("recall", "wrong_answer", "false_hit"))
    return {
        "set": {
            s: {
                "pairs": len(r),
                "paraphrases": sum(x["row"]["same_answer"] for x in r),
                "hard_negatives": sum(x["row"]["kind"] == "hard_negative" for x in r),
                "easy_negatives": sum(x["row"]["kind"] == "easy_negative" for x in r),
                "cached": len({x["row"]["cached"] for x in r}),
            }
            for s, r in rec.items()
        },
        "chosen_on_dev": {
            "checked": chosen_checked,
            "plain": chosen_plain,
            "plain_same_false_hit": plain_same_fh,
            "plain_1pct": plain_1pct,
            "checked_2pct": checked_2pct,
        },
        "test": on_test,
        "test_false_hits_by_variant": {
            "checked": by_variant(rec["test"], chosen_checked["threshold"], True),
            "plain": by_variant(rec["test"], chosen_plain["threshold"], False),
        },
        "test_replay_get": {**replay, "agrees_with_sweep": agree},
        "test_examples": examples(rec["test"], chosen_checked["threshold"]),
        "curves": curves,
        "seconds": time.perf_counter() - t0,
    }


def plot(q: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    marks = {"checked": q["chosen_on_dev"]["checked"]["threshold"], "plain": q["chosen_on_dev"]["plain"]["threshold"]}
    for ax, split in zip(axes, ("dev", "test")):
        for method, label, color in (("plain", "plain cosine", "tab:gray"), ("checked", "cosine + second check", "tab:blue")):
            pts = q["curves"][split][method]
            ax.plot([100 * p["false_hit"] for p in pts], [100 * p["recall"] for p in pts], label=label, color=color)
            chosen = min(pts, key=lambda p: abs(p["threshold"] - marks[method]))
            ax.scatter([100 * chosen["false_hit"]], [100 * chosen["recall"]], color=color, zorder=3)
            ax.annotate(
                f"t={marks[method]:.3f}",
                (100 * chosen["false_hit"], 100 * chosen["recall"]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
                color=color,
            )
        ax.axvline(100 * MAX_BAD, color="tab:red", lw=0.8, ls="--", label="2% (the goal)")
        ax.axvline(
            100 * DEFAULT_BOUND,
            color="tab:gray",
            lw=0.8,
            ls=":",
            label=f"{100 * DEFAULT_BOUND:g}% (the dev bound the default is chosen under)",
        )
        ax.set_xlim(-0.5, 40)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("false-hit rate on negatives, %")
        ax.set_title(f"{split} split (threshold chosen on dev)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("paraphrase recall, %")
    axes[0].legend(loc="lower right")
    fig.suptitle("Semantic cache: paraphrase recall vs false hits, sweeping the cosine threshold (all-MiniLM-L6-v2)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


# --- latency -----------------------------------------------------------------------------------------
class BenchEmbedder:
    """Real vectors for the eval texts (precomputed, or live from MiniLM when ``live``), seeded random unit
    vectors for "filler question {i}" texts."""

    name = "bench-mix"

    def __init__(self, real, texts: list[str], seed: int = 0):
        self.real, self.dim, self.live = real, int(real.dim), False
        self.table = dict(zip(texts, real.encode(texts)))
        self.seed = seed

    def _filler(self, i: int) -> np.ndarray:
        v = np.random.default_rng((self.seed, i)).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.live:
            return self.real.encode(list(texts))
        out = np.empty((len(texts), self.dim), np.float32)
        for j, t in enumerate(texts):
            out[j] = self._filler(int(t.rsplit(" ", 1)[1])) if t.startswith("filler question ") else self.table[t]
        return out

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": len(a)}


def latency(real, work: Path, sizes: list[int], n_queries: int) -> dict:
    from alignkit.rag.cache import SemanticCache

    dev = load_split("dev")
    cached = sorted({r["cached"] for r in dev})
    queries = [r["query"] for r in dev][:n_queries]
    emb = BenchEmbedder(real, cached + queries)
    path = work / "latency"
    shutil.rmtree(path, ignore_errors=True)
    out: dict[str, dict] = {}
    with SemanticCache(path, embedder=emb, save_every=10**9) as cache:
        cache.put_many([(q, q) for q in cached])
        have, build_s = len(cached), 0.0
        for size in sizes:
            t0 = time.perf_counter()
            for start in range(have, size, 5000):
                stop = min(size, start + 5000)
                cache.put_many([(f"filler question {i}", f"filler answer {i}") for i in range(start, stop)])
            build_s += time.perf_counter() - t0
            have = max(have, size)
            vecs = emb.encode(queries)
            for q in queries[:20]:  # warm-up
                cache.get(q)
            t_get, t_search, t_embed, t_live = [], [], [], []
            for q, v in zip(queries, vecs):
                t = time.perf_counter()
                cache.get(q)
                t_get.append(time.perf_counter() - t)
                with cache._lock:
                    t = time.perf_counter()
                    cache._search(v, cache.top_k)
                    t_search.append(time.perf_counter() - t)
            emb.live = True
            for q in queries:
                t = time.perf_counter()
                real.encode([q])
                t_embed.append(time.perf_counter() - t)
                t = time.perf_counter()
                cache.get(q)
                t_live.append(time.perf_counter() - t)
            emb.live = False
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the same embedding on one torch thread (no wake-ups of a second thread)
            t_embed1 = []
            for q in queries:
                t = time.perf_counter()
                real.encode([q])
                t_embed1.append(time.perf_counter() - t)
            torch.set_num_threads(threads)
            t_put = []
            for i in range(200):  # a new entry at this size (200 more entries: the size barely moves)
                t = time.perf_counter()
                cache.put(f"filler question {10**8 + size + i}", "x")
                t_put.append(time.perf_counter() - t)
            # HNSW's recall here: is the exact nearest cached question (brute force) what the index returns?
            exact_hits, n_check = 0, min(100, len(vecs))
            with cache._lock:
                ids = cache._index.ids()
                chunks = np.array_split(ids, max(1, len(ids) // 20_000))
                exact_scores = np.concatenate([cache._index.vectors(c) @ vecs[:n_check].T for c in chunks])  # (n, q)
                exact = ids[np.argmax(exact_scores, axis=0)]
                for v, e in zip(vecs[:n_check], exact):
                    exact_hits += int(cache._search(v, 1).ids[0][0] == e)
            out[str(size)] = {
                "entries": len(cache),
                "get_no_embed": pct(t_get),
                "index_search": pct(t_search),
                "embed_only": pct(t_embed),
                "embed_only_1_thread": pct(t_embed1),
                "get_with_embed": pct(t_live),
                "put": pct(t_put),
                "hnsw_top1_agrees_with_exact": exact_hits / n_check,
                "build_seconds_cumulative": build_s,
            }
            print(
                f"  {size:>7,} entries: get p50 {out[str(size)]['get_no_embed']['p50_ms']:.2f} ms, "
                f"p99 {out[str(size)]['get_no_embed']['p99_ms']:.2f} ms (build so far {build_s:.0f} s)",
                flush=True,
            )
    return out


# --- report ------------------------------------------------------------------------------------------
def report(res: dict) -> str:
    q = res.get("quality")
    lines: list[str] = []
    if q:
        lines += quality_lines(q)
    if "latency" in res:
        lines += latency_lines(res["latency"])
    return "\n".join(lines)


def quality_lines(q: dict) -> list[str]:
    lines = ["## Quality (data/cache_eval; threshold chosen on dev, reported on test)", ""]
    lines += [
        "| split | pairs | paraphrases | hard negatives | easy negatives | cached questions |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, d in q["set"].items():
        lines.append(
            f"| {s} | {d['pairs']} | {d['paraphrases']} | {d['hard_negatives']} | {d['easy_negatives']} | {d['cached']} |"
        )
    lines += [
        "",
        "| method | threshold (dev) | dev recall | dev false hits | dev wrong | test recall | test false hits | test wrong | test false hits (hard / easy) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "checked": f"cosine + second check, the default (≤{100 * DEFAULT_BOUND:g}% on dev)",
        "plain": "plain cosine (≤2%)",
        "plain_same_false_hit": "plain cosine, same dev false hits as checked",
        "checked_2pct": "cosine + second check (≤2% on dev)",
        "plain_1pct": "plain cosine (≤1%)",
    }
    for key, label in names.items():
        d, t = q["chosen_on_dev"][key], q["test"][key]
        lines.append(
            f"| {label} | {d['threshold']:.3f} | {100 * d['recall']:.1f}% | {100 * d['false_hit']:.1f}% | "
            f"{100 * d['wrong_answer']:.1f}% | **{100 * t['recall']:.1f}%** | {100 * t['false_hit']:.1f}% | "
            f"{100 * t['wrong_answer']:.1f}% | {100 * t['hard_negative_false_hit']:.1f}% / "
            f"{100 * t['easy_negative_false_hit']:.1f}% |"
        )
    r = q["test_replay_get"]
    lines += [
        "",
        f"SemanticCache.get replayed on test at t={r['threshold']:.3f}: recall {100 * r['recall']:.1f}%, "
        f"false hits {100 * r['false_hit']:.1f}%, wrong {100 * r['wrong_answer']:.1f}% "
        f"({'agrees' if r['agrees_with_sweep'] else 'DISAGREES'} with the sweep)",
        "",
    ]
    return lines


def latency_lines(latency: dict) -> list[str]:
    lines = [
        "## Lookup latency (ms; dev queries; random-vector filler)",
        "",
        "| entries | get, no embedding p50 / p99 | index search p50 / p99 | embedding p50 / p99 | "
        "embedding, 1 thread p50 / p99 | get with embedding p50 / p99 | put p50 / p99 | HNSW top-1 = exact |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, d in latency.items():
        f = lambda k, d=d: f"{d[k]['p50_ms']:.2f} / {d[k]['p99_ms']:.2f}"
        lines.append(
            f"| {int(size):,} | {f('get_no_embed')} | {f('index_search')} | {f('embed_only')} | "
            f"{f('embed_only_1_thread')} | {f('get_with_embed')} | {f('put')} | "
            f"{100 * d['hnsw_top1_agrees_with_exact']:.0f}% |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--quick", action="store_true", help="sizes 1k and 5k, 150 queries")
    p.add_argument("--queries", type=int, default=400, help="lookups timed per size")
    p.add_argument("--k", type=int, default=10, help="candidates per query in the quality sweep")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--plot", default=str(REPO / "docs" / "img" / "semantic_cache_curves.png"))
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "semantic_cache.json"))
    p.add_argument("--work-dir", default=None, help="where the caches are built (default: a temporary directory)")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.queries = [1_000, 5_000], 150

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.rag.embed import Embedder
    from alignkit.rag.match import DEFAULT_THRESHOLD

    quiet_libraries()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="semcache-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    real = Embedder()
    res: dict = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "embedder": real.name,
        },
        "claims": {
            "quality": "checked recall > plain recall at <= 2% false hits and wrong answers (dev-chosen, test-reported)",
            "latency": f"index search p99 <= {GOAL_P99_MS} ms at 100k entries, sub-linear growth",
        },
    }
    try:
        if not args.skip_quality:
            print("quality: embedding and sweeping dev and test ...", flush=True)
            res["quality"] = quality(real, work, args.k)
            plot(res["quality"], Path(args.plot))
            chosen = res["quality"]["chosen_on_dev"]["checked"]["threshold"]
            if abs(chosen - DEFAULT_THRESHOLD) > 1e-9:
                print(f"NOTE: dev chooses threshold {chosen:.3f}; alignkit.rag.match.DEFAULT_THRESHOLD is {DEFAULT_THRESHOLD}")
        if not args.skip_latency:
            print(f"latency: sizes {args.sizes} ...", flush=True)
            res["latency"] = latency(real, work, sorted(args.sizes), args.queries)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print()
    print(report(res))
    if "quality" in res:
        q = res["quality"]
        better = q["test"]["checked"]["recall"] > q["test"]["plain"]["recall"]
        print(
            f"\nclaim 1 (quality): checked {100 * q['test']['checked']['recall']:.1f}% vs plain "
            f"{100 * q['test']['plain']['recall']:.1f}% test recall at dev-chosen thresholds — {'met' if better else 'NOT met'}"
        )
    if "latency" in res:
        lat = res["latency"]
        big = lat[str(max(int(s) for s in lat))]
        small = lat[str(min(int(s) for s in lat))]
        growth = big["index_search"]["p99_ms"] / max(small["index_search"]["p99_ms"], 1e-9)
        ratio = max(int(s) for s in lat) / min(int(s) for s in lat)
        ok = big["index_search"]["p99_ms"] <= GOAL_P99_MS and growth < ratio
        print(
            f"claim 2 (latency): index search p99 {big['index_search']['p99_ms']:.2f} ms at {max(int(s) for s in lat):,} "
            f"entries ({growth:.1f}x the p99 at {ratio:.0f}x fewer entries) — {'met' if ok else 'NOT met'}"
        )
    print(f"\nwrote {args.out}" + ("" if args.skip_quality else f" and {args.plot}"))


if __name__ == "__main__":
    main()
