"""A persistent semantic cache: answer a question again when it comes back in other words.

``SemanticCache(path).get(question)`` returns a stored answer when a cached question is the same question:
the same words (after :func:`~alignkit.rag.match.normalise`: an exact repeat, no embedding needed), or an
embedding cosine similarity of at least ``threshold`` AND the second check of :mod:`alignkit.rag.match`
(numbers, names, negations, units, opposites, swapped words must agree). The check is what lets the
threshold be low enough to catch real paraphrases without serving "How do I reset my username?" the answer
to "How do I reset my password?" (the measured curves and the choice of the default are in docs/cache.md).

Storage, in directory ``path``:
  - ``cache.sqlite`` (WAL mode) is the source of truth: table ``entries`` (id, question, norm, answer,
    context, created, last_used, hits), ``meta`` (embedder, dimension, generation, counters) and
    ``removed`` (which ids each generation removed, so other processes can follow).
  - ``vectors/``: the :class:`~alignkit.rag.vectors.VectorIndex` of the question embeddings, keyed by row
    id, saved atomically every ``save_every`` changes and on :meth:`close`. It is derived data: on open it is
    reconciled with SQLite (rows missing from it are re-embedded, vectors without rows dropped), so a
    process killed at any point loses nothing that was committed.

Several processes may share a cache: every change to the set of entries bumps a generation counter in
SQLite; a process that sees a newer generation applies the ``removed`` log and embeds the rows added since
(or reconciles in full when it has fallen too far behind). Within a process, a lock makes the cache
thread-safe. Hit counts and last-use times are batched in memory and written with the next write, or by the
lookup that makes ``flush_every`` pending or comes ``flush_seconds`` after the last write, so a lookup is
usually a read, not a write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from alignkit.rag.embed import DEFAULT_EMBEDDER, EmbedderLike
from alignkit.rag.errors import RagError
from alignkit.rag.match import DEFAULT_THRESHOLD, CandidateCheck, RuleCheck, Verdict, normalise

__all__ = ["CacheStats", "Candidate", "DEFAULT_THRESHOLD", "SemanticCache"]

log = logging.getLogger(__name__)

DB_FILE, VECTORS_DIR, LOCK_FILE = "cache.sqlite", "vectors", "vectors.lock"
SCHEMA_VERSION = 1
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
_COUNTERS = ("hits", "misses", "evictions", "expired")


class Candidate(NamedTuple):
    """One cached question considered for a lookup (see :meth:`SemanticCache.explain`)."""

    id: int  # row id
    question: str  # the cached question
    answer: str
    score: float  # cosine similarity of the two questions' embeddings
    context_ok: bool  # the contexts match exactly
    expired: bool  # older than the TTL (never served)
    verdict: Verdict  # the second check (ok, reasons)
    hit: bool  # the one get() would return: first by score with score >= threshold, context ok, not expired, verdict ok


@dataclass(frozen=True)
class CacheStats:
    """What ``alignkit cache stats`` prints."""

    path: str
    entries: int  # rows stored (expired ones not yet purged included)
    expired_pending: int  # of those, past the TTL (purged at the next write)
    hits: int  # lookups answered, all processes (the last few of other processes may not be written yet)
    misses: int
    hit_rate: float  # hits / (hits + misses); 0 with no lookups
    evictions: int  # rows dropped by the LRU bound
    expired: int  # rows purged after their TTL
    threshold: float
    check: str
    embedder: str
    dim: int | None  # embedding size (None until the first embedding)
    ttl: float | None
    max_entries: int | None
    size_bytes: int  # SQLite files + vector index on disk

    def as_dict(self) -> dict:
        return asdict(self)


class SemanticCache:
    """A question -> answer cache that also answers paraphrases (see the module docstring).

    ``path``: the cache directory (created). ``embedder``: anything :class:`~alignkit.rag.embed.EmbedderLike`;
    None builds :class:`~alignkit.rag.embed.Embedder` lazily, on the first lookup that needs it, for the
    model the cache was built with (the default model for a new cache). Opening a cache with an embedder
    of another name is an error: its vectors would not be comparable. ``threshold``: the least cosine
    similarity for a semantic hit (default: ``check.default_threshold``, chosen on the dev split of
    data/cache_eval). ``ttl``: seconds an entry may be served after its put (None: forever).
    ``max_entries``: keep at most this many, evicting the least recently used. ``check``: the second check
    on candidates (default :class:`~alignkit.rag.match.RuleCheck`; :class:`~alignkit.rag.match.PlainCosine`
    turns it off). ``clock``: returns seconds (tests inject a fake one). ``create``: False makes a missing
    cache an error instead of creating it. ``top_k``: candidates checked per lookup (more are fetched when
    all of them pass the threshold but fail a check). ``save_every``: index changes between saves.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        embedder: EmbedderLike | None = None,
        threshold: float | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        *,
        check: CandidateCheck | None = None,
        clock: Callable[[], float] = time.time,
        create: bool = True,
        top_k: int = 8,
        save_every: int = 2000,
        flush_every: int = 256,
        flush_seconds: float = 5.0,
    ):
        self.path = Path(path)
        self.check: CandidateCheck = check if check is not None else RuleCheck()
        self.threshold = float(threshold if threshold is not None else self.check.default_threshold)
        if not -1.0 <= self.threshold <= 1.0:
            raise RagError(f"{self.path}: threshold must be a cosine similarity in [-1, 1], got {self.threshold}")
        if ttl is not None and ttl <= 0:
            raise RagError(f"{self.path}: ttl must be positive seconds (or None), got {ttl}")
        if max_entries is not None and max_entries < 1:
            raise RagError(f"{self.path}: max_entries must be at least 1 (or None), got {max_entries}")
        self.ttl, self.max_entries, self.top_k = ttl, max_entries, max(1, int(top_k))
        self.save_every, self.flush_every, self.flush_seconds = save_every, flush_every, flush_seconds
        self._clock = clock
        self._lock = threading.RLock()  # SQLite connection, vector index and pending counters
        self._embed_lock = threading.Lock()  # builds the default embedder once (its calls lock themselves)
        self._embedder = embedder
        self._index = None  # VectorIndex, loaded on first need
        self._known_gen = -1  # the generation the in-memory index reflects
        self._max_seen_id = 0  # rows up to this id are reflected in the index (or known removed)
        self._unsaved = 0  # index changes since the last save
        self._pending_touch: dict[int, tuple[float, int]] = {}  # id -> (last_used, extra hits)
        self._pending_counts = {"hits": 0, "misses": 0}
        self._pending_expired: set[int] = set()
        self._last_flush = time.monotonic()
        self._closed = False
        self._conn = self._open_db(create)
        self.embedder_name, self.dim = self._check_meta(embedder)

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
            conn = sqlite3.connect(str(db), timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
            conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
        except sqlite3.DatabaseError as err:
            raise RagError(f"{db}: not a semantic cache database ({err})") from err
        return conn

    def _check_meta(self, embedder: EmbedderLike | None) -> tuple[str, int | None]:
        name = getattr(embedder, "name", None) if embedder is not None else None
        dim = int(embedder.dim) if embedder is not None else None
        with self._lock, _transaction(self._conn, write=True):
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("schema") not in (None, SCHEMA_VERSION):
                raise RagError(f"{self.path}: cache schema {meta['schema']}, this alignkit reads {SCHEMA_VERSION}")
            stored = meta.get("embedder")
            if stored is None:
                stored = name or DEFAULT_EMBEDDER
                defaults = {
                    "schema": SCHEMA_VERSION,
                    "embedder": stored,
                    "generation": 0,
                    "removed_floor": 0,
                    **{c: 0 for c in _COUNTERS},
                }
                self._conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", list(defaults.items()))
            elif name is not None and name != stored:
                raise RagError(
                    f"{self.path}: cache was built with embedder {stored!r}, opened with {name!r} "
                    f"(use that embedder, or clear the cache)"
                )
            stored_dim = meta.get("dim")
            if stored_dim is not None and dim is not None and int(stored_dim) != dim:
                raise RagError(f"{self.path}: cache vectors have dimension {stored_dim}, the embedder {dim}")
            if stored_dim is None and dim is not None:
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dim', ?)", (dim,))
        return stored, (int(stored_dim) if stored_dim is not None else dim)

    @property
    def embedder(self) -> EmbedderLike:
        """The embedder, built on first use when none was given."""
        if self._embedder is None:
            with self._embed_lock:
                if self._embedder is None:
                    from alignkit.rag.embed import Embedder

                    self._embedder = Embedder(self.embedder_name)
        return self._embedder

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.embedder
        vecs = np.ascontiguousarray(emb.encode(list(texts)), dtype=np.float32)
        if vecs.shape != (len(texts), int(emb.dim)):
            raise RagError(f"{self.path}: embedder {self.embedder_name!r} returned shape {vecs.shape} for {len(texts)} texts")
        if self.dim is None:
            with self._lock, _transaction(self._conn, write=True):
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dim', ?)", (int(emb.dim),))
            self.dim = int(emb.dim)
        return vecs

    # --- the vector index: load, reconcile, follow other processes ----------------------------------
    def _new_index(self):
        from alignkit.rag.vectors import VectorIndex

        return VectorIndex(self.dim)

    def _load_index(self):
        from alignkit.rag.vectors import VectorIndex

        vdir = self.path / VECTORS_DIR
        with _file_lock(self.path / LOCK_FILE, shared=True):
            try:
                index = VectorIndex.load(vdir)  # finds the old copy a save cut short left aside
            except FileNotFoundError:
                return None
            except Exception as err:  # a damaged copy is rebuilt from SQLite, not fatal
                log.warning("%s: cannot read the vector index (%s); rebuilding it from the database", vdir, err)
                return None
        if index.dim == self.dim:
            return index
        log.warning("%s: vector index has dimension %d, expected %d; rebuilding it", vdir, index.dim, self.dim)
        return None

    def _ensure_index(self) -> None:
        """Load the vector index (first use) and bring it up to date with SQLite. Holds the lock."""
        if self._index is None:
            if self.dim is None:  # nothing was ever embedded: learn the dimension from the embedder
                self.dim = int(self.embedder.dim)
            self._index = self._load_index() or self._new_index()
            self._reconcile()
            if self._unsaved:
                self._save_index()
        else:
            self._follow()

    def _reconcile(self) -> None:
        """Make the index hold exactly SQLite's rows: embed the missing ones, drop the extra vectors."""
        with _transaction(self._conn):
            gen = self._meta_int("generation")
            rows = self._conn.execute("SELECT id FROM entries").fetchall()
        in_db = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        in_index = self._index.ids()
        extra = np.setdiff1d(in_index, in_db, assume_unique=True)
        missing = np.setdiff1d(in_db, in_index, assume_unique=True)
        if len(extra):
            self._index.remove(extra)
            self._unsaved += len(extra)
        if len(missing):
            log.info("%s: embedding %d cached questions missing from the vector index", self.path, len(missing))
            self._embed_rows(missing.tolist())
        self._known_gen = gen
        self._max_seen_id = int(in_db.max()) if len(in_db) else self._max_seen_id

    def _embed_rows(self, ids: list[int], batch: int = 512) -> None:
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT id, question FROM entries WHERE id IN ({marks})", chunk).fetchall()
            rows = [r for r in rows if r[0] not in self._index]
            if rows:
                self._index.add([r[0] for r in rows], self._embed([r[1] for r in rows]))
                self._unsaved += len(rows)

    def _follow(self) -> None:
        """Apply the changes other processes made since the generation the index reflects."""
        if self._meta_int("generation") == self._known_gen:
            return
        with _transaction(self._conn):
            gen, floor = self._meta_int("generation"), self._meta_int("removed_floor")
            if self._known_gen < floor:
                removed, new = None, None
            else:
                removed = [r[0] for r in self._conn.execute("SELECT id FROM removed WHERE gen > ?", (self._known_gen,))]
                new = [r[0] for r in self._conn.execute("SELECT id FROM entries WHERE id > ?", (self._max_seen_id,))]
        if removed is None:  # fell behind the removed log (or the cache was cleared): reconcile in full
            self._reconcile()
            return
        if removed:
            self._unsaved += self._index.remove(removed)
        fresh = [i for i in new if i not in self._index]
        if fresh:
            self._embed_rows(fresh)
        self._known_gen = gen
        self._max_seen_id = max([self._max_seen_id, *new])

    def _save_index(self) -> None:
        if self._index is None:
            return
        with _file_lock(self.path / LOCK_FILE, shared=False):
            self._index.save(self.path / VECTORS_DIR)
        self._unsaved = 0

    def _search(self, vec: np.ndarray, k: int):
        """Top-``k`` of the index for one query (vec: (dim,))."""
        return self._index.search(vec.reshape(1, -1), k)

    # --- lookups ------------------------------------------------------------------------------------
    def get(self, question: str, context: str | None = None) -> str | None:
        """The cached answer to ``question`` (same ``context``), or None. See :meth:`explain` for why."""
        self._check_open()
        ctx = _context(context, self.path)
        now = self._clock()
        with self._lock:
            self._check_open()
            row = self._exact(question, ctx, now)
            if row is not None:
                self._record(row[0], now)
                return row[1]
        vec = self._embed([question])[0]
        with self._lock:
            self._check_open()
            self._ensure_index()
            for cand in self._candidates(question, vec, ctx, now, first_hit=True):
                if cand.hit:
                    self._record(cand.id, now)
                    return cand.answer
            self._record(None, now)
            return None

    def explain(self, question: str, context: str | None = None, k: int | None = None) -> list[Candidate]:
        """The ``k`` nearest cached questions (default ``top_k``) with their score, context, expiry and the second
        check's verdict, best first; the one :meth:`get` would serve has ``hit=True``. Counts nothing."""
        self._check_open()
        ctx = _context(context, self.path)
        now = self._clock()
        vec = self._embed([question])[0]
        with self._lock:
            self._check_open()
            self._ensure_index()
            return self._candidates(question, vec, ctx, now, first_hit=False, k=k or self.top_k)

    def _exact(self, question: str, ctx: str, now: float) -> tuple[int, str] | None:
        row = self._conn.execute(
            "SELECT id, answer, created FROM entries WHERE norm = ? AND context = ?", (normalise(question), ctx)
        ).fetchone()
        if row is None:
            return None
        if self._is_expired(row[2], now):
            self._pending_expired.add(row[0])
            return None
        return row[0], row[1]

    def _is_expired(self, created: float, now: float) -> bool:
        return self.ttl is not None and now - created >= self.ttl

    def _candidates(
        self, question: str, vec: np.ndarray, ctx: str, now: float, *, first_hit: bool, k: int | None = None
    ) -> list[Candidate]:
        """Candidates best first. With ``first_hit`` stop at the first hit, and fetch more than ``top_k`` when
        all of them clear the threshold but none is served (other contexts, failed checks)."""
        k = k or self.top_k
        out: list[Candidate] = []
        seen: set[int] = set()
        hit_found = False
        while True:
            res = self._search(vec, k)
            ids = [int(i) for i in res.ids[0] if i >= 0 and int(i) not in seen]
            scores = {int(i): float(s) for i, s in zip(res.ids[0], res.scores[0]) if i >= 0}
            rows = self._rows(ids)
            for id_ in ids:
                seen.add(id_)
                row = rows.get(id_)
                if row is None:  # removed by another process since our last follow
                    continue
                question_c, answer, context_c, created = row
                score = scores[id_]
                expired = self._is_expired(created, now)
                if expired:
                    self._pending_expired.add(id_)
                context_ok = context_c == ctx
                above = score >= self.threshold
                verdict = (
                    self.check(question, question_c)
                    if (above and context_ok and not expired) or not first_hit
                    else Verdict(False, ("not checked",))
                )
                hit = not hit_found and above and context_ok and not expired and verdict.ok
                hit_found |= hit
                out.append(Candidate(id_, question_c, answer, score, context_ok, expired, verdict, hit))
                if hit and first_hit:
                    return out
            below = len(res.ids[0]) == 0 or res.ids[0][-1] < 0 or float(res.scores[0][-1]) < self.threshold
            if not first_hit or below or k >= min(len(self._index), 1024):
                return out
            k *= 4

    def _rows(self, ids: list[int]) -> dict[int, tuple[str, str, str, float]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        q = f"SELECT id, question, answer, context, created FROM entries WHERE id IN ({marks})"
        return {r[0]: r[1:] for r in self._conn.execute(q, ids)}

    def _record(self, hit_id: int | None, now: float) -> None:
        if hit_id is None:
            self._pending_counts["misses"] += 1
        else:
            self._pending_counts["hits"] += 1
            _, n = self._pending_touch.get(hit_id, (now, 0))
            self._pending_touch[hit_id] = (now, n + 1)
        pending = sum(self._pending_counts.values()) + len(self._pending_expired)
        if pending >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            with _transaction(self._conn, write=True):
                removed = self._flush(now)
            self._apply_removed(removed)

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
        now = self._clock()
        with self._lock:
            self._check_open()
            self._ensure_index()
            ids: list[int] = []
            new: list[tuple[int, int]] = []  # (row id, position in keys)
            with _transaction(self._conn, write=True):
                gen_before = self._meta_int("generation")
                removed = self._flush(now, purge_all=True)
                for pos, (norm, ctx) in enumerate(keys):
                    question, answer = batch[(norm, ctx)]
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
                evicted = self._evict()
                removed |= evicted
                gen = gen_before
                if new or removed:
                    gen = self._bump_generation(removed)
            self._apply_removed(removed)
            survivors = [(i, p) for i, p in new if i not in removed and i not in self._index]
            if survivors:
                self._index.add([i for i, _ in survivors], vecs[[p for _, p in survivors]])
                self._unsaved += len(survivors)
            if gen_before == self._known_gen:  # nobody else wrote in between: our index is current
                self._known_gen = gen
                self._max_seen_id = max([self._max_seen_id, *(i for i, _ in new)])
            if self._unsaved >= self.save_every:
                self._save_index()
            return ids

    def _flush(self, now: float, *, purge_all: bool = False) -> set[int]:
        """Write the batched hit counts and last-use times, purge expired rows (those met in lookups, or all
        with ``purge_all``). Runs inside a write transaction; returns the ids purged."""
        for id_, (last_used, n) in self._pending_touch.items():
            self._conn.execute(
                "UPDATE entries SET last_used = max(last_used, ?), hits = hits + ? WHERE id = ?", (last_used, n, id_)
            )
        for name, n in self._pending_counts.items():
            if n:
                self._conn.execute("UPDATE meta SET value = value + ? WHERE key = ?", (n, name))
        self._pending_touch.clear()
        self._pending_counts = {"hits": 0, "misses": 0}
        expired: set[int] = set()
        if self.ttl is not None:
            cutoff = now - self.ttl
            if purge_all:
                expired = {r[0] for r in self._conn.execute("DELETE FROM entries WHERE created <= ? RETURNING id", (cutoff,))}
            elif self._pending_expired:
                marks = ",".join("?" * len(self._pending_expired))
                expired = {
                    r[0]
                    for r in self._conn.execute(
                        f"DELETE FROM entries WHERE id IN ({marks}) AND created <= ? RETURNING id",
                        (*self._pending_expired, cutoff),
                    )
                }
        self._pending_expired.clear()
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
        if removed and self._index is not None:
            self._unsaved += self._index.remove(list(removed))

    def _meta_int(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    # --- housekeeping -------------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Counts and settings (writes this process's batched counters first)."""
        now = self._clock()
        with self._lock:
            self._check_open()
            with _transaction(self._conn, write=True):
                removed = self._flush(now)
            self._apply_removed(removed)
            with _transaction(self._conn):
                (entries,) = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
                pending = 0
                if self.ttl is not None:
                    (pending,) = self._conn.execute(
                        "SELECT COUNT(*) FROM entries WHERE created <= ?", (now - self.ttl,)
                    ).fetchone()
                counts = {c: self._meta_int(c) for c in _COUNTERS}
        lookups = counts["hits"] + counts["misses"]
        return CacheStats(
            path=str(self.path),
            entries=int(entries),
            expired_pending=int(pending),
            hits=counts["hits"],
            misses=counts["misses"],
            hit_rate=counts["hits"] / lookups if lookups else 0.0,
            evictions=counts["evictions"],
            expired=counts["expired"],
            threshold=self.threshold,
            check=self.check.name,
            embedder=self.embedder_name,
            dim=self.dim,
            ttl=self.ttl,
            max_entries=self.max_entries,
            size_bytes=_disk_size(self.path),
        )

    def clear(self) -> int:
        """Remove every entry and reset the counters; returns how many entries there were."""
        with self._lock:
            self._check_open()
            with _transaction(self._conn, write=True):
                (n,) = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
                self._conn.execute("DELETE FROM entries")
                self._conn.execute("DELETE FROM removed")
                gen = self._meta_int("generation") + 1
                self._conn.executemany(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    [(gen, "generation"), (gen, "removed_floor"), *((0, c) for c in _COUNTERS)],
                )
            self._pending_touch.clear()
            self._pending_counts = {"hits": 0, "misses": 0}
            self._pending_expired.clear()
            if self._index is not None or self.dim is not None:
                self._index = self._new_index()
                self._known_gen = gen
                self._save_index()
            return int(n)

    def close(self) -> None:
        """Write batched counters and the vector index if it changed, and close the database."""
        with self._lock:
            if self._closed:
                return
            try:
                with _transaction(self._conn, write=True):
                    removed = self._flush(self._clock())
                self._apply_removed(removed)
                if self._unsaved:
                    self._save_index()
            finally:
                self._conn.close()
                self._closed = True

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def _check_open(self) -> None:
        if self._closed:
            raise RagError(f"{self.path}: the semantic cache is closed")


# --- helpers ---------------------------------------------------------------------------------------
def _context(context: str | None, path: Path) -> str:
    if context is None:
        return ""
    if not isinstance(context, str):
        raise RagError(f"{path}: context must be a string (or None), got {type(context).__name__}")
    return context


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, *, write: bool = False) -> Iterator[None]:
    """One SQLite transaction: ``BEGIN IMMEDIATE`` for writes (takes the write lock at once, so two writers
    queue instead of deadlocking), a deferred one for consistent reads."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        if conn.in_transaction:
            conn.execute("COMMIT")


@contextlib.contextmanager
def _file_lock(path: Path, *, shared: bool) -> Iterator[None]:
    """An advisory lock between processes around saving / loading the vector index (POSIX; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: saves are still atomic, a load may retry
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
