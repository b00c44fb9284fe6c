"""``alignkit rag index`` and ``alignkit rag ask``: the options schemas (pydantic only at import) and the entry
points that take them (the work inside). Registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed


def _embedder(name: str, device: str | None = None):
    """The sentence-transformers embedder ``name``; one that cannot be loaded (offline, misspelt) is a RagError."""
    from alignkit.rag.embed import Embedder
    from alignkit.rag.errors import RagError

    try:
        return Embedder(name, device=device)
    except (OSError, ValueError) as err:
        from alignkit.errors import first_line

        raise RagError(f"embedder {name}: cannot load it ({first_line(err)})") from None


class IndexOptions(Closed):
    """``alignkit rag index --docs PATH... --index DIR``."""

    docs: Annotated[list[str], Opt(nargs="+", metavar="PATH")] = Field(description="files or directories (searched recursively)")
    index: Annotated[str, Opt(metavar="DIR")] = Field(
        description="index directory (created if missing; not a file), or a postgresql:// URL (docs/rag.md)"
    )
    embedder: str | None = Field(None, description="sentence-transformers model (default: the index's, else all-MiniLM-L6-v2)")
    chunk_tokens: int = Field(256, description="most embedder tokens per chunk")
    overlap: int = Field(32, description="tokens shared by consecutive chunks of a section")
    keep_code: bool = Field(False, description="index the contents of markdown code fences too")
    on_error: Literal["skip", "error"] = Field(
        "skip", description="a file that cannot be read (not UTF-8, an encrypted or damaged PDF): skip and list it, or stop"
    )
    device: str | None = Field(None, description="embedder device (default: sentence-transformers' choice)")
    no_progress: bool = Field(False, description="no progress bar")


def rag_index(opts: IndexOptions) -> int:
    from pathlib import Path

    from alignkit.rag.documents import SUFFIXES
    from alignkit.rag.embed import DEFAULT_EMBEDDER
    from alignkit.rag.errors import RagError
    from alignkit.rag.pg import redact
    from alignkit.rag.store import CorpusIndex, discover

    index_path = Path(opts.index)
    if index_path.exists() and not index_path.is_dir():
        raise RagError(f"--index {opts.index}: a file, not a directory (the index is a directory, created if missing)")
    _, found = discover(opts.docs)  # a missing path is reported before the embedder loads
    if not found:
        raise RagError(
            f"--docs {' '.join(map(str, opts.docs))}: no documents found ({', '.join(SUFFIXES)} files; hidden ones skipped)"
        )
    name = opts.embedder
    if CorpusIndex.exists(opts.index):
        recorded = CorpusIndex.info(opts.index).embedder
        if name is not None and name != recorded:
            raise RagError(
                f"{opts.index}: built with embedder {recorded}, not {name}: drop --embedder or index into a new directory"
            )
        name = recorded
    embedder = _embedder(name or DEFAULT_EMBEDDER, opts.device)
    with CorpusIndex.open(opts.index, embedder, create=True) as index:
        r = index.update(
            opts.docs,
            chunk_tokens=opts.chunk_tokens,
            overlap=opts.overlap,
            keep_code=opts.keep_code,
            progress=not opts.no_progress,
            on_error=opts.on_error,
        )
        n_files, n_chunks, version = len(index.files()), len(index), index.version
    if r.rechunked:
        print("chunking settings changed: every file was re-chunked")
    print(
        f"indexed {', '.join(map(str, opts.docs))} into {redact(opts.index)} in {r.seconds:.1f} s: "
        f"{len(r.added)} new, {len(r.changed)} changed, {r.unchanged} unchanged, {len(r.moved)} moved, {len(r.removed)} removed, "
        f"{len(r.skipped)} skipped files; chunks +{r.chunks_added} -{r.chunks_removed}"
    )
    for rel, why in r.skipped:
        print(f"  skipped {rel}: {why}")
    for rel in r.removed:
        print(f"  removed {rel} (no longer among --docs)")
    for rel, pages in r.no_text_pages:
        print(f"  no text layer: {rel} page{'s' if len(pages) > 1 else ''} {', '.join(map(str, pages))} (scans? not indexed)")
    print(f"index: {n_files} files, {n_chunks} chunks, embedder {embedder.name} (dim {embedder.dim}), version {version}")
    return 0


class AskOptions(Closed):
    """``alignkit rag ask QUESTION --index DIR --model M``."""

    question: Annotated[str, Opt(positional=True)] = Field(description="the question to answer")
    index: Annotated[str, Opt(metavar="DIR")] = Field(description="index directory (or postgresql:// URL) built by 'rag index'")
    model: str = Field(description="chat model directory or Hub id")
    cache: Annotated[str | None, Opt(metavar="DIR")] = Field(
        None, description="semantic cache directory or postgresql:// URL (looked up before retrieval)"
    )
    top_k: int = Field(5, description="passages retrieved")
    mmr: bool = Field(False, description="re-rank --fetch-k candidates by maximal marginal relevance")
    mmr_lambda: float = Field(0.5, description="MMR relevance weight (1: plain top-k)")
    fetch_k: int = Field(20, description="MMR candidates")
    max_context_tokens: int = Field(1024, description="passage budget, in embedder tokens")
    max_new_tokens: int = Field(256, description="most tokens in the answer")
    temperature: float = Field(0.0, description="sampling temperature, 0: greedy")
    top_p: float = Field(1.0, description="nucleus sampling mass (1: off)")
    seed: int = Field(0, description="sampling seed")
    embedder: str | None = Field(None, description="must match the index's (default: the index's)")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="generation backend")
    device: str | None = Field(None, description="model device (default: cuda when available, else cpu)")


def rag_ask(opts: AskOptions) -> int:
    import contextlib

    from alignkit.models.backends import GenerationSettings, load_backend
    from alignkit.rag.errors import RagError
    from alignkit.rag.pipeline import RagPipeline
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    if not opts.question.strip():
        raise RagError("question: empty")
    settings = GenerationSettings(
        max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed
    )
    info = CorpusIndex.info(opts.index)
    if opts.embedder and opts.embedder != info.embedder:
        raise RagError(f"{opts.index}: built with embedder {info.embedder}, not {opts.embedder}")
    embedder = _embedder(info.embedder)
    with contextlib.ExitStack() as stack:
        index = stack.enter_context(CorpusIndex.open(opts.index, embedder))
        cache = None
        if opts.cache:
            from alignkit.rag.cache import SemanticCache

            cache = stack.enter_context(SemanticCache(opts.cache, embedder=embedder))
        retriever = Retriever(index, embedder, k=opts.top_k, mmr=opts.mmr, mmr_lambda=opts.mmr_lambda, fetch_k=opts.fetch_k)
        backend = load_backend(opts.model, backend=opts.backend, device=opts.device)
        pipeline = RagPipeline(retriever, backend, cache=cache, settings=settings, max_context_tokens=opts.max_context_tokens)
        answer = pipeline.answer(opts.question)
    print(answer.text if answer.text else "(the model returned an empty answer)")
    print()
    print("Sources:")
    if not answer.sources:
        print("  (none: the index returned no passages)")
    for i, hit in enumerate(answer.sources, 1):
        print(f"  [{i}] {hit.citation} (score {hit.score:.3f})")  # a PDF chunk: "book.pdf page 12 — heading"
    if answer.left_out:
        print(f"  ({answer.left_out} more retrieved passage(s) left out: the prompt would not fit the model's context)")
    if answer.cached:
        print("(answer from the semantic cache)")
    return 0
