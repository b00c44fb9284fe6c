"""The persistent corpus index: chunk texts and metadata in SQLite, their vectors in a :class:`VectorIndex`.

Directory layout::

    INDEX/chunks.sqlite   meta (embedder, dim, chunking), files (path, sha256), chunks (id, path, heading,
                          start, end, text, hash, embedding: float32 bytes) -- WAL journal
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

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignkit.rag.documents import (
    CLEANER_VERSION,
    SUFFIXES,
    Chunk,
    chunk_document,
    decode_document,
    embed_text,
    word_counter,
)
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError
from alignkit.rag.pg import is_postgres_url
from alignkit.rag.sqlite_vectors import SyncedVectors, chunked, connect, transaction
from alignkit.rag.vectors import SearchResult

DB_FILE, VECTORS_DIR = "chunks.sqlite", "vectors"
FORMAT = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, n_chunks INTEGER NOT NULL,
                                  indexed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, ordinal INTEGER NOT NULL,
                                   heading TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                                   text TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks (path);
"""


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk."""

    id: int  # chunk id (also its vector's id)
    source: str  # file path relative to the docs root
    heading: str  # heading path, "A > B > C"
    start: int  # char offsets in the file's cleaned text
    end: int
    text: str
    hash: str  # sha256 of the text, first 16 hex digits

    def embed_text(self) -> str:
        return embed_text(self.heading, self.text)


@dataclass(frozen=True)
class IndexInfo:
    """What an index directory records (readable without loading an embedder)."""

    path: str
    embedder: str  # the embedder name the vectors were made with
    dim: int
    chunk_tokens: int
    overlap: int
    files: int
    chunks: int
    version: str  # 16 hex digits; changes whenever the corpus, the embedder or the chunking does


@dataclass
class IndexReport:
    """What one :meth:`CorpusIndex.update` did."""

    added: list[str] = field(default_factory=list)  # new files indexed
    changed: list[str] = field(default_factory=list)  # files whose content changed: chunks replaced
    unchanged: int = 0  # files skipped because their sha256 matched
    removed: list[str] = field(default_factory=list)  # files no longer among the docs: chunks removed
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old, new) path: same bytes, chunks kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): empty, not UTF-8, unsupported
    chunks_added: int = 0
    chunks_removed: int = 0
    rechunked: bool = False  # the chunking settings or the cleaner changed: every file was re-chunked
    seconds: float = 0.0


def discover(docs: Sequence[str | os.PathLike]) -> tuple[Path, list[tuple[Path, str]]]:
    """The files named by ``docs`` (files, or directories searched recursively for :data:`SUFFIXES`, hidden
    entries skipped) as (absolute path, path relative to the root), sorted; the root is the directories' and
    files' common parent (a single directory is its own root). A path that does not exist is a RagError."""
    if not docs:
        raise RagError("--docs: give at least one file or directory")
    found: dict[Path, None] = {}
    bases: list[Path] = []
    for d in docs:
        p = Path(d).expanduser().resolve()
        if not p.exists():
            raise RagError(f"{d}: no such file or directory")
        if p.is_dir():
            bases.append(p)
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.is_file() and f.suffix.lower() in SUFFIXES and not any(part.startswith(".") for part in rel):
                    found[f] = None
        else:
            bases.append(p.parent)
            found[p] = None
    root = Path(os.path.commonpath([str(b) for b in bases])) if bases else Path.cwd()
    return root, sorted(((f, f.relative_to(root).as_posix()) for f in found), key=lambda t: t[1])


def _sha(data: bytes | str, n: int | None = None) -> str:
    h = hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
    return h[:n] if n else h


def _check_format(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT or "embedder" not in meta:
        raise RagError(
            f"{path}: index format {meta.get('format')!r}, this alignkit reads {FORMAT!r}: re-index into a new directory"
        )


class CorpusIndex:
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
            if "embedding" not in {r[1] for r in db.execute("PRAGMA table_info(chunks)")}:  # an index from before
                db.execute("ALTER TABLE chunks ADD COLUMN embedding BLOB")  # NULL: embedded again if its vector is lost
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
                self._version = _version(self._meta(self._db), files)
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

    # --- writing ----------------------------------------------------------------------------------
    def update(
        self,
        docs: Sequence[str | os.PathLike],
        *,
        chunk_tokens: int = 256,
        overlap: int = 32,
        keep_code: bool = False,
        progress: bool = False,
    ) -> IndexReport:
        """Bring the index in line with ``docs`` (files and directories): index new and changed files, remove
        the chunks of files no longer among them, skip unchanged ones. See the module doc for crash safety."""
        started = time.perf_counter()
        max_tokens = getattr(self.embedder, "max_tokens", None)
        if max_tokens is not None and chunk_tokens > max_tokens:
            raise RagError(f"--chunk-tokens {chunk_tokens}: the embedder {self.embedder.name} reads at most {max_tokens} tokens")
        if chunk_tokens < 8:
            raise RagError(f"--chunk-tokens must be >= 8, got {chunk_tokens}")
        if not 0 <= overlap < chunk_tokens:
            raise RagError(f"--overlap must be >= 0 and below --chunk-tokens ({chunk_tokens}), got {overlap}")
        _, found = discover(docs)
        report = IndexReport()
        count = word_counter(self.embedder)
        with self._lock:
            meta = self._meta(self._db)
            settings = {
                "chunk_tokens": str(chunk_tokens),
                "overlap": str(overlap),
                "cleaner": CLEANER_VERSION,
                "keep_code": str(int(keep_code)),
            }
            known = self.files()
            if any(meta.get(k) != v for k, v in settings.items()):
                self._mark_all_stale(settings)  # one transaction: a crash midway re-chunks the rest next time
                report.rechunked = bool(known)
                known = dict.fromkeys(known, "stale")
            bar = _Progress(len(found)) if progress else None
            gone_by_sha: dict[str, list[str]] = {}  # files indexed before and not found now: a moved file's old path
            for rel in sorted(set(known) - {rel for _, rel in found}):
                gone_by_sha.setdefault(known[rel], []).append(rel)
            try:
                for abs_path, rel in found:
                    if bar:
                        bar.file(rel)
                    self._update_file(abs_path, rel, known, gone_by_sha, report, count, chunk_tokens, overlap, keep_code, bar)
                for rel in sorted(r for rels in gone_by_sha.values() for r in rels):
                    report.chunks_removed += self._replace(rel, None, [], None)
                    report.removed.append(rel)
            finally:
                if bar:
                    bar.close()
                self._version = None
                self._save_vectors()  # also after an error or Ctrl-C: what SQLite committed
        report.seconds = time.perf_counter() - started
        return report

    def _update_file(
        self,
        abs_path: Path,
        rel: str,
        known: dict[str, str],
        gone_by_sha: dict[str, list[str]],
        report: IndexReport,
        count,
        chunk_tokens: int,
        overlap: int,
        keep_code: bool,
        bar,
    ) -> None:
        try:
            data = abs_path.read_bytes()
        except OSError as err:
            return self._skip(rel, f"unreadable: {err.strerror or err}", known, report)
        sha = _sha(data)
        if known.get(rel) == sha:
            report.unchanged += 1
            return None
        if rel not in known and gone_by_sha.get(sha):  # moved or renamed (or the docs root changed): same chunks
            old = gone_by_sha[sha].pop(0)
            self._move(old, rel)
            report.moved.append((old, rel))
            return None
        try:
            doc = decode_document(data, abs_path, rel, keep_code=keep_code)  # the bytes hashed, not a second read
        except RagError as err:
            return self._skip(rel, str(err).split(": ", 1)[-1], known, report)
        chunks = chunk_document(doc, count, chunk_tokens=chunk_tokens, overlap=overlap)
        if not chunks:
            return self._skip(rel, "no text to index after cleaning (empty, or only headings and code)", known, report)
        vectors = self.embedder.encode([c.embed_text() for c in chunks])  # (n_chunks, dim)
        report.chunks_removed += self._replace(rel, sha, chunks, vectors)
        report.chunks_added += len(chunks)
        (report.changed if rel in known else report.added).append(rel)
        if bar:
            bar.chunks(len(chunks))
        return None

    def _skip(self, rel: str, why: str, known: dict[str, str], report: IndexReport) -> None:
        report.skipped.append((rel, why))
        if rel in known:  # it was indexed before: its old chunks no longer match the file
            report.chunks_removed += self._replace(rel, None, [], None)

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
                    "INSERT INTO chunks (path, ordinal, heading, start, end, text, hash, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rel, c.ordinal, c.heading, c.start, c.end, c.text, _sha(c.text, 16), _blob(vectors[i])),
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
                q = f"SELECT id, path, heading, start, end, text, hash FROM chunks WHERE id IN ({','.join('?' * len(part))})"
                for r in self._db.execute(q, part):
                    found[r[0]] = ChunkRow(*r)
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


def _blob(vector: np.ndarray) -> bytes:
    """A (dim,) vector as the float32 bytes stored in a chunk's row."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _version(meta: dict[str, str], files: list[tuple[str, str]]) -> str:
    keys = ("embedder", "dim", "chunk_tokens", "overlap", "cleaner", "keep_code")
    payload = json.dumps({"meta": {k: meta.get(k) for k in keys}, "files": files}, sort_keys=True)
    return _sha(payload, 16)


class _Progress:
    """A rich progress bar on stderr: files done of total, and the chunks written so far."""

    def __init__(self, n_files: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._files = self._p.add_task("files", total=n_files, info="")
        self._chunks = self._p.add_task("chunks", total=None, info="")
        self._started = False
        self._p.start()

    def file(self, rel: str) -> None:
        if self._started:
            self._p.advance(self._files)
        self._started = True
        self._p.update(self._files, info=rel[-40:])

    def chunks(self, n: int) -> None:
        self._p.advance(self._chunks, n)

    def close(self) -> None:
        if self._started:
            self._p.advance(self._files)
        self._p.update(self._files, info="")
        self._p.stop()
