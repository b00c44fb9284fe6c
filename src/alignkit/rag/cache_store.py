"""The semantic cache's store: rows (question, answer, context, times, hits) and their question vectors.

A store answers the questions :class:`~alignkit.rag.cache.SemanticCache`'s lookup policy asks -- the row with these
exact words and context, the ``k`` rows nearest a vector -- and does every write: puts, the TTL purge, the LRU
bound, the hit and miss counters. It knows nothing of thresholds or the second check. Two stores implement the
:class:`CacheStore` protocol:

- :class:`SqliteCacheStore` (the default, embedded): a directory with ``cache.sqlite`` and a faiss vector index.
- :class:`~alignkit.rag.cache_pg.PgCacheStore` (``postgresql://`` URLs): PostgreSQL with pgvector, for several
  server workers sharing one cache.

:class:`~alignkit.rag.cache.SemanticCache` picks one from its path. Every store is thread-safe (an internal lock) and crash-safe: a put
returns once its rows are committed.

The embedded store's layout, in directory ``path``:
  - ``cache.sqlite`` (WAL mode) is the source of truth: table ``entries`` (id, question, norm, answer,
    context, created, last_used, hits), ``meta`` (embedder, dimension, generation, counters) and
    ``removed`` (which ids each generation removed, so other processes can follow).
  - ``vectors/``: the :class:`~alignkit.rag.vectors.VectorIndex` of the question embeddings, keyed by row
    id, saved atomically every ``save_every`` changes and on :meth:`~SqliteCacheStore.close`. It is derived data:
    on open it is reconciled with SQLite (:class:`~alignkit.rag.sqlite_vectors.SyncedVectors`: rows missing from
    it are re-embedded, vectors without rows dropped), so a process killed at any point loses nothing committed.

Several processes may share the embedded store: every change to the set of entries bumps a generation counter in
SQLite; a process that sees a newer generation applies the ``removed`` log and embeds the rows added since (or
reconciles in full when it has fallen too far behind). Hit counts and last-use times are batched in memory and
written with the next write, or by the lookup that makes ``flush_every`` pending or comes ``flush_seconds`` after
the last write, so a lookup is usually a read, not a write.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from alignkit.rag.errors import RagError
from alignkit.rag.sqlite_vectors import SyncedVectors, chunked, connect, transaction

__all__ = ["CacheRow", "CacheStore", "SqliteCacheStore", "StoreCounts"]

log = logging.getLogger(__name__)

DB_FILE, VECTORS_DIR, LOCK_FILE = "cache.sqlite", "vectors", "vectors.lock"
SCHEMA_VERSION = 1
COUNTERS = ("hits", "misses", "evictions", "expired", "semantic_hits", "wrong_ppm")
# semantic_hits: hits served through the second check with a probability; wrong_ppm: the sum over them of the
# check's P(the served answer is wrong), in millionths (an integer, like every counter)
_KEEP_REMOVED = 4096  # generations of the removed log kept; a process further behind reconciles in full

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a vector index id stays one question forever
    question TEXT NOT NULL,
    norm TEXT NOT NULL,                    -- normalise(question): the exact-repeat key
    answer TEXT NOT NULL,
    context TEXT NOT NULL,                 -- '' when none; must match exactly for a hit
    created REAL NOT NULL,                 -- clock() at the last put (TTL counts from here)
    last_used REAL NOT NULL,               -- clock() at the last hit or put (LRU order)
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries(norm, context);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries(last_used);
CREATE INDEX IF NOT EXISTS entries_created ON entries(created);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS removed (gen INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_gen ON removed(gen);
"""

Embed = Callable[[Sequence[str]], np.ndarray]
"""``embed(texts) -> (len(texts), dim) float32``: L2-normalised question vectors (the cache's embedder)."""


class CacheRow(NamedTuple):
    """A stored entry as a lookup sees it."""

    id: int  # row id (never reused)
    question: str  # the question as first stored (its vector was made from these words)
    answer: str
    context: str  # '' when none
    created: float  # clock() at the last put
    score: float  # cosine similarity to the query vector (1.0 for an exact repeat)
    expired: bool  # older than the TTL: never served (purged at the next write)


class StoreCounts(NamedTuple):
    """What a store counts (for :meth:`SemanticCache.stats`)."""

    entries: int  # rows stored, expired ones not yet purged included
    expired_pending: int  # of those, past the TTL
    counters: dict[str, int]  # hits, misses, evictions, expired: all processes, since the last clear
    size_bytes: int  # on disk


class CacheStore(Protocol):
    """What :class:`~alignkit.rag.cache.SemanticCache` asks of a store. ``norm`` is the exact-repeat key
    (:func:`~alignkit.rag.match.normalise` of the question), ``ctx`` the context ('' for none), ``now`` the
    cache's clock."""

    location: str  # the directory or the URL (password removed), for messages and stats
    embedder_name: str  # the embedder the stored vectors were made with
    dim: int | None  # their dimension (None until the first embedding)

    def set_dim(self, dim: int) -> None:
        """Record the vector dimension (once; the first embedding)."""

    def exact(self, norm: str, ctx: str, now: float) -> tuple[int, str] | None:
        """``(id, answer)`` of the unexpired row with this key, else None (an expired one is noted for purging)."""

    def nearest(self, vec: np.ndarray, k: int, now: float) -> list[CacheRow]:
        """The ``k`` rows whose question vectors are nearest ``vec`` (dim,), best first (fewer when the store
        holds fewer); expired ones included and flagged (noted for purging)."""

    def record(self, hit_id: int | None, now: float, wrong: float | None = None) -> None:
        """Count a lookup: a hit on row ``hit_id`` (its last use and hit count updated), or a miss (None).
        ``wrong``: for a semantic hit, the second check's probability that the answer is wrong."""

    def put_many(self, rows: Sequence[tuple[str, str, str, str]], vecs: np.ndarray, now: float) -> list[int]:
        """Store ``rows`` ((question, norm, answer, ctx), distinct keys) with their question vectors (N, dim) in one
        transaction: a key already stored gets the new answer (and keeps its question and vector). Purges expired
        rows and applies the LRU bound. Returns the rows' ids once committed."""

    def counts(self, now: float) -> StoreCounts: ...

    def clear(self) -> int:
        """Remove every row and reset the counters; returns how many rows there were."""

    def close(self) -> None:
        """Write batched counters (and anything derived), release connections. Idempotent."""

    def __len__(self) -> int: ...


@dataclass
class _Pending:
    """Lookup bookkeeping batched in memory until the next write (both stores)."""

    touch: dict[int, tuple[float, int]]  # id -> (last_used, extra hits)
    hits: int = 0
    misses: int = 0
    expired: set[int] | None = None  # ids met expired in lookups
    semantic_hits: int = 0
    wrong_ppm: int = 0

    @classmethod
    def new(cls) -> _Pending:
        return cls({}, 0, 0, set())

    def record(self, hit_id: int | None, now: float, wrong: float | None = None) -> None:
        if hit_id is None:
            self.misses += 1
        else:
            self.hits += 1
            _, n = self.touch.get(hit_id, (now, 0))
            self.touch[hit_id] = (now, n + 1)
            if wrong is not None:
                self.semantic_hits += 1
                self.wrong_ppm += round(1e6 * min(max(wrong, 0.0), 1.0))

    def counter_deltas(self) -> tuple[tuple[str, int], ...]:
        return (
            ("hits", self.hits),
            ("misses", self.misses),
            ("semantic_hits", self.semantic_hits),
            ("wrong_ppm", self.wrong_ppm),
        )

    def size(self) -> int:
        return self.hits + self.misses + len(self.expired)


def check_settings(location: str, ttl: float | None, max_entries: int | None) -> None:
    """One-line errors for a bad TTL or LRU bound."""
    if ttl is not None and ttl <= 0:
        raise RagError(f"{location}: ttl must be positive seconds (or None), got {ttl}")
    if max_entries is not None and max_entries < 1:
        raise RagError(f"{location}: max_entries must be at least 1 (or None), got {max_entries}")


class StoredSettings(NamedTuple):
    """What a store's meta table says of its embedder, checked against the one opening it."""

    embedder: str  # the embedder the vectors are made with
    dim: int | None  # their dimension (None until the first embedding)
    new: bool  # the store has no settings yet: write the embedder, the schema version and zero counters
    record_dim: bool  # the dimension is known now and not yet stored: write it


def stored_settings(location: str, meta: dict, name: str | None, dim: int | None) -> StoredSettings:
    """Read a store's ``meta`` (key -> value; values may be strings): one-line errors for another schema version,
    another embedder or another dimension; otherwise what to use and what to write (both stores)."""
    from alignkit.rag.embed import DEFAULT_EMBEDDER

    if meta.get("schema") is not None and str(meta["schema"]) != str(SCHEMA_VERSION):
        raise RagError(f"{location}: cache schema {meta['schema']}, this alignkit reads {SCHEMA_VERSION}")
    stored = meta.get("embedder")
    if stored is not None and name is not None and name != stored:
        raise RagError(
            f"{location}: cache was built with embedder {stored!r}, opened with {name!r} (use that embedder, or clear the cache)"
        )
    stored_dim = meta.get("dim")
    if stored_dim is not None and dim is not None and int(stored_dim) != dim:
        raise RagError(f"{location}: cache vectors have dimension {stored_dim}, the embedder {dim}")
    return StoredSettings(
        embedder=stored if stored is not None else (name or DEFAULT_EMBEDDER),
        dim=int(stored_dim) if stored_dim is not None else dim,
        new=stored is None,
        record_dim=stored_dim is None and dim is not None,
    )


def is_expired(ttl: float | None, created: float, now: float) -> bool:
    """Whether a row put at ``created`` is past the TTL at ``now`` (never with no TTL)."""
    return ttl is not None and now - created >= ttl


class SqliteCacheStore:
    """The embedded store: SQLite + a faiss vector index in directory ``path`` (see the module doc)."""

    def __init__(
        self,
        path: Path,
        *,
        embedder_name: str | None,
        dim: int | None,
        embed: Embed,
        embedder_dim: Callable[[], int],
        clock: Callable[[], float] = time.time,
        ttl: float | None = None,
        max_entries: int | None = None,
        create: bool = True,
        save_every: int = 2000,
        flush_every: int = 256,
        flush_seconds: float = 5.0,
    ):
        self.path = Path(path)
        self.location = str(self.path)
        check_settings(self.location, ttl, max_entries)
        self.ttl, self.max_entries = ttl, max_entries
        self.save_every, self.flush_every, self.flush_seconds = save_every, flush_every, flush_seconds
        self._embed, self._embedder_dim, self._clock = embed, embedder_dim, clock
        self._lock = threading.RLock()  # the SQLite connection, the vector index and the pending counters
        self._vectors: SyncedVectors | None = None  # loaded on first need
        self._known_gen = -1  # the generation the in-memory index reflects
        self._max_seen_id = 0  # rows up to this id are reflected in the index (or known removed)
        self._pending = _Pending.new()
        self._last_flush = time.monotonic()
        self._closed = False
        self._conn = self._open_db(create)
        self.embedder_name, self.dim = self._check_meta(embedder_name, dim)

    # --- opening ----------------------------------------------------------------------------------
    def _open_db(self, create: bool) -> sqlite3.Connection:
        db = self.path / DB_FILE
        if self.path.exists() and not self.path.is_dir():
            raise RagError(f"{self.path}: cache path is a file, not a directory")
        if not db.exists():
            if not create:
                raise RagError(f"{self.path}: no semantic cache here (no {DB_FILE})")
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            conn = connect(db)
            conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        except sqlite3.DatabaseError as err:
            raise RagError(f"{db}: not a semantic cache database ({err})") from err
        return conn

    def _check_meta(self, name: str | None, dim: int | None) -> tuple[str, int | None]:
        with self._lock, transaction(self._conn):
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            st = stored_settings(str(self.path), meta, name, dim)
            if st.new:
                defaults = {
                    "schema": SCHEMA_VERSION,
                    "embedder": st.embedder,
                    "generation": 0,
                    "removed_floor": 0,
                    **{c: 0 for c in COUNTERS},
                }
                self._conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", list(defaults.items()))
            if st.record_dim:
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dim', ?)", (dim,))
        return st.embedder, st.dim

    def set_dim(self, dim: int) -> None:
        with self._lock:
            if self.dim is None:
                with transaction(self._conn):
                    self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dim', ?)", (int(dim),))
                self.dim = int(dim)

    # --- the vector index: load, reconcile, follow other processes ----------------------------------
    def _ensure_index(self) -> SyncedVectors:
        """Load the vector index (first use) and bring it up to date with SQLite. Holds the lock."""
        if self._vectors is None:
            if self.dim is None:  # nothing was ever embedded: learn the dimension from the embedder
                self.dim = int(self._embedder_dim())
            self._vectors = SyncedVectors.load(self.path / VECTORS_DIR, self.dim, lock_file=self.path / LOCK_FILE)
            self._reconcile()
            if self._vectors.unsaved:
                self._vectors.save()
        else:
            self._follow()
        return self._vectors

    def _reconcile(self) -> None:
        """Make the index hold exactly SQLite's rows: embed the missing ones, drop the extra vectors."""
        with transaction(self._conn, write=False):
            gen = self._meta_int("generation")
            rows = self._conn.execute("SELECT id FROM entries").fetchall()
        in_db = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        missing = len(np.setdiff1d(in_db, self._vectors.index.ids()))
        if missing:
            log.info("%s: embedding %d cached questions missing from the vector index", self.path, missing)
        self._vectors.reconcile(in_db, self._question_vectors)
        self._known_gen = gen
        self._max_seen_id = int(in_db.max()) if len(in_db) else self._max_seen_id

    def _question_vectors(self, ids: list[int]) -> tuple[list[int], np.ndarray]:
        """The rows ``ids`` still stored, and their questions embedded (for :meth:`SyncedVectors.reconcile`)."""
        marks = ",".join("?" * len(ids))
        rows = self._conn.execute(f"SELECT id, question FROM entries WHERE id IN ({marks})", ids).fetchall()
        if not rows:
            return [], np.zeros((0, int(self.dim)), np.float32)
        return [r[0] for r in rows], self._embed([r[1] for r in rows])

    def _follow(self) -> None:
        """Apply the changes other processes made since the generation the index reflects."""
        if self._meta_int("generation") == self._known_gen:
            return
        with transaction(self._conn, write=False):
            gen, floor = self._meta_int("generation"), self._meta_int("removed_floor")
            if self._known_gen < floor:
                removed, new = None, None
            else:
                removed = [r[0] for r in self._conn.execute("SELECT id FROM removed WHERE gen > ?", (self._known_gen,))]
                new = [r[0] for r in self._conn.execute("SELECT id FROM entries WHERE id > ?", (self._max_seen_id,))]
        if removed is None:  # fell behind the removed log (or the cache was cleared): reconcile in full
            self._reconcile()
            return
        self._vectors.remove(removed)
        for part in chunked([i for i in new if i not in self._vectors], 512):
            found, vecs = self._question_vectors(part)
            self._vectors.add(found, vecs)
        self._known_gen = gen
        self._max_seen_id = max([self._max_seen_id, *new])

    # --- lookups ------------------------------------------------------------------------------------
    def exact(self, norm: str, ctx: str, now: float) -> tuple[int, str] | None:
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                "SELECT id, answer, created FROM entries WHERE norm = ? AND context = ?", (norm, ctx)
            ).fetchone()
            if row is None:
                return None
            if is_expired(self.ttl, row[2], now):
                self._pending.expired.add(row[0])
                return None
            return row[0], row[1]

    def nearest(self, vec: np.ndarray, k: int, now: float) -> list[CacheRow]:
        with self._lock:
            self._check_open()
            res = self._ensure_index().index.search(np.asarray(vec, np.float32).reshape(1, -1), k)
            found = [(int(i), float(s)) for i, s in zip(res.ids[0], res.scores[0]) if i >= 0]
            if not found:
                return []
            marks = ",".join("?" * len(found))
            q = f"SELECT id, question, answer, context, created FROM entries WHERE id IN ({marks})"
            rows = {r[0]: r[1:] for r in self._conn.execute(q, [i for i, _ in found])}
            out = []
            for id_, score in found:
                if id_ not in rows:  # removed by another process since our last follow
                    continue
                question, answer, context, created = rows[id_]
                expired = is_expired(self.ttl, created, now)
                if expired:
                    self._pending.expired.add(id_)
                out.append(CacheRow(id_, question, answer, context, created, score, expired))
            return out

    def record(self, hit_id: int | None, now: float, wrong: float | None = None) -> None:
        with self._lock:
            self._check_open()
            self._pending.record(hit_id, now, wrong)
            if self._pending.size() >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
                with transaction(self._conn):
                    removed = self._flush(now)
                self._apply_removed(removed)

    # --- writes -------------------------------------------------------------------------------------
    def put_many(self, rows: Sequence[tuple[str, str, str, str]], vecs: np.ndarray, now: float) -> list[int]:
        with self._lock:
            self._check_open()
            vectors = self._ensure_index()
            ids: list[int] = []
            new: list[tuple[int, int]] = []  # (row id, position in rows)
            with transaction(self._conn):
                gen_before = self._meta_int("generation")
                removed = self._flush(now, purge_all=True)
                for pos, (question, norm, answer, ctx) in enumerate(rows):
                    row = self._conn.execute("SELECT id FROM entries WHERE norm = ? AND context = ?", (norm, ctx)).fetchone()
                    if row is not None:
                        # the stored question keeps the wording its vector was made from
                        self._conn.execute(
                            "UPDATE entries SET answer = ?, created = ?, last_used = ? WHERE id = ?", (answer, now, now, row[0])
                        )
                        ids.append(row[0])
                    else:
                        cur = self._conn.execute(
                            "INSERT INTO entries(question, norm, answer, context, created, last_used, hits) "
                            "VALUES (?, ?, ?, ?, ?, ?, 0)",
                            (question, norm, answer, ctx, now, now),
                        )
                        ids.append(int(cur.lastrowid))
                        new.append((int(cur.lastrowid), pos))
                removed |= self._evict()
                gen = gen_before
                if new or removed:
                    gen = self._bump_generation(removed)
            self._apply_removed(removed)
            survivors = [(i, p) for i, p in new if i not in removed and i not in vectors]
            if survivors:
                vectors.add([i for i, _ in survivors], vecs[[p for _, p in survivors]])
            if gen_before == self._known_gen:  # nobody else wrote in between: our index is current
                self._known_gen = gen
                self._max_seen_id = max([self._max_seen_id, *(i for i, _ in new)])
            if vectors.unsaved >= self.save_every:
                vectors.save()
            return ids

    def _flush(self, now: float, *, purge_all: bool = False) -> set[int]:
        """Write the batched hit counts and last-use times, purge expired rows (those met in lookups, or all
        with ``purge_all``). Runs inside a write transaction; returns the ids purged."""
        p = self._pending
        for id_, (last_used, n) in p.touch.items():
            self._conn.execute(
                "UPDATE entries SET last_used = max(last_used, ?), hits = hits + ? WHERE id = ?", (last_used, n, id_)
            )
        for name, n in p.counter_deltas():
            if n:  # an upsert: caches made before a counter existed gain it
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                    (name, n),
                )
        expired: set[int] = set()
        if self.ttl is not None:
            cutoff = now - self.ttl
            if purge_all:
                expired = {r[0] for r in self._conn.execute("DELETE FROM entries WHERE created <= ? RETURNING id", (cutoff,))}
            elif p.expired:
                marks = ",".join("?" * len(p.expired))
                expired = {
                    r[0]
                    for r in self._conn.execute(
                        f"DELETE FROM entries WHERE id IN ({marks}) AND created <= ? RETURNING id", (*p.expired, cutoff)
                    )
                }
        self._pending = _Pending.new()
        if expired:
            self._conn.execute("UPDATE meta SET value = value + ? WHERE key = 'expired'", (len(expired),))
            if not purge_all:
                self._bump_generation(expired)
        self._last_flush = time.monotonic()
        return expired

    def _evict(self) -> set[int]:
        if self.max_entries is None:
            return set()
        (count,) = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
        if count <= self.max_entries:
            return set()
        victims = {
            r[0]
            for r in self._conn.execute(
                "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY last_used, id LIMIT ?) RETURNING id",
                (count - self.max_entries,),
            )
        }
        self._conn.execute("UPDATE meta SET value = value + ? WHERE key = 'evictions'", (len(victims),))
        return victims

    def _bump_generation(self, removed: set[int]) -> int:
        """Inside a write transaction: a new generation, logging ``removed`` for other processes."""
        gen = self._meta_int("generation") + 1
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (gen,))
        if removed:
            self._conn.executemany("INSERT INTO removed(gen, id) VALUES (?, ?)", [(gen, i) for i in removed])
        if gen % 256 == 0 and gen > _KEEP_REMOVED:
            floor = gen - _KEEP_REMOVED
            self._conn.execute("DELETE FROM removed WHERE gen <= ?", (floor,))
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'removed_floor'", (floor,))
        return gen

    def _apply_removed(self, removed: set[int]) -> None:
        if removed and self._vectors is not None:
            self._vectors.remove(list(removed))

    def _meta_int(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    # --- housekeeping -------------------------------------------------------------------------------
    def counts(self, now: float) -> StoreCounts:
        with self._lock:
            self._check_open()
            with transaction(self._conn):
                removed = self._flush(now)
            self._apply_removed(removed)
            with transaction(self._conn, write=False):
                (entries,) = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
                pending = 0
                if self.ttl is not None:
                    (pending,) = self._conn.execute(
                        "SELECT COUNT(*) FROM entries WHERE created <= ?", (now - self.ttl,)
                    ).fetchone()
                counters = {c: self._meta_int(c) for c in COUNTERS}
        return StoreCounts(int(entries), int(pending), counters, _disk_size(self.path))

    def clear(self) -> int:
        with self._lock:
            self._check_open()
            with transaction(self._conn):
                (n,) = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
                self._conn.execute("DELETE FROM entries")
                self._conn.execute("DELETE FROM removed")
                gen = self._meta_int("generation") + 1
                self._conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [(gen, "generation"), (gen, "removed_floor"), *((0, c) for c in COUNTERS)],
                )
            self._pending = _Pending.new()
            if self._vectors is not None or self.dim is not None:
                self._vectors = SyncedVectors(self.path / VECTORS_DIR, int(self.dim), lock_file=self.path / LOCK_FILE)
                self._known_gen = gen
                self._vectors.save()
            return int(n)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                with transaction(self._conn):
                    removed = self._flush(self._clock())
                self._apply_removed(removed)
                if self._vectors is not None and self._vectors.unsaved:
                    self._vectors.save()
            finally:
                self._conn.close()
                self._closed = True

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def _check_open(self) -> None:
        if self._closed:
            raise RagError(f"{self.path}: the semantic cache is closed")


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
