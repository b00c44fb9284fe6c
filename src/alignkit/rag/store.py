"""The persistent corpus index: chunk texts and metadata in SQLite, their vectors in a :class:`VectorIndex`.

Directory layout::

    INDEX/chunks.sqlite   meta (embedder, dim, chunking), files (path, sha256), chunks (id, path, heading,
                          start, end, text, hash, embedding: float32 bytes, page_start, page_end: a PDF
                          chunk's pages, NULL otherwise) -- WAL journal
    INDEX/vectors/        the VectorIndex (faiss HNSW), keyed by chunk id

Crash safety. Each file is one SQLite transaction (its old chunks deleted, its new chunks and its file row
written, together or not at all); the vector index lives in memory while indexing and is saved atomically
(a temporary directory, then a rename) at the end, also when indexing stops on an error or Ctrl-C. Each chunk's
embedding is also stored in its SQLite row, in the same transaction as the chunk. A process killed in between
leaves SQLite ahead of the saved vectors, so :meth:`CorpusIndex.open` *reconciles*: chunks in SQLite without a
vector get theirs back from their row (embedded again only when the row has none, as in an index written
before embeddings were stored), vectors without a SQLite row are removed, and the vector index is saved. So a
re-run after a kill embeds only the files not committed before it. SQLite is the source of truth; the vectors
can always be rebuilt from it. Chunk ids come from ``AUTOINCREMENT`` and are never reused, so a stale vector can never be
mistaken for a new chunk. One writer at a time: two ``rag index`` runs on one directory are not supported.

Incremental updates. A file is keyed by its path relative to the docs root and its content's sha256: an
unchanged file is skipped, a changed one has its chunks replaced, a file found under a new path with the
bytes of one no longer found is moved (its chunks and vectors kept), and a file indexed before but no
longer among the docs has its chunks removed (the index mirrors the docs it was last given). Changing the chunk size,
the overlap or the cleaner re-chunks every file. :attr:`CorpusIndex.version` hashes the embedder, the
chunking and every (path, sha256): it changes whenever the corpus does, and goes into the semantic cache's
context key so a cached answer is never served for a changed corpus.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alignkit.rag.documents import CLEANER_VERSION, Chunk
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError
from alignkit.rag.pg import is_postgres_url
from alignkit.rag.sqlite_vectors import SyncedVectors, chunked, connect, transaction
from alignkit.rag.store_base import (  # noqa: F401 - re-exported: the index's public types live here too
    FORMAT,
    ChunkRow,
    CorpusBase,
    IndexInfo,
    IndexReport,
    _check_format,
    _sha,
    _version,
    discover,
)
from alignkit.rag.vectors import SearchResult

DB_FILE, VECTORS_DIR = "chunks.sqlite", "vectors"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL,
                                  indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, ordinal INTEGER NOT NULL,
                                   heading TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                                   text TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks (path);
"""


class CorpusIndex(CorpusBase):
    """Chunks of a document corpus with their vectors, persisted in one directory (see the module doc).

    Open with :meth:`open`; add documents with :meth:`update`; read with :meth:`search`, :meth:`rows` and
    :meth:`vectors`. Reads are safe from several threads; writes are not.
    """

    def __init__(self, path: Path, embedder: EmbedderLike, db: sqlite3.Connection, vectors: SyncedVectors):
        self.path, self.embedder, self._db, self._synced = path, embedder, db, vectors
        self._lock = threading.RLock()
        self._version: str | None = None

    @property
    def _vectors(self):
        """The :class:`~alignkit.rag.vectors.VectorIndex` of the chunk vectors."""
        return self._synced.index

    # --- opening ----------------------------------------------------------------------------------
    @staticmethod
    def _connect(db_path: Path) -> sqlite3.Connection:
        return connect(db_path)

    @staticmethod
    def _meta(db: sqlite3.Connection) -> dict[str, str]:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())

    @classmethod
    def exists(cls, path: str | os.PathLike) -> bool:
        """Whether ``path`` holds an index (a directory, or a ``postgresql://`` URL)."""
        if is_postgres_url(path):
            from alignkit.rag.store_pg import PgCorpusIndex

            return PgCorpusIndex.exists(str(path))
        return (Path(path) / DB_FILE).is_file()

    @classmethod
    def info(cls, path: str | os.PathLike) -> IndexInfo:
        """What the index at ``path`` records; a RagError when there is none."""
        if is_postgres_url(path):
            from alignkit.rag.store_pg import PgCorpusIndex

            return PgCorpusIndex.info(str(path))
        path = Path(path)
        if not cls.exists(path):
            raise RagError(f"{path}: no RAG index here (build one with 'alignkit rag index --docs DIR --index {path}')")
        db = cls._connect(path / DB_FILE)
        try:
            meta = cls._meta(db)
            _check_format(path, meta)
            files = db.execute("SELECT path, sha256 FROM files ORDER BY path").fetchall()
            n_chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        finally:
            db.close()
        return IndexInfo(
            str(path),
            meta["embedder"],
            int(meta["dim"]),
            int(meta["chunk_tokens"]),
            int(meta["overlap"]),
            len(files),
            n_chunks,
            _version(meta, files),
        )

    @classmethod
    def open(cls, path: str | os.PathLike, embedder: EmbedderLike, *, create: bool = False) -> CorpusIndex:
        """Open the index at ``path`` (``create``: make an empty one when there is none), check it was built with
        ``embedder`` (another name or dimension is a RagError) and reconcile SQLite with the vectors. A
        ``postgresql://`` URL opens the server store (:class:`~alignkit.rag.store_pg.PgCorpusIndex`) instead."""
        if is_postgres_url(path):
            from alignkit.rag.store_pg import PgCorpusIndex

            return PgCorpusIndex.open(str(path), embedder, create=create)
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RagError(f"{path}: a file, not an index directory")
        if not cls.exists(path):
            if not create:
                cls.info(path)  # raises the "no RAG index here" error
            path.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path / DB_FILE)
        try:
            db.executescript(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(chunks)")}
            if "embedding" not in columns:  # an index from before
                db.execute("ALTER TABLE chunks ADD COLUMN embedding BLOB")  # NULL: embedded again if its vector is lost
            if "page_start" not in columns:  # an index from before PDFs: it held no PDF, so NULL is right
                db.execute("ALTER TABLE chunks ADD COLUMN page_start INTEGER")
                db.execute("ALTER TABLE chunks ADD COLUMN page_end INTEGER")
            meta = cls._meta(db)
            if not meta:
                with transaction(db):
                    db.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [
                            ("format", FORMAT),
                            ("embedder", embedder.name),
                            ("dim", str(embedder.dim)),
                            ("chunk_tokens", "256"),
                            ("overlap", "32"),
                            ("cleaner", CLEANER_VERSION),
                            ("keep_code", "0"),
                        ],
                    )
                meta = cls._meta(db)
            _check_format(path, meta)
            if meta["embedder"] != embedder.name or int(meta["dim"]) != int(embedder.dim):
                raise RagError(
                    f"{path}: built with embedder {meta['embedder']} (dim {meta['dim']}), not {embedder.name} "
                    f"(dim {embedder.dim}): use --embedder {meta['embedder']} or index into a new directory"
                )
        except BaseException:
            db.close()
            raise
        vectors = SyncedVectors.load(path / VECTORS_DIR, embedder.dim)  # none yet, or damaged: empty, rebuilt below
        self = cls(path, embedder, db, vectors)
        self.reconcile()
        return self

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CorpusIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_meta(self) -> dict[str, str]:
        return self._meta(self._db)

    # --- properties -------------------------------------------------------------------------------
    @property
    def embedder_name(self) -> str:
        return self.embedder.name

    @property
    def version(self) -> str:
        """16 hex digits over the embedder, the chunking and every file's (path, sha256)."""
        with self._lock:
            if self._version is None:
                files = self._db.execute("SELECT path, sha256 FROM files ORDER BY path").fetchall()
                self._version = _version(self._read_meta(), files)
            return self._version

    def __len__(self) -> int:
        return len(self._vectors)

    def files(self) -> dict[str, str]:
        """Indexed files: relative path -> sha256."""
        with self._lock:
            return dict(self._db.execute("SELECT path, sha256 FROM files").fetchall())

    # --- consistency ------------------------------------------------------------------------------
    def reconcile(self) -> tuple[int, int]:
        """Make the vectors match SQLite: a chunk with no vector gets the embedding stored in its row (is embedded,
        and the embedding stored, when the row has none), vectors with no chunk are dropped; save if anything
        changed. Returns (embedded, dropped): chunks the embedder had to encode, vectors removed."""
        with self._lock:
            sql_ids = np.array([r[0] for r in self._db.execute("SELECT id FROM chunks")], dtype=np.int64)
            embedded = 0

            def vectors_for(part: list[int]) -> tuple[list[int], np.ndarray]:
                nonlocal embedded
                stored = self._stored_embeddings(part)  # committed with the chunk: no need to embed it again
                rows = self.rows([i for i in part if i not in stored])
                ids, vecs = list(stored), list(stored.values())
                if rows:
                    vectors = self.embedder.encode([r.embed_text() for r in rows])  # (n, dim)
                    self._store_embeddings([r.id for r in rows], vectors)
                    ids += [r.id for r in rows]
                    vecs += list(np.asarray(vectors, dtype=np.float32))
                    embedded += len(rows)
                return ids, (np.stack(vecs) if vecs else np.zeros((0, int(self.embedder.dim)), np.float32))

            _, dropped = self._synced.reconcile(sql_ids, vectors_for)
            if self._synced.unsaved:
                self._synced.save()
            return embedded, dropped

    def _stored_embeddings(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The embeddings stored with chunks ``ids`` (those with none, or of another size, left out)."""
        out: dict[int, np.ndarray] = {}
        dim = int(self.embedder.dim)
        for part in chunked(ids):
            q = f"SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL AND id IN ({','.join('?' * len(part))})"
            for id_, blob in self._db.execute(q, part):
                if len(blob) == 4 * dim:
                    out[int(id_)] = np.frombuffer(blob, dtype=np.float32)
        return out

    def _store_embeddings(self, ids: list[int], vectors: np.ndarray) -> None:
        with transaction(self._db):
            self._db.executemany(
                "UPDATE chunks SET embedding = ? WHERE id = ?", [(_blob(v), int(i)) for i, v in zip(ids, vectors)]
            )

    # --- storage primitives (the PostgreSQL store overrides these) ----------------------------------
    def _mark_all_stale(self, settings: dict[str, str]) -> None:
        """One transaction: record the new chunking ``settings`` and mark every file stale (re-chunked by the update)."""
        with transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(settings.items()))
            self._db.execute("UPDATE files SET sha256 = 'stale'")

    def _move(self, old: str, rel: str) -> None:
        """One transaction: file ``old``'s chunks and file row now belong to path ``rel``."""
        with transaction(self._db):
            self._db.execute("UPDATE chunks SET path = ? WHERE path = ?", (rel, old))
            self._db.execute("UPDATE files SET path = ? WHERE path = ?", (rel, old))

    def _save_vectors(self) -> None:
        self._synced.save()

    def _replace(self, rel: str, sha: str | None, chunks: list[Chunk], vectors: np.ndarray | None) -> int:
        """One transaction: drop ``rel``'s chunks, insert ``chunks`` (and its file row when ``sha``); then the same
        in the vector index. Returns how many old chunks were dropped."""
        with transaction(self._db):
            old = [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE path = ?", (rel,))]
            self._db.execute("DELETE FROM chunks WHERE path = ?", (rel,))
            self._db.execute("DELETE FROM files WHERE path = ?", (rel,))
            new = []
            for i, c in enumerate(chunks):
                cur = self._db.execute(
                    "INSERT INTO chunks (path, ordinal, heading, start, end, text, hash, embedding, page_start, page_end) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rel, c.ordinal, c.heading, c.start, c.end, c.text, _sha(c.text, 16), _blob(vectors[i]), *_pages(c.pages)),
                )
                new.append(cur.lastrowid)
            if sha is not None:
                self._db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (rel, sha, len(chunks), time.time()))
        self._vectors.remove(old)
        if chunks:
            self._vectors.add(new, vectors)
        return len(old)

    # --- reading ----------------------------------------------------------------------------------
    def rows(self, ids: Sequence[int]) -> list[ChunkRow]:
        """The stored chunks of ``ids``, in the order given (ids not stored are left out)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        with self._lock:
            found: dict[int, ChunkRow] = {}
            for part in chunked(ids):  # SQLite's bound-parameter limit
                q = (
                    "SELECT id, path, heading, start, end, text, hash, page_start, page_end FROM chunks "
                    f"WHERE id IN ({','.join('?' * len(part))})"
                )
                for r in self._db.execute(q, part):
                    found[r[0]] = ChunkRow(*r[:7], (r[7], r[8]) if r[7] is not None else None)
        return [found[i] for i in ids if i in found]

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-``k`` chunk ids and cosine scores for each query vector (Q, dim)."""
        with self._lock:
            return self._vectors.search(queries, k)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """(N, dim) the stored vectors of ``ids``."""
        with self._lock:
            return self._vectors.vectors(np.asarray(list(ids), dtype=np.int64))

    def vector_ids(self) -> np.ndarray:
        """(n,) int64 ids that have a vector."""
        with self._lock:
            return self._vectors.ids()


def _pages(pages: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """A chunk's page span as the (page_start, page_end) columns."""
    return (int(pages[0]), int(pages[1])) if pages else (None, None)


def _blob(vector: np.ndarray) -> bytes:
    """A (dim,) vector as the float32 bytes stored in a chunk's row."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
