"""The semantic cache's server store: PostgreSQL with pgvector (``SemanticCache("postgresql://...")``).

Every server worker (process) opens its own :class:`PgCacheStore` on the same URL and they share one cache: there is
no in-memory index to keep in step, each lookup asks the database. Tables, under the URL's prefix (default
``alignkit_``, see :mod:`alignkit.rag.pg`):

- ``{prefix}cache_entries``: id (bigserial, never reused), question, norm, answer, context, created, last_used,
  hits and ``embedding`` (a pgvector ``vector``), unique on (norm, context); an HNSW index with cosine distance on
  the embedding (built once the dimension is known) does the nearest-neighbour search in SQL;
- ``{prefix}cache_meta``: embedder, dimension, schema; ``{prefix}cache_counters``: hits, misses, evictions, expired.

A put is one transaction (rows and vectors together; a crash loses nothing committed). Writes (puts, the TTL purge,
the LRU bound, batched hit counts) take a transaction-scoped advisory lock, so two workers evicting at once cannot
both drop rows for the same overflow. Lookups are reads; hit counts and last-use times are batched as in the
embedded store (``flush_every`` / ``flush_seconds``). Opening creates the tables (and the ``vector`` extension when
the role may); ``create=False`` makes a database without them an error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from alignkit.rag.cache_store import (
    COUNTERS,
    SCHEMA_VERSION,
    CacheRow,
    StoreCounts,
    _Pending,
    check_settings,
    is_expired,
    stored_settings,
)
from alignkit.rag.errors import RagError
from alignkit.rag.pg import connect, redact, split_url

__all__ = ["PgCacheStore"]

_MAX_EF = 1000  # pgvector's largest hnsw.ef_search: an HNSW scan returns at most this many rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}cache_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {p}cache_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {p}cache_entries (
    id BIGSERIAL PRIMARY KEY,
    question TEXT NOT NULL,
    norm TEXT NOT NULL,
    answer TEXT NOT NULL,
    context TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    last_used DOUBLE PRECISION NOT NULL,
    hits BIGINT NOT NULL DEFAULT 0,
    embedding vector NOT NULL,
    UNIQUE (norm, context)
);
CREATE INDEX IF NOT EXISTS {p}cache_last_used ON {p}cache_entries (last_used, id);
CREATE INDEX IF NOT EXISTS {p}cache_created ON {p}cache_entries (created);
"""


class PgCacheStore:
    """A :class:`~alignkit.rag.cache_store.CacheStore` in PostgreSQL + pgvector (see the module doc)."""

    def __init__(
        self,
        url: str,
        *,
        embedder_name: str | None,
        dim: int | None,
        clock: Callable[[], float] = time.time,
        ttl: float | None = None,
        max_entries: int | None = None,
        create: bool = True,
        flush_every: int = 256,
        flush_seconds: float = 5.0,
    ):
        self.location = redact(url)
        check_settings(self.location, ttl, max_entries)
        _, p = split_url(url)
        self._t = {"entries": f"{p}cache_entries", "meta": f"{p}cache_meta", "counters": f"{p}cache_counters", "p": p}
        self._lock_key = f"alignkit-cache:{p}"
        self.ttl, self.max_entries, self._clock = ttl, max_entries, clock
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self._lock = threading.RLock()  # one connection per store
        self._pending = _Pending.new()
        self._last_flush = time.monotonic()
        self._closed = False
        self._conn = connect(url)
        try:
            self.embedder_name, self.dim = self._setup(create, embedder_name, dim)
        except BaseException:
            self._conn.close()
            raise

    def _sql(self, q: str) -> str:
        return q.format(E=self._t["entries"], M=self._t["meta"], C=self._t["counters"], p=self._t["p"])

    def _write_lock(self) -> None:
        """Inside a transaction: wait for the other writers of this cache (released at commit)."""
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))

    # --- opening ----------------------------------------------------------------------------------
    def _setup(self, create: bool, name: str | None, dim: int | None) -> tuple[str, int | None]:
        with self._conn.transaction():
            self._write_lock()
            (exists,) = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self._t["meta"],)).fetchone()
            if not exists:
                if not create:
                    raise RagError(f"{self.location}: no semantic cache here (no table {self._t['meta']})")
                for stmt in self._sql(_SCHEMA).split(";"):
                    if stmt.strip():
                        self._conn.execute(stmt)
            meta = dict(self._conn.execute(self._sql("SELECT key, value FROM {M}")).fetchall())
            st = stored_settings(self.location, meta, name, dim)
            if st.new:
                self._conn.cursor().executemany(
                    self._sql("INSERT INTO {M} (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING"),
                    [("schema", str(SCHEMA_VERSION)), ("embedder", st.embedder)],
                )
            self._conn.cursor().executemany(  # every counter, also those newer than the cache
                self._sql("INSERT INTO {C} (name, value) VALUES (%s, 0) ON CONFLICT DO NOTHING"), [(c,) for c in COUNTERS]
            )
            if st.record_dim:
                self._record_dim(dim)
        return st.embedder, st.dim

    def _record_dim(self, dim: int) -> None:
        """Inside a transaction: store the dimension and build the HNSW index over ``embedding::vector(dim)``."""
        self._conn.execute(self._sql("INSERT INTO {M} (key, value) VALUES ('dim', %s) ON CONFLICT DO NOTHING"), (str(dim),))
        self._conn.execute(
            self._sql(
                f"CREATE INDEX IF NOT EXISTS {{p}}cache_hnsw ON {{E}} USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops)"
            )
        )

    def set_dim(self, dim: int) -> None:
        with self._lock:
            if self.dim is None:
                with self._conn.transaction():
                    self._write_lock()
                    self._record_dim(int(dim))
                self.dim = int(dim)

    # --- lookups ------------------------------------------------------------------------------------
    def exact(self, norm: str, ctx: str, now: float) -> tuple[int, str] | None:
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                self._sql("SELECT id, answer, created FROM {E} WHERE norm = %s AND context = %s"), (norm, ctx)
            ).fetchone()
            if row is None:
                return None
            if is_expired(self.ttl, row[2], now):
                self._pending.expired.add(int(row[0]))
                return None
            return int(row[0]), row[1]

    def nearest(self, vec: np.ndarray, k: int, now: float) -> list[CacheRow]:
        k = min(int(k), _MAX_EF)
        dim = int(self.dim if self.dim is not None else len(vec))
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        with self._lock:
            self._check_open()
            with self._conn.transaction():
                self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, k)}")
                rows = self._conn.execute(
                    self._sql(
                        f"SELECT id, question, answer, context, created, embedding::vector({dim}) <=> %s::vector({dim}) AS d "
                        f"FROM {{E}} ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT %s"
                    ),
                    (vec, vec, k),
                ).fetchall()
            out = []
            for id_, question, answer, context, created, dist in rows:
                expired = is_expired(self.ttl, created, now)
                if expired:
                    self._pending.expired.add(int(id_))
                out.append(CacheRow(int(id_), question, answer, context, created, 1.0 - float(dist), expired))
            return out

    def record(self, hit_id: int | None, now: float, wrong: float | None = None) -> None:
        with self._lock:
            self._check_open()
            self._pending.record(hit_id, now, wrong)
            if self._pending.size() >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
                with self._conn.transaction():
                    self._write_lock()
                    self._flush(now)

    # --- writes -------------------------------------------------------------------------------------
    def put_many(self, rows: Sequence[tuple[str, str, str, str]], vecs: np.ndarray, now: float) -> list[int]:
        vecs = np.asarray(vecs, dtype=np.float32)
        with self._lock:
            self._check_open()
            ids: list[int] = []
            with self._conn.transaction():
                self._write_lock()
                self._flush(now, purge_all=True)
                for (question, norm, answer, ctx), vec in zip(rows, vecs):
                    # a stored key keeps its question and vector (the wording the vector was made from)
                    (id_,) = self._conn.execute(
                        self._sql(
                            "INSERT INTO {E} (question, norm, answer, context, created, last_used, hits, embedding) "
                            "VALUES (%s, %s, %s, %s, %s, %s, 0, %s) ON CONFLICT (norm, context) DO UPDATE SET "
                            "answer = EXCLUDED.answer, created = EXCLUDED.created, last_used = EXCLUDED.last_used RETURNING id"
                        ),
                        (question, norm, answer, ctx, now, now, vec),
                    ).fetchone()
                    ids.append(int(id_))
                self._evict()
            return ids

    def _flush(self, now: float, *, purge_all: bool = False) -> None:
        """Inside a write transaction: the batched hit counts and last-use times, the purge of expired rows (those met
        in lookups, or all with ``purge_all``)."""
        p = self._pending
        cur = self._conn.cursor()
        if p.touch:
            cur.executemany(
                self._sql("UPDATE {E} SET last_used = GREATEST(last_used, %s), hits = hits + %s WHERE id = %s"),
                [(last_used, n, id_) for id_, (last_used, n) in p.touch.items()],
            )
        for name, n in p.counter_deltas():
            if n:
                cur.execute(self._sql("UPDATE {C} SET value = value + %s WHERE name = %s"), (n, name))
        expired = 0
        if self.ttl is not None:
            cutoff = now - self.ttl
            if purge_all:
                expired = cur.execute(self._sql("DELETE FROM {E} WHERE created <= %s"), (cutoff,)).rowcount
            elif p.expired:
                expired = cur.execute(
                    self._sql("DELETE FROM {E} WHERE id = ANY(%s) AND created <= %s"), (sorted(p.expired), cutoff)
                ).rowcount
        if expired:
            cur.execute(self._sql("UPDATE {C} SET value = value + %s WHERE name = 'expired'"), (expired,))
        self._pending = _Pending.new()
        self._last_flush = time.monotonic()

    def _evict(self) -> None:
        if self.max_entries is None:
            return
        (count,) = self._conn.execute(self._sql("SELECT COUNT(*) FROM {E}")).fetchone()
        if count <= self.max_entries:
            return
        n = self._conn.execute(
            self._sql("DELETE FROM {E} WHERE id IN (SELECT id FROM {E} ORDER BY last_used, id LIMIT %s)"),
            (count - self.max_entries,),
        ).rowcount
        self._conn.execute(self._sql("UPDATE {C} SET value = value + %s WHERE name = 'evictions'"), (n,))

    # --- housekeeping -------------------------------------------------------------------------------
    def counts(self, now: float) -> StoreCounts:
        with self._lock:
            self._check_open()
            with self._conn.transaction():
                self._write_lock()
                self._flush(now)
            with self._conn.transaction():
                (entries,) = self._conn.execute(self._sql("SELECT COUNT(*) FROM {E}")).fetchone()
                pending = 0
                if self.ttl is not None:
                    (pending,) = self._conn.execute(
                        self._sql("SELECT COUNT(*) FROM {E} WHERE created <= %s"), (now - self.ttl,)
                    ).fetchone()
                counters = dict(self._conn.execute(self._sql("SELECT name, value FROM {C}")).fetchall())
                (size,) = self._conn.execute(
                    "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(t))), 0) FROM unnest(%s::text[]) AS t",
                    ([self._t["entries"], self._t["meta"], self._t["counters"]],),
                ).fetchone()
        return StoreCounts(int(entries), int(pending), {c: int(counters.get(c, 0)) for c in COUNTERS}, int(size))

    def clear(self) -> int:
        with self._lock:
            self._check_open()
            with self._conn.transaction():
                self._write_lock()
                n = self._conn.execute(self._sql("DELETE FROM {E}")).rowcount
                self._conn.execute(self._sql("UPDATE {C} SET value = 0"))
            self._pending = _Pending.new()
            return int(n)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                with self._conn.transaction():
                    self._write_lock()
                    self._flush(self._clock())
            finally:
                self._conn.close()
                self._closed = True

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._conn.execute(self._sql("SELECT COUNT(*) FROM {E}")).fetchone()[0])

    def _check_open(self) -> None:
        if self._closed:
            raise RagError(f"{self.location}: the semantic cache is closed")
