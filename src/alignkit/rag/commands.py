"""``alignkit rag index`` and ``alignkit rag ask``: argparse only at import, the work inside the handlers."""

from __future__ import annotations

import argparse


def _quiet() -> None:
    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()


def _embedder(name: str, device: str | None = None):
    """The sentence-transformers embedder ``name``; one that cannot be loaded (offline, misspelt) is a RagError."""
    from alignkit.rag.embed import Embedder
    from alignkit.rag.errors import RagError

    try:
        return Embedder(name, device=device)
    except (OSError, ValueError) as err:
        from alignkit.errors import first_line

        raise RagError(f"embedder {name}: cannot load it ({first_line(err)})") from None


def cmd_rag_index(args: argparse.Namespace) -> int:
    _quiet()
    from pathlib import Path

    from alignkit.rag.documents import SUFFIXES
    from alignkit.rag.embed import DEFAULT_EMBEDDER
    from alignkit.rag.errors import RagError
    from alignkit.rag.pg import redact
    from alignkit.rag.store import CorpusIndex, discover

    index_path = Path(args.index)
    if index_path.exists() and not index_path.is_dir():
        raise RagError(f"--index {args.index}: a file, not a directory (the index is a directory, created if missing)")
    _, found = discover(args.docs)  # a missing path is reported before the embedder loads
    if not found:
        raise RagError(
            f"--docs {' '.join(map(str, args.docs))}: no documents found ({', '.join(SUFFIXES)} files; hidden ones skipped)"
        )
    name = args.embedder
    if CorpusIndex.exists(args.index):
        recorded = CorpusIndex.info(args.index).embedder
        if name is not None and name != recorded:
            raise RagError(
                f"{args.index}: built with embedder {recorded}, not {name}: drop --embedder or index into a new directory"
            )
        name = recorded
    embedder = _embedder(name or DEFAULT_EMBEDDER, args.device)
    with CorpusIndex.open(args.index, embedder, create=True) as index:
        r = index.update(
            args.docs,
            chunk_tokens=args.chunk_tokens,
            overlap=args.overlap,
            keep_code=args.keep_code,
            progress=not args.no_progress,
        )
        n_files, n_chunks, version = len(index.files()), len(index), index.version
    if r.rechunked:
        print("chunking settings changed: every file was re-chunked")
    print(
        f"indexed {', '.join(map(str, args.docs))} into {redact(args.index)} in {r.seconds:.1f} s: "
        f"{len(r.added)} new, {len(r.changed)} changed, {r.unchanged} unchanged, {len(r.moved)} moved, {len(r.removed)} removed, "
        f"{len(r.skipped)} skipped files; chunks +{r.chunks_added} -{r.chunks_removed}"
    )
    for rel, why in r.skipped:
        print(f"  skipped {rel}: {why}")
    for rel in r.removed:
        print(f"  removed {rel} (no longer among --docs)")
    print(f"index: {n_files} files, {n_chunks} chunks, embedder {embedder.name} (dim {embedder.dim}), version {version}")
    return 0


def cmd_rag_ask(args: argparse.Namespace) -> int:
    _quiet()
    import contextlib

    from alignkit.models.backends import GenerationSettings, load_backend
    from alignkit.rag.errors import RagError
    from alignkit.rag.pipeline import RagPipeline
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    if not args.question.strip():
        raise RagError("question: empty")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    info = CorpusIndex.info(args.index)
    if args.embedder and args.embedder != info.embedder:
        raise RagError(f"{args.index}: built with embedder {info.embedder}, not {args.embedder}")
    embedder = _embedder(info.embedder)
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(CorpusIndex.open(args.index, embedder))
        cache = None
        if args.cache:
            from alignkit.rag.cache import SemanticCache

            cache = stack.enter_context(SemanticCache(args.cache, embedder=embedder))
        retriever = Retriever(index, embedder, k=args.top_k, mmr=args.mmr, mmr_lambda=args.mmr_lambda, fetch_k=args.fetch_k)
        backend = load_backend(args.model, backend=args.backend, device=args.device)
        pipeline = RagPipeline(retriever, backend, cache=cache, settings=settings, max_context_tokens=args.max_context_tokens)
        answer = pipeline.answer(args.question)
    print(answer.text if answer.text else "(the model returned an empty answer)")
    print()
    print("Sources:")
    if not answer.sources:
        print("  (none: the index returned no passages)")
    for i, hit in enumerate(answer.sources, 1):
        heading = f" — {hit.heading}" if hit.heading else ""
        print(f"  [{i}] {hit.source}{heading} (score {hit.score:.3f})")
    if answer.cached:
        print("(answer from the semantic cache)")
    return 0


def add_parsers(sub) -> None:
    """Register ``rag index`` and ``rag ask`` on the ``alignkit`` subparsers ``sub``."""
    rag = sub.add_parser("rag", help="retrieval-augmented generation: index documents, answer questions from them")
    actions = rag.add_subparsers(dest="rag_cmd", required=True, metavar="ACTION")

    ix = actions.add_parser("index", help="index .md/.txt/.html documents (new and changed files only)")
    ix.add_argument("--docs", nargs="+", required=True, metavar="PATH", help="files or directories (searched recursively)")
    ix.add_argument(
        "--index",
        required=True,
        metavar="DIR",
        help="index directory (created if missing; not a file), or a postgresql:// URL (docs/rag.md)",
    )
    ix.add_argument("--embedder", default=None, help="sentence-transformers model (default: the index's, else all-MiniLM-L6-v2)")
    ix.add_argument("--chunk-tokens", type=int, default=256, help="most embedder tokens per chunk")
    ix.add_argument("--overlap", type=int, default=32, help="tokens shared by consecutive chunks of a section")
    ix.add_argument("--keep-code", action="store_true", help="index the contents of markdown code fences too")
    ix.add_argument("--device", default=None, help="embedder device (default: sentence-transformers' choice)")
    ix.add_argument("--no-progress", action="store_true", help="no progress bar")
    ix.set_defaults(func=cmd_rag_index)

    ask = actions.add_parser("ask", help="answer a question from an index, citing numbered sources")
    ask.add_argument("question", help="the question to answer")
    ask.add_argument("--index", required=True, metavar="DIR", help="index directory (or postgresql:// URL) built by 'rag index'")
    ask.add_argument("--model", required=True, help="chat model directory or Hub id")
    ask.add_argument("--cache", metavar="DIR", help="semantic cache directory or postgresql:// URL (looked up before retrieval)")
    ask.add_argument("--top-k", type=int, default=5, help="passages retrieved")
    ask.add_argument("--mmr", action="store_true", help="re-rank --fetch-k candidates by maximal marginal relevance")
    ask.add_argument("--mmr-lambda", type=float, default=0.5, help="MMR relevance weight (1: plain top-k)")
    ask.add_argument("--fetch-k", type=int, default=20, help="MMR candidates")
    ask.add_argument("--max-context-tokens", type=int, default=1024, help="passage budget, in embedder tokens")
    ask.add_argument("--max-new-tokens", type=int, default=256, help="most tokens in the answer")
    ask.add_argument("--temperature", type=float, default=0.0, help="sampling temperature, 0: greedy")
    ask.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    ask.add_argument("--seed", type=int, default=0, help="sampling seed")
    ask.add_argument("--embedder", default=None, help="must match the index's (default: the index's)")
    ask.add_argument("--backend", default="transformers", choices=["transformers", "vllm"], help="generation backend")
    ask.add_argument("--device", default=None, help="model device (default: cuda when available, else cpu)")
    ask.set_defaults(func=cmd_rag_ask)
