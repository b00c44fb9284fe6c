"""A persistent semantic cache: answer a question again when it comes back in other words.

``SemanticCache(path, error_bound=0.02).get(question)`` returns a stored answer when a cached question is the same
question: the same words (after :func:`~alignkit.rag.match.normalise`: an exact repeat, no embedding needed), or
a cached question among the nearest (cosine of at least ``threshold``, a cheap prefilter) that the second check
accepts. The default check (:class:`~alignkit.rag.verified_check.VerifiedCheck`) is a few crisp vetoes and a
learned, calibrated cross-encoder: an answer is served only when the calibrated probability that it is wrong is
below ``error_bound``, and ``stats()`` reports the estimated error rate among hits. The measured curves are in
docs/cache.md. The rule engine of :mod:`alignkit.rag.match` remains as an opt-in check (``check=RuleCheck()``).

:class:`SemanticCache` is two parts and an embedder:

- a **store** (:mod:`alignkit.rag.cache_store`): rows and their vectors, crash-safe, TTL and LRU bound, counters,
  several processes sharing it. ``path`` picks it: a directory is the embedded SQLite + faiss store (the default;
  its layout and how processes follow each other are in :mod:`alignkit.rag.cache_store`), a ``postgresql://``
  URL the PostgreSQL + pgvector store (:mod:`alignkit.rag.cache_pg`) that several server workers share;
- a **policy** (:mod:`alignkit.rag.policy`): exact repeat, the store's nearest neighbours as candidates, the
  injected second check (a :class:`~alignkit.rag.policy.Verifier`), hit or miss.

Within a process a cache is thread-safe (the store locks); the embedder runs outside the store's lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alignkit.rag.cache_store import DB_FILE, VECTORS_DIR, CacheStore, SqliteCacheStore
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError
from alignkit.rag.match import CandidateCheck, normalise
from alignkit.rag.pg import is_postgres_url, redact
from alignkit.rag.policy import Candidate, LookupPolicy, Verifier, as_verifier
from alignkit.rag.verified_check import DEFAULT_ERROR_BOUND, DEFAULT_PREFILTER, VerifiedCheck

DEFAULT_THRESHOLD = DEFAULT_PREFILTER  # the default cosine prefilter of the default check

__all__ = ["CacheStats", "Candidate", "DB_FILE", "DEFAULT_ERROR_BOUND", "DEFAULT_THRESHOLD", "SemanticCache", "VECTORS_DIR"]


@dataclass(frozen=True)
class CacheStats:
    """What ``alignkit cache stats`` prints."""

    path: str  # the directory, or the URL without its password
    entries: int  # rows stored (expired ones not yet purged included)
    expired_pending: int  # of those, past the TTL (purged at the next write)
    hits: int  # lookups answered, all processes (the last few of other processes may not be written yet)
    misses: int
    hit_rate: float  # hits / (hits + misses); 0 with no lookups
    evictions: int  # rows dropped by the LRU bound
    expired: int  # rows purged after their TTL
    threshold: float
    check: str
    error_bound: float | None  # the default check's bound on P(wrong) per served answer (None: another check)
    semantic_hits: int  # hits served through the second check with a probability (the rest: exact repeats)
    estimated_error_rate: float | None  # mean P(wrong) over all hits (exact repeats count 0); None: no hits yet
    embedder: str
    dim: int | None  # embedding size (None until the first embedding)
    ttl: float | None
    max_entries: int | None
    size_bytes: int  # SQLite files + vector index on disk, or the PostgreSQL tables and indexes

    def as_dict(self) -> dict:
        return asdict(self)


class SemanticCache:
    """A question -> answer cache that also answers paraphrases (see the module docstring).

    ``path``: the cache directory (created), or a ``postgresql://user@host:port/db`` URL (the server store; see
    :mod:`alignkit.rag.pg`). ``embedder``: anything :class:`~alignkit.rag.embed.EmbedderLike`;
    None builds :class:`~alignkit.rag.embed.Embedder` lazily, on the first lookup that needs it, for the
    model the cache was built with (the default model for a new cache). Opening a cache with an embedder
    of another name is an error: its vectors would not be comparable. ``threshold``: the least cosine
    similarity for a candidate to be judged (default: ``check.default_threshold``). ``error_bound``: the default
    check serves an answer only when its calibrated P(wrong) is below this (default 0.02). ``ttl``: seconds an entry may be served after its put (None: forever).
    ``max_entries``: keep at most this many, evicting the least recently used. ``check``: the second check
    on candidates: a :class:`~alignkit.rag.policy.Verifier` (judges a question's candidates together; default
    :class:`~alignkit.rag.verified_check.VerifiedCheck`), or a pairwise check (:class:`~alignkit.rag.match.RuleCheck`,
    the rule engine; :class:`~alignkit.rag.match.PlainCosine` turns the check off). ``clock``: returns seconds (tests inject a fake one). ``create``: False makes a missing
    cache an error instead of creating it. ``top_k``: candidates checked per lookup (more are fetched when
    all of them pass the threshold but fail a check). ``save_every``: index changes between saves (embedded
    store). ``flush_every``/``flush_seconds``: lookups counted in memory before their counters are written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        embedder: EmbedderLike | None = None,
        threshold: float | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        *,
        check: CandidateCheck | Verifier | None = None,
        error_bound: float | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
        top_k: int = 8,
        save_every: int = 2000,
        flush_every: int = 256,
        flush_seconds: float = 5.0,
    ):
        self.path = redact(str(path)) if is_postgres_url(path) else Path(path)
        if check is not None and error_bound is not None:
            raise RagError(f"{self.path}: error_bound sets the default check; with check={check.name!r} leave it out")
        self.check = check if check is not None else VerifiedCheck(DEFAULT_ERROR_BOUND if error_bound is None else error_bound)
        threshold = float(threshold if threshold is not None else self.check.default_threshold)
        if not -1.0 <= threshold <= 1.0:
            raise RagError(f"{self.path}: threshold must be a cosine similarity in [-1, 1], got {threshold}")
        self.policy = LookupPolicy(as_verifier(self.check), threshold, top_k)
        self.ttl, self.max_entries = ttl, max_entries
        self._clock = clock
        self._embed_lock = threading.Lock()  # builds the default embedder once (its calls lock themselves)
        self._embedder = embedder
        self._closed = False
        common = dict(
            embedder_name=getattr(embedder, "name", None) if embedder is not None else None,
            dim=int(embedder.dim) if embedder is not None else None,
            clock=clock,
            ttl=ttl,
            max_entries=max_entries,
            create=create,
            flush_every=flush_every,
            flush_seconds=flush_seconds,
        )
        self.store: CacheStore
        if is_postgres_url(path):
            from alignkit.rag.cache_pg import PgCacheStore

            self.store = PgCacheStore(str(path), **common)
        else:  # the embedded store re-embeds rows missing from its vector index
            embedder_dim = lambda: int(self.embedder.dim)  # noqa: E731
            self.store = SqliteCacheStore(
                Path(path), embed=self._embed, embedder_dim=embedder_dim, save_every=save_every, **common
            )

    # --- settings, read through to the policy and the store -----------------------------------------
    @property
    def threshold(self) -> float:
        return self.policy.threshold

    @property
    def top_k(self) -> int:
        return self.policy.top_k

    @property
    def embedder_name(self) -> str:
        return self.store.embedder_name

    @property
    def dim(self) -> int | None:
        return self.store.dim

    @property
    def flush_seconds(self) -> float:
        return self.store.flush_seconds

    @flush_seconds.setter
    def flush_seconds(self, value: float) -> None:
        self.store.flush_seconds = value

    @property
    def embedder(self) -> EmbedderLike:
        """The embedder, built on first use when none was given."""
        if self._embedder is None:
            with self._embed_lock:
                if self._embedder is None:
                    from alignkit.rag.embed import Embedder

                    self._embedder = Embedder(self.embedder_name, runtime="onnx")  # int8: the lookup's latency
        return self._embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 question vectors; records the dimension on the first embedding."""
        emb = self.embedder
        vecs = np.ascontiguousarray(emb.encode(list(texts)), dtype=np.float32)
        if vecs.shape != (len(texts), int(emb.dim)):
            raise RagError(f"{self.path}: embedder {self.embedder_name!r} returned shape {vecs.shape} for {len(texts)} texts")
        if self.store.dim is None:
            self.store.set_dim(int(emb.dim))
        return vecs

    # --- lookups ------------------------------------------------------------------------------------
    def get(self, question: str, context: str | None = None) -> str | None:
        """The cached answer to ``question`` (same ``context``), or None. See :meth:`explain` for why."""
        self._check_open()
        ctx = _context(context, self.path)
        now = self._clock()
        exact = self.store.exact(normalise(question), ctx, now)
        if exact is not None:
            self.store.record(exact[0], now)
            return exact[1]
        vec = self._embed([question])[0]
        self._check_open()
        for cand in self.policy.candidates(self.store, question, vec, ctx, now, first_hit=True):
            if cand.hit:
                p = cand.verdict.probability
                self.store.record(cand.id, now, wrong=None if p is None else 1.0 - p)
                return cand.answer
        self.store.record(None, now)
        return None

    def explain(self, question: str, context: str | None = None, k: int | None = None) -> list[Candidate]:
        """The ``k`` nearest cached questions (default ``top_k``) with their score, context, expiry and the second
        check's verdict, best first; the one :meth:`get` would serve has ``hit=True``. Counts nothing."""
        self._check_open()
        ctx = _context(context, self.path)
        now = self._clock()
        vec = self._embed([question])[0]
        self._check_open()
        return self.policy.candidates(self.store, question, vec, ctx, now, first_hit=False, k=k or self.top_k)

    # --- writes -------------------------------------------------------------------------------------
    def put(self, question: str, answer: str, context: str | None = None) -> int:
        """Store ``answer`` for ``question`` (replacing the answer of the same question and context); returns
        the row id. Returns once the row is committed: a crash after that cannot lose it."""
        return self.put_many([(question, answer, context)])[0]

    def put_many(self, items: Iterable[tuple[str, str] | tuple[str, str, str | None]]) -> list[int]:
        """Store many (question, answer[, context]) in one transaction with one batched embedding; returns
        their row ids (a question repeated in ``items`` keeps its last answer)."""
        self._check_open()
        batch: dict[tuple[str, str], tuple[str, str]] = {}
        for item in items:
            question, answer = item[0], item[1]
            ctx = _context(item[2] if len(item) > 2 else None, self.path)
            if not isinstance(question, str) or not isinstance(answer, str):
                raise RagError(
                    f"{self.path}: question and answer must be strings, got {type(question).__name__} and {type(answer).__name__}"
                )
            batch[(normalise(question), ctx)] = (question, answer)
        if not batch:
            return []
        keys = list(batch)
        vecs = self._embed([batch[k][0] for k in keys])
        rows = [(batch[(norm, ctx)][0], norm, batch[(norm, ctx)][1], ctx) for norm, ctx in keys]
        self._check_open()
        return self.store.put_many(rows, vecs, self._clock())

    # --- housekeeping -------------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Counts and settings (writes this process's batched counters first)."""
        self._check_open()
        c = self.store.counts(self._clock())
        lookups = c.counters["hits"] + c.counters["misses"]
        return CacheStats(
            path=str(self.path),
            entries=c.entries,
            expired_pending=c.expired_pending,
            hits=c.counters["hits"],
            misses=c.counters["misses"],
            hit_rate=c.counters["hits"] / lookups if lookups else 0.0,
            evictions=c.counters["evictions"],
            expired=c.counters["expired"],
            threshold=self.threshold,
            check=self.check.name,
            error_bound=getattr(self.check, "error_bound", None),
            semantic_hits=c.counters["semantic_hits"],
            estimated_error_rate=c.counters["wrong_ppm"] / 1e6 / c.counters["hits"] if c.counters["hits"] else None,
            embedder=self.embedder_name,
            dim=self.dim,
            ttl=self.ttl,
            max_entries=self.max_entries,
            size_bytes=c.size_bytes,
        )

    def clear(self) -> int:
        """Remove every entry and reset the counters; returns how many entries there were."""
        self._check_open()
        return self.store.clear()

    def close(self) -> None:
        """Write batched counters and the vector index if it changed, and close the store."""
        if self._closed:
            return
        try:
            self.store.close()
        finally:
            self._closed = True

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        self._check_open()
        return len(self.store)

    def _check_open(self) -> None:
        if self._closed:
            raise RagError(f"{self.path}: the semantic cache is closed")

    # --- for benchmarks/semantic_cache.py (embedded store only) --------------------------------------
    @property
    def _lock(self) -> threading.RLock:
        return self.store._lock

    @property
    def _index(self):
        """The embedded store's :class:`~alignkit.rag.vectors.VectorIndex` (loaded and brought up to date)."""
        with self.store._lock:
            return self.store._ensure_index().index

    def _search(self, vec: np.ndarray, k: int):
        """The embedded store's raw top-``k`` for one query vector (a SearchResult)."""
        return self._index.search(np.asarray(vec, np.float32).reshape(1, -1), k)


# --- helpers ---------------------------------------------------------------------------------------
def _context(context: str | None, where) -> str:
    if context is None:
        return ""
    if not isinstance(context, str):
        raise RagError(f"{where}: context must be a string (or None), got {type(context).__name__}")
    return context
