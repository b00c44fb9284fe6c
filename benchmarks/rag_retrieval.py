"""Benchmark: retrieval quality and indexing time of alignkit's RAG index on the d2l textbook.

The claims measured (stated again in the output):
  - with all-MiniLM-L6-v2 and 256-token chunks, the section that answers a question is in the top 5 for
    >= 80% of the hand-written questions (section recall@5), and its file for >= 90% (file recall@5);
  - re-indexing an unchanged corpus embeds nothing and takes a small fraction of the first build.

What it does: indexes ``--docs`` (default data/d2l, 191 markdown files) into a fresh index directory with
:class:`alignkit.rag.store.CorpusIndex` (the same code as ``alignkit rag index``), timing the build and then
a re-index of the unchanged corpus. Then, for every question of ``--questions`` (default
data/rag_eval/d2l_questions.jsonl: 35 questions written from reading the corpus, each with the file and the
heading path of the section that answers it), it retrieves the top 10 chunks with plain top-k and with MMR
(``--fetch-k`` candidates, ``--mmr-lambda``) and scores two levels of relevance:
  - section: the chunk's file is the expected one and its heading path is the expected heading or nested
    under it;
  - file: the chunk's file is the expected one.
recall@k is the share of questions with a relevant chunk in the top k; MRR is the mean of 1/rank of the
first relevant chunk in the top 10 (0 when none). Query latency is the median wall time of one
``Retriever.retrieve`` (embedding the question included).

Run:  OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.rag_retrieval [--docs DIR --questions FILE
      --work-dir DIR --chunk-tokens 256 --overlap 32 --fetch-k 20 --mmr-lambda 0.5 --device cpu --out PATH]
      [--smoke: one small chapter (data/d2l/chapter_installation) in a temporary folder: a check that it runs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import REPO

GOAL_SECTION_R5 = 0.80
GOAL_FILE_R5 = 0.90
TOP = 10  # chunks retrieved per question (MRR is over these)


def relevant(hit, q: dict, level: str) -> bool:
    if hit.source != q["source"]:
        return False
    return level == "file" or hit.heading == q["heading"] or hit.heading.startswith(q["heading"] + " > ")


def score(ranked: list[list], questions: list[dict], level: str) -> dict:
    """recall@1, recall@5, MRR@10 and each question's first relevant rank (None when not in the top 10)."""
    return harness.rank_metrics(
        [next((h.rank for h in hits if relevant(h, q, level)), None) for hits, q in zip(ranked, questions)]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", default=str(REPO / "data" / "d2l"))
    p.add_argument("--questions", default=str(REPO / "data" / "rag_eval" / "d2l_questions.jsonl"))
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench" / "rag_retrieval"))
    p.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--fetch-k", type=int, default=20)
    p.add_argument("--mmr-lambda", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "rag_retrieval.json"))
    harness.add_smoke_argument(p)
    args = p.parse_args(argv)
    harness.apply_smoke(args, p, {"docs": str(REPO / "data" / "d2l" / "chapter_installation")}, name="rag_retrieval")

    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    from alignkit.rag.embed import Embedder
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    questions = [json.loads(line) for line in Path(args.questions).read_text().splitlines() if line.strip()]
    index_dir = Path(args.work_dir) / "index"
    shutil.rmtree(index_dir, ignore_errors=True)

    t0 = time.perf_counter()
    embedder = Embedder(args.embedder, device=args.device)
    load_s = time.perf_counter() - t0
    index = CorpusIndex.open(index_dir, embedder, create=True)
    build = index.update([args.docs], chunk_tokens=args.chunk_tokens, overlap=args.overlap, progress=sys.stderr.isatty())
    again = index.update([args.docs], chunk_tokens=args.chunk_tokens, overlap=args.overlap)
    n_files, n_chunks = len(index.files()), len(index)

    results, latencies = {}, {}
    for name, mmr in (("top-k", False), ("mmr", True)):
        retriever = Retriever(index, embedder, k=TOP, mmr=mmr, mmr_lambda=args.mmr_lambda, fetch_k=args.fetch_k)
        retriever.retrieve("warm-up question")
        ranked, times = [], []
        for q in questions:
            t = time.perf_counter()
            ranked.append(retriever.retrieve(q["question"]))
            times.append(time.perf_counter() - t)
        results[name] = {level: score(ranked, questions, level) for level in ("section", "file")}
        latencies[name] = statistics.median(times) * 1000
    index.close()

    report = {
        "docs": os.path.relpath(args.docs, REPO),
        "questions": len(questions),
        "embedder": args.embedder,
        "device": args.device,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "chunk_tokens": args.chunk_tokens,
        "overlap": args.overlap,
        "files": n_files,
        "chunks": n_chunks,
        "skipped": build.skipped,
        "embedder_load_s": load_s,
        "index_build_s": build.seconds,
        "chunks_per_s": build.chunks_added / build.seconds,
        "reindex_unchanged_s": again.seconds,
        "reindex_unchanged_files": again.unchanged,
        "reindex_chunks_added": again.chunks_added,
        "mmr_lambda": args.mmr_lambda,
        "fetch_k": args.fetch_k,
        "query_ms_median": latencies,
        "results": results,
    }
    harness.write_report(report, args.out)

    print(
        f"corpus: {report['docs']}: {n_files} files indexed ({len(build.skipped)} skipped: "
        f"{', '.join(r for r, _ in build.skipped) or '-'}), {n_chunks} chunks of <= {args.chunk_tokens} tokens, "
        f"overlap {args.overlap}"
    )
    print(f"embedder: {args.embedder} on {args.device}, OMP_NUM_THREADS={report['threads']} (load {load_s:.1f} s)")
    print(
        f"index build: {build.seconds:.1f} s ({report['chunks_per_s']:.1f} chunks/s); re-index unchanged: "
        f"{again.seconds:.2f} s ({again.unchanged} files skipped, {again.chunks_added} chunks embedded)"
    )
    print(f"\n{len(questions)} questions; relevance = right section (file + heading path) or right file")
    print(f"{'retrieval':<22}{'level':<9}{'recall@1':>9}{'recall@5':>9}{'MRR@10':>8}{'query ms':>10}")
    for name in results:
        label = name if name == "top-k" else f"mmr (λ={args.mmr_lambda}, fetch {args.fetch_k})"
        for level in ("section", "file"):
            r = results[name][level]
            print(f"{label:<22}{level:<9}{r['recall@1']:>9.3f}{r['recall@5']:>9.3f}{r['mrr@10']:>8.3f}{latencies[name]:>10.1f}")
    misses = [q["id"] for q, r in zip(questions, results["top-k"]["section"]["first_rank"]) if r is None or r > 5]
    print(f"\nquestions whose section is not in the top-k top 5: {misses or 'none'}")
    sec, fil = results["top-k"]["section"]["recall@5"], results["top-k"]["file"]["recall@5"]
    print(f"claim: section recall@5 >= {GOAL_SECTION_R5:.2f}: {sec:.3f} -> {'MET' if sec >= GOAL_SECTION_R5 else 'NOT MET'}")
    print(f"claim: file recall@5 >= {GOAL_FILE_R5:.2f}: {fil:.3f} -> {'MET' if fil >= GOAL_FILE_R5 else 'NOT MET'}")
    ok = again.chunks_added == 0 and again.seconds < 0.1 * build.seconds
    print(f"claim: re-indexing the unchanged corpus embeds nothing and takes < 10% of the build: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
