"""``alignkit serve``: load the model (and the RAG index / semantic cache when asked), build the app, run uvicorn.
The options schema (pydantic only at import) and the entry point; registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed

API_KEY_ENV = "ALIGNKIT_API_KEY"
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # = alignkit.serve.app.DEFAULT_MAX_REQUEST_BYTES (not imported: keeps --help light)
GRACEFUL_SHUTDOWN_S = 30  # SIGTERM / Ctrl-C: requests in flight get this long to finish, then the server stops


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def default_model_name(model: str) -> str:
    """The name clients send as ``model`` when ``--model-name`` is not given: a directory's own name (``final`` for
    ``runs/dpo/final``, never the filesystem path), or the Hub id as given."""
    path = Path(model)
    return path.resolve().name if path.exists() else model


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening address bound now, before the model loads, so a port in use (or a bad host) is a one-line
    error at once; uvicorn serves on this socket."""
    from alignkit.models.errors import ModelError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ModelError(f"--host {host}: cannot listen there ({err.strerror or err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise ModelError(
            f"cannot listen on {host}:{port}: {err.strerror or err} (another server on that port? try --port)"
        ) from None
    sock.set_inheritable(True)
    return sock


class ServeOptions(Closed):
    """``alignkit serve --model M``. ``--port`` and ``--max-request-bytes`` are checked by argparse types (a bad one
    is argparse's usage error, at once)."""

    model: str = Field(description="model directory, LoRA adapter directory or Hub id")
    host: str = Field("127.0.0.1", description="interface to listen on (default: loopback only)")
    port: Annotated[int, Opt(type=_port)] = Field(8000, description="port to listen on (default: 8000)")
    backend: Literal["transformers", "vllm"] = Field(  # = alignkit.models.backends.BACKENDS (a test checks)
        "transformers",
        description="transformers (CPU or one GPU, requests one at a time) or vllm (CUDA, batched; pip install 'alignkit[vllm]')",
    )
    device: str | None = Field(None, description="transformers backend: cpu, cuda, cuda:1 ... (default: cuda if available)")
    model_name: str | None = Field(
        None, description="the name clients send as 'model' (default: the model directory's name or the Hub id)"
    )
    rag_index: Annotated[str | None, Opt(metavar="DIR|URL")] = Field(
        None, description="answer through the RAG pipeline over this index (a directory or postgresql:// URL)"
    )
    cache: Annotated[str | None, Opt(metavar="DIR|URL")] = Field(
        None,
        description="semantic cache (RAG answers, or greedy chat answers): a directory, or a postgresql://user@host:port/db "
        "URL that several server workers share",
    )
    api_key: str | None = Field(
        None, description=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset: no auth; empty: an error)"
    )
    max_request_bytes: Annotated[int, Opt(type=_positive)] = Field(
        DEFAULT_MAX_REQUEST_BYTES,
        description=f"larger request bodies are refused with 413 before they are read (default: {DEFAULT_MAX_REQUEST_BYTES}, 1 MiB)",
    )


def serve(opts: ServeOptions) -> int:
    from alignkit.errors import require

    require("fastapi", "alignkit serve")
    uvicorn = require("uvicorn", "alignkit serve")

    from alignkit.models.backends import check_device, load_backend
    from alignkit.serve.app import create_app

    api_key = _api_key(opts.api_key, os.environ.get(API_KEY_ENV))
    if opts.backend == "transformers":
        check_device(opts.device)  # cheap checks first: nothing is loaded for a typo
    name = opts.model_name or default_model_name(opts.model)
    rag, cache, closers = _rag_components(opts.rag_index, opts.cache)  # before the model: bad paths fail fast
    sock = bind_socket(opts.host, opts.port)  # a port in use is reported now, not after the model loads
    try:
        backend = load_backend(opts.model, backend=opts.backend, device=opts.device)
        if rag is not None:
            rag = rag(backend)
        app = create_app(
            backend,
            rag=rag,
            cache=cache,
            api_key=api_key,
            model_name=name,
            on_shutdown=closers,
            max_request_bytes=opts.max_request_bytes,
        )
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    from alignkit.rag.pg import redact

    mode = [opts.backend, f"RAG over {redact(opts.rag_index)}" if opts.rag_index else "chat"]
    mode += [f"cache {redact(opts.cache)}"] if opts.cache else []
    mode += ["API key required"] if api_key else []
    print(f"serving {name} ({', '.join(mode)}) on http://{opts.host}:{port}/v1")
    if not api_key and opts.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {opts.host} with no API key; set --api-key or ${API_KEY_ENV}")
    config = uvicorn.Config(app, host=opts.host, port=port, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _api_key(given: str | None, env: str | None) -> str | None:
    """The key to require: ``--api-key``, else the environment variable, else None (no auth). An empty or blank key,
    given either way, is a one-line error: it would otherwise silently switch authentication off."""
    from alignkit.models.errors import ModelError

    if given is not None:
        if not given.strip():
            raise ModelError("--api-key is empty: give a key, or leave the option out to serve without authentication")
        return given
    if env is not None:
        if not env.strip():
            raise ModelError(f"${API_KEY_ENV} is set but empty: give a key, or unset it to serve without authentication")
        return env
    return None


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
