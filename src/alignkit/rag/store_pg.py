"""The RAG corpus index's server store: PostgreSQL with pgvector (``CorpusIndex.open("postgresql://...", emb)``).

The same index as the embedded one (:mod:`alignkit.rag.store`: incremental updates, moves, re-chunking, the
version hash), with the chunks and their vectors in one table, so each file's chunks and vectors are one transaction
and there is nothing to reconcile. Tables, under the URL's prefix (default ``alignkit_``, :mod:`alignkit.rag.pg`):

- ``{prefix}rag_meta`` (key, value): format, embedder, dim, chunking, cleaner;
- ``{prefix}rag_files`` (path, sha256, n_chunks, indexed_at);
- ``{prefix}rag_chunks`` (id bigserial, path, ordinal, heading, start_pos, end_pos, text, hash, embedding
  ``vector(dim)``) with an HNSW index (cosine distance): :meth:`PgCorpusIndex.search` is SQL.

Several servers may read one index; as with the embedded index, one ``rag index`` run writes at a time (an advisory
lock makes a second writer wait).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from alignkit.rag.documents import CLEANER_VERSION, Chunk
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError
from alignkit.rag.pg import connect, redact, split_url
from alignkit.rag.store_base import FORMAT, ChunkRow, CorpusBase, IndexInfo, _check_format, _sha, _version
from alignkit.rag.vectors import SearchResult

__all__ = ["PgCorpusIndex"]

_MAX_EF = 1000  # pgvector's largest hnsw.ef_search


def _tables(prefix: str) -> dict[str, str]:
    return {"M": f"{prefix}rag_meta", "F": f"{prefix}rag_files", "C": f"{prefix}rag_chunks", "p": prefix}


def _exists(conn, t: dict[str, str]) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (t["M"],)).fetchone()[0])


class PgCorpusIndex(CorpusBase):
    """The corpus index in PostgreSQL + pgvector (see the module doc); the same methods as
    :class:`~alignkit.rag.store.CorpusIndex`, which opens it for ``postgresql://`` URLs."""

    def __init__(self, url: str, embedder: EmbedderLike, conn, prefix: str):
        self.path, self.embedder, self._conn = redact(url), embedder, conn
        self._t = _tables(prefix)
        self._lock = threading.RLock()
        self._version: str | None = None

    def _sql(self, q: str) -> str:
        return q.format(**self._t)

    # --- opening ----------------------------------------------------------------------------------
    @classmethod
    def exists(cls, url: str) -> bool:
        _, prefix = split_url(url)
        with connect(url) as conn:
            return _exists(conn, _tables(prefix))

    @classmethod
    def info(cls, url: str) -> IndexInfo:
        _, prefix = split_url(url)
        t = _tables(prefix)
        with connect(url) as conn:
            if not _exists(conn, t):
                raise RagError(f"{redact(url)}: no RAG index here (build one with 'alignkit rag index --docs DIR --index URL')")
            meta = dict(conn.execute(f"SELECT key, value FROM {t['M']}").fetchall())
            _check_format(redact(url), meta)
            files = conn.execute(f'SELECT path, sha256 FROM {t["F"]} ORDER BY path COLLATE "C"').fetchall()
            (n_chunks,) = conn.execute(f"SELECT COUNT(*) FROM {t['C']}").fetchone()
        return IndexInfo(
            redact(url),
            meta["embedder"],
            int(meta["dim"]),
            int(meta["chunk_tokens"]),
            int(meta["overlap"]),
            len(files),
            int(n_chunks),
            _version(meta, [tuple(f) for f in files]),
        )

    @classmethod
    def open(cls, url: str, embedder: EmbedderLike, *, create: bool = False) -> PgCorpusIndex:
        _, prefix = split_url(url)
        t = _tables(prefix)
        where = redact(url)
        conn = connect(url)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"alignkit-rag:{prefix}",))
                if not _exists(conn, t):
                    if not create:
                        raise RagError(f"{where}: no RAG index here (build one with 'alignkit rag index --docs DIR --index URL')")
                    dim = int(embedder.dim)
                    conn.execute(f"CREATE TABLE {t['M']} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    conn.execute(
                        f"CREATE TABLE {t['F']} (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL, "
                        f"indexed_at DOUBLE PRECISION NOT NULL)"
                    )
                    conn.execute(
                        f"CREATE TABLE {t['C']} (id BIGSERIAL PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL, "
                        f"heading TEXT NOT NULL, start_pos INTEGER NOT NULL, end_pos INTEGER NOT NULL, text TEXT NOT NULL, "
                        f"hash TEXT NOT NULL, embedding vector({dim}) NOT NULL)"
                    )
                    conn.execute(f"CREATE INDEX {t['p']}rag_chunks_path ON {t['C']} (path)")
                    conn.execute(f"CREATE INDEX {t['p']}rag_chunks_hnsw ON {t['C']} USING hnsw (embedding vector_cosine_ops)")
                    conn.cursor().executemany(
                        f"INSERT INTO {t['M']} VALUES (%s, %s)",
                        [
                            ("format", FORMAT),
                            ("embedder", embedder.name),
                            ("dim", str(dim)),
                            ("chunk_tokens", "256"),
                            ("overlap", "32"),
                            ("cleaner", CLEANER_VERSION),
                            ("keep_code", "0"),
                        ],
                    )
                # a PDF chunk's pages (NULL for other formats; a table from before PDFs gets the columns here)
                conn.execute(
                    f"ALTER TABLE {t['C']} ADD COLUMN IF NOT EXISTS page_start INTEGER, ADD COLUMN IF NOT EXISTS page_end INTEGER"
                )
                meta = dict(conn.execute(f"SELECT key, value FROM {t['M']}").fetchall())
            _check_format(where, meta)
            if meta["embedder"] != embedder.name or int(meta["dim"]) != int(embedder.dim):
                raise RagError(
                    f"{where}: built with embedder {meta['embedder']} (dim {meta['dim']}), not {embedder.name} "
                    f"(dim {embedder.dim}): use --embedder {meta['embedder']} or index into a new database or prefix"
                )
        except BaseException:
            conn.close()
            raise
        return cls(url, embedder, conn, prefix)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _read_meta(self) -> dict[str, str]:
        return dict(self._conn.execute(self._sql("SELECT key, value FROM {M}")).fetchall())

    # --- properties -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        with self._lock:
            if self._version is None:
                files = self._conn.execute(self._sql('SELECT path, sha256 FROM {F} ORDER BY path COLLATE "C"')).fetchall()
                self._version = _version(self._read_meta(), [tuple(f) for f in files])
            return self._version

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute(self._sql("SELECT COUNT(*) FROM {C}")).fetchone()[0])

    def files(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute(self._sql("SELECT path, sha256 FROM {F}")).fetchall())

    def reconcile(self) -> tuple[int, int]:
        """Nothing to do: each chunk and its vector are one row. Returns (0, 0)."""
        return 0, 0

    # --- storage primitives -----------------------------------------------------------------------
    def _write(self):
        """A write transaction holding the index's advisory lock (one writer at a time)."""
        tx = self._conn.transaction()
        return _Locked(self._conn, tx, f"alignkit-rag:{self._t['p']}")

    def _mark_all_stale(self, settings: dict[str, str]) -> None:
        with self._write():
            self._conn.cursor().executemany(
                self._sql("INSERT INTO {M} VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"),
                list(settings.items()),
            )
            self._conn.execute(self._sql("UPDATE {F} SET sha256 = 'stale'"))

    def _move(self, old: str, rel: str) -> None:
        with self._write():
            self._conn.execute(self._sql("UPDATE {C} SET path = %s WHERE path = %s"), (rel, old))
            self._conn.execute(self._sql("UPDATE {F} SET path = %s WHERE path = %s"), (rel, old))

    def _save_vectors(self) -> None:
        pass  # committed with their chunks

    def _replace(self, rel: str, sha: str | None, chunks: list[Chunk], vectors: np.ndarray | None) -> int:
        with self._write():
            n_old = self._conn.execute(self._sql("DELETE FROM {C} WHERE path = %s"), (rel,)).rowcount
            self._conn.execute(self._sql("DELETE FROM {F} WHERE path = %s"), (rel,))
            if chunks:
                self._conn.cursor().executemany(
                    self._sql(
                        "INSERT INTO {C} (path, ordinal, heading, start_pos, end_pos, text, hash, embedding, page_start, page_end) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    ),
                    [
                        (rel, c.ordinal, c.heading, c.start, c.end, c.text, _sha(c.text, 16), np.asarray(v, np.float32))
                        + ((int(c.pages[0]), int(c.pages[1])) if c.pages else (None, None))
                        for c, v in zip(chunks, vectors)
                    ],
                )
            if sha is not None:
                self._conn.execute(self._sql("INSERT INTO {F} VALUES (%s, %s, %s, %s)"), (rel, sha, len(chunks), time.time()))
        return int(n_old)

    # --- reading ----------------------------------------------------------------------------------
    def rows(self, ids: Sequence[int]) -> list[ChunkRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self._lock:
            q = self._sql(
                "SELECT id, path, heading, start_pos, end_pos, text, hash, page_start, page_end FROM {C} WHERE id = ANY(%s)"
            )
            found = {
                int(r[0]): ChunkRow(int(r[0]), *r[1:7], (int(r[7]), int(r[8])) if r[7] is not None else None)
                for r in self._conn.execute(q, (ids,))
            }
        return [found[i] for i in ids if i in found]

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-``k`` chunk ids and cosine scores for each query vector (Q, dim), by pgvector's HNSW index."""
        q = np.asarray(queries, dtype=np.float32).reshape(-1, int(self.embedder.dim))
        ids = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if k <= 0:
            return SearchResult(ids, scores)
        with self._lock, self._conn.transaction():
            self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(k, _MAX_EF))}")
            sql = self._sql("SELECT id, embedding <=> %s AS d FROM {C} ORDER BY embedding <=> %s LIMIT %s")
            for r, vec in enumerate(q):
                for j, (id_, dist) in enumerate(self._conn.execute(sql, (vec, vec, min(k, _MAX_EF))).fetchall()):
                    ids[r, j], scores[r, j] = id_, 1.0 - dist
        return SearchResult(ids, scores)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        with self._lock:
            found = dict(self._conn.execute(self._sql("SELECT id, embedding FROM {C} WHERE id = ANY(%s)"), (ids,)).fetchall())
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:5]}")
        dim = int(self.embedder.dim)
        return np.stack([_array(found[i]) for i in ids]) if ids else np.zeros((0, dim), np.float32)

    def vector_ids(self) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute(self._sql("SELECT id FROM {C} ORDER BY id")).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)


def _array(v) -> np.ndarray:
    """A loaded pgvector value (a numpy array or a ``pgvector.Vector``) as float32."""
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


class _Locked:
    """``with``: a psycopg transaction that first takes a transaction-scoped advisory lock."""

    def __init__(self, conn, tx, key: str):
        self.conn, self.tx, self.key = conn, tx, key

    def __enter__(self):
        self.tx.__enter__()
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.key,))
        return self.conn

    def __exit__(self, *exc):
        return self.tx.__exit__(*exc)
