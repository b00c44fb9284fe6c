"""The embedded store's shared part: a SQLite table of rows keyed by integer id, and a faiss
:class:`~alignkit.rag.vectors.VectorIndex` of their vectors under the same ids.

Both the RAG corpus index (:mod:`alignkit.rag.store`) and the semantic cache's embedded store
(:mod:`alignkit.rag.cache_store`) keep SQLite as the source of truth and the vector index as derived data:

- :func:`connect` opens SQLite in WAL mode with ``synchronous=NORMAL`` (a commit survives a killed process) as an
  autocommit connection; :func:`transaction` wraps ``BEGIN [IMMEDIATE] ... COMMIT`` (ROLLBACK on any exception).
- :class:`SyncedVectors` holds the vector index of one directory: :meth:`~SyncedVectors.load` reads the saved copy
  (a missing, damaged or wrong-dimension copy starts empty: it is rebuilt from SQLite), :meth:`~SyncedVectors.reconcile`
  makes it hold exactly the ids SQLite has (vectors without a row dropped, rows without a vector given theirs by a
  callback: from the row when it stores one, else embedded), :meth:`~SyncedVectors.save` writes it atomically (a
  temporary directory, then a rename), under an advisory file lock when several processes share the directory.

Row ids must come from ``AUTOINCREMENT`` (never reused), so a stale vector can never be mistaken for a new row.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SQLITE_MAX_PARAMS = 900  # bound parameters per statement, below SQLite's old default limit of 999

VectorsFor = Callable[[list[int]], tuple[list[int], np.ndarray]]
"""``vectors_for(ids) -> (found ids, (len(found), dim) float32 vectors)``: the vectors of rows ``ids`` (rows gone since
are left out), read from the rows or embedded."""


def connect(db_path: str | Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """An autocommit SQLite connection in WAL mode, usable from several threads (callers lock)."""
    conn = sqlite3.connect(str(db_path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One SQLite transaction: ``BEGIN IMMEDIATE`` for writes (takes the write lock at once, so two writers queue
    instead of deadlocking), a deferred ``BEGIN`` for consistent reads; ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        if conn.in_transaction:
            conn.execute("COMMIT")


def chunked(ids: Sequence[int], size: int = SQLITE_MAX_PARAMS) -> Iterator[list[int]]:
    """``ids`` in lists of at most ``size`` (one ``IN (?, ...)`` statement each)."""
    ids = list(ids)
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


@contextlib.contextmanager
def file_lock(path: Path | None, *, shared: bool) -> Iterator[None]:
    """An advisory lock between processes (POSIX ``flock``; none elsewhere, or when ``path`` is None)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: saves are still atomic, a load may retry
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class SyncedVectors:
    """The vector index of rows ``ids`` saved in directory ``directory`` (see the module doc).

    ``lock_file``: a file locked around saves (exclusive) and loads (shared), for directories several processes
    share; None when one process writes. ``unsaved`` counts changes since the last save. Not thread-safe: the
    owner locks.
    """

    def __init__(self, directory: Path, dim: int, *, lock_file: Path | None = None, index=None):
        from alignkit.rag.vectors import VectorIndex

        self.directory, self.dim, self.lock_file = Path(directory), int(dim), lock_file
        self.index = index if index is not None else VectorIndex(self.dim)
        self.unsaved = 0

    @classmethod
    def load(cls, directory: Path, dim: int, *, lock_file: Path | None = None) -> SyncedVectors:
        """The saved copy in ``directory``, or an empty index when there is none, it is damaged (a warning) or it has
        another dimension (a warning): :meth:`reconcile` then rebuilds it from the rows."""
        from alignkit.rag.vectors import VectorIndex

        index = None
        with file_lock(lock_file, shared=True):
            try:
                index = VectorIndex.load(directory)  # finds the old copy a save cut short left aside
            except FileNotFoundError:
                pass
            except Exception as err:  # a damaged copy is rebuilt from SQLite, not fatal
                log.warning("%s: cannot read the vector index (%s); rebuilding it from the database", directory, err)
        if index is not None and index.dim != int(dim):
            log.warning("%s: vector index has dimension %d, expected %d; rebuilding it", directory, index.dim, dim)
            index = None
        return cls(directory, dim, lock_file=lock_file, index=index)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, id_: int) -> bool:
        return id_ in self.index

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Add ``vectors`` (N, dim) under row ids ``ids`` (N,)."""
        if len(ids):
            self.index.add(list(ids), vectors)
            self.unsaved += len(ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Drop the vectors of ``ids``; returns how many there were."""
        n = self.index.remove(list(ids)) if len(ids) else 0
        self.unsaved += n
        return n

    def reconcile(self, row_ids: np.ndarray, vectors_for: VectorsFor, *, batch: int = 512) -> tuple[int, int]:
        """Make the index hold exactly ``row_ids`` (the table's ids): drop the other vectors, add the missing rows'
        (from ``vectors_for``, ``batch`` ids a call). Returns (added, dropped)."""
        row_ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        in_index = self.index.ids()
        extra = np.setdiff1d(in_index, row_ids)
        missing = np.setdiff1d(row_ids, in_index)
        self.remove(extra.tolist())
        added = 0
        for part in chunked(missing.tolist(), batch):
            found, vectors = vectors_for(part)
            found_ids = [int(i) for i in found if int(i) not in self.index]
            if found_ids:
                keep = [j for j, i in enumerate(found) if int(i) not in self.index]
                self.add(found_ids, np.asarray(vectors, dtype=np.float32)[keep])
                added += len(found_ids)
        return added, len(extra)

    def save(self) -> None:
        """Write the index atomically (a complete old or new copy on disk, never half)."""
        with file_lock(self.lock_file, shared=False):
            self.index.save(self.directory)
        self.unsaved = 0
