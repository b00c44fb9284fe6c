"""``alignkit serve``: load the model (and the RAG index / semantic cache when asked), build the app, run uvicorn."""

from __future__ import annotations

import argparse
import os

API_KEY_ENV = "ALIGNKIT_API_KEY"


def add_parsers(sub) -> None:
    """Register ``serve`` on the ``alignkit`` subparsers (argparse only: nothing heavy at import)."""
    s = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions)")
    s.add_argument("--model", required=True, help="model directory, LoRA adapter directory or Hub id")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    from alignkit.models.backends import BACKENDS

    s.add_argument(
        "--backend",
        choices=BACKENDS,
        default="transformers",
        help="transformers (CPU or one GPU, requests one at a time) or vllm (CUDA, batched; pip install 'alignkit[vllm]')",
    )
    s.add_argument("--device", help="transformers backend: cpu, cuda, cuda:1 ... (default: cuda if available)")
    s.add_argument("--model-name", help="the name clients send as 'model' (default: the --model argument)")
    s.add_argument("--rag-index", metavar="DIR", help="answer through the RAG pipeline over this index")
    s.add_argument("--cache", metavar="DIR", help="semantic cache directory (RAG answers, or greedy chat answers)")
    s.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no auth)")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    import uvicorn

    from alignkit.models.backends import load_backend
    from alignkit.serve.app import create_app

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    rag, cache, closers = _rag_components(args.rag_index, args.cache)  # before the model: bad paths fail fast
    backend = load_backend(args.model, backend=args.backend, device=args.device)
    if rag is not None:
        rag = rag(backend)
    app = create_app(
        backend, rag=rag, cache=cache, api_key=api_key, model_name=args.model_name or args.model, on_shutdown=closers
    )
    mode = [args.backend, f"RAG over {args.rag_index}" if args.rag_index else "chat"]
    mode += [f"cache {args.cache}"] if args.cache else []
    mode += ["API key required"] if api_key else []
    print(f"serving {args.model_name or args.model} ({', '.join(mode)}) on http://{args.host}:{args.port}/v1")
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host} with no API key; set --api-key or ${API_KEY_ENV}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _rag_components(index_dir: str | None, cache_dir: str | None):
    """``(make_pipeline(backend) or None, cache or None, what to close at shutdown)``. With an index, one embedder is
    loaded and shared: the one the index was built with (its name is recorded in the index). A cache alone uses the
    embedder it was built with (the default for a new cache)."""
    if not index_dir:
        if not cache_dir:
            return None, None, []
        from alignkit.rag.cache import SemanticCache

        cache = SemanticCache(cache_dir)
        _ = cache.embedder  # loaded now rather than on the first request
        return None, cache, [cache.close]  # close() saves the cache's vector index
    from alignkit.rag.embed import Embedder
    from alignkit.rag.store import CorpusIndex

    info = CorpusIndex.info(index_dir)  # a missing or foreign index is a one-line RagError, before any loading
    embedder = Embedder(info.embedder)
    cache = None
    if cache_dir:
        from alignkit.rag.cache import SemanticCache

        cache = SemanticCache(cache_dir, embedder=embedder)
    from alignkit.rag.pipeline import RagPipeline
    from alignkit.rag.retrieve import Retriever

    index = CorpusIndex.open(index_dir, embedder)
    closers = [index.close] + ([cache.close] if cache is not None else [])
    return (lambda backend: RagPipeline(Retriever(index, embedder), backend, cache=cache)), cache, closers
