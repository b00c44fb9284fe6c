"""Retrieval-augmented generation over the d2l textbook, end to end, offline.

1. Builds (once) a tiny chat model with ``alignkit.models.init_model`` under ``runs/rag-demo/model``: a random
   Llama with a tokenizer trained on the d2l text. Its answers are noise (it was never trained); the demo
   shows the plumbing -- retrieval, the numbered-passage prompt, generation, sources. Pass ``--model DIR``
   to answer with a real chat model.
2. Indexes ``data/d2l`` into ``runs/rag-demo/index`` (all-MiniLM-L6-v2, 256-token chunks). The first run
   embeds every chunk; later runs skip the unchanged files and take a second.
3. Answers one question and prints the answer with its numbered sources.

Run:  OMP_NUM_THREADS=2 .venv/bin/python scripts/rag_demo.py [--question "..."] [--model DIR] [--top-k 3]
      [--mmr] [--max-new-tokens 48] [--temperature 0.8] [--cache]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DEMO = REPO / "runs" / "rag-demo"
D2L = REPO / "data" / "d2l"


def main() -> int:
    p = argparse.ArgumentParser(description="RAG over the d2l textbook with a tiny local model")
    p.add_argument("--question", default="Why is dropout usually turned off at test time?")
    p.add_argument("--model", default=None, help="a chat model directory (default: build a tiny one once)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--mmr", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="sampling temperature, seeded (greedy decoding of the untrained model only repeats newlines)",
    )
    p.add_argument("--cache", action="store_true", help=f"use a semantic cache in {DEMO / 'cache'}")
    args = p.parse_args()

    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()

    model_dir = Path(args.model) if args.model else DEMO / "model"
    if args.model is None and not (model_dir / "config.json").is_file():
        from alignkit.models.init_model import init_model

        t = time.perf_counter()
        init_model("llama", "tiny", sorted(str(f) for f in D2L.rglob("*.md")), str(model_dir), seed=0, overwrite=True)
        print(f"built a tiny random llama + d2l tokenizer in {model_dir} ({time.perf_counter() - t:.1f} s)")

    from alignkit.models.backends import GenerationSettings, load_backend
    from alignkit.rag.embed import Embedder
    from alignkit.rag.pipeline import RagPipeline
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    embedder = Embedder()
    with CorpusIndex.open(DEMO / "index", embedder, create=True) as index:
        report = index.update([D2L], chunk_tokens=256, overlap=32, progress=sys.stderr.isatty())
        print(
            f"index {DEMO / 'index'}: {len(index.files())} files, {len(index)} chunks "
            f"({len(report.added) + len(report.changed)} files embedded, {report.unchanged} unchanged, "
            f"{report.seconds:.1f} s)"
        )

        cache = None
        if args.cache:
            from alignkit.rag.cache import SemanticCache

            cache = SemanticCache(DEMO / "cache", embedder=embedder)
        try:
            pipeline = RagPipeline(
                Retriever(index, embedder, k=args.top_k, mmr=args.mmr),
                load_backend(str(model_dir), device="cpu"),
                cache=cache,
                settings=GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=0),
            )
            answer = pipeline.answer(args.question)
        finally:
            if cache is not None:
                cache.close()

    print(f"\nQ: {args.question}")
    print(f"A: {answer.text or '(empty)'}" + ("  (answer from the semantic cache)" if answer.cached else ""))
    if args.model is None:
        print("   (a random, untrained tiny model wrote this: the sources below are the point; --model DIR for a real one)")
    print("\nSources:")
    for i, hit in enumerate(answer.sources, 1):
        print(f"  [{i}] {hit.source} — {hit.heading} (score {hit.score:.3f})")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
