"""A persistent vector index: cosine top-k over L2-normalised vectors with int64 ids (faiss HNSW).

HNSW makes a lookup grow roughly with log(n), not n: the semantic cache's lookup must stay in
milliseconds at 100k entries. faiss' HNSW cannot delete, so :meth:`VectorIndex.remove` tombstones the
ids (never returned again; searches over-fetch to make up) and the graph is rebuilt from the kept
vectors once tombstones pass ``compact_ratio`` of the index. :meth:`save` writes a directory
atomically (a temporary directory, then a rename); :meth:`load` reads it back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from alignkit.models._fs import atomic_dir

_INDEX_FILE, _META_FILE = "vectors.faiss", "vectors.json"


class SearchResult(NamedTuple):
    ids: np.ndarray  # (Q, k) int64, -1 where fewer than k vectors were found
    scores: np.ndarray  # (Q, k) float32 cosine similarity (inner product of normalised vectors); -inf where id is -1


def _faiss():
    from alignkit.errors import require

    return require("faiss", "the RAG index and the semantic cache (vector search)")


class VectorIndex:
    """Cosine top-k search over ``dim``-dimensional L2-normalised float32 vectors, keyed by int64 ids.

    ``m``, ``ef_construction``, ``ef_search``: HNSW's graph degree and build / search beam widths.
    Not thread-safe for writes: callers that add or remove while others search hold a lock.
    """

    def __init__(self, dim: int, *, m: int = 32, ef_construction: int = 80, ef_search: int = 64, compact_ratio: float = 0.25):
        self.dim, self.m, self.ef_construction, self.ef_search = int(dim), m, ef_construction, ef_search
        self.compact_ratio = compact_ratio
        self._index = self._new_index()
        self._live: set[int] = set()  # ids searchable now
        self._dead: set[int] = set()  # tombstoned ids (still in the graph)

    def _new_index(self):
        faiss = _faiss()
        hnsw = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        hnsw.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(hnsw)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, id_: int) -> bool:
        return int(id_) in self._live

    def ids(self) -> np.ndarray:
        """(n,) int64 the live ids, sorted."""
        return np.array(sorted(self._live), dtype=np.int64)

    def add(self, ids, vectors) -> None:
        """Add ``vectors`` (N, dim) under ``ids`` (N,). An id that is live already is an error; a tombstoned
        id may be reused (its old vector stays dead)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1))
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        if len(ids) == 0:
            return
        new = ids.tolist()
        clash = self._live.intersection(new)
        if clash or len(set(new)) != len(new):
            raise ValueError(f"ids already in the index (or repeated): {sorted(clash)[:5]}")
        if self._dead.intersection(new):  # the graph still holds the old vectors under these ids: drop them first
            self._compact()
        self._index.add_with_ids(vectors, ids)
        self._live.update(new)

    def remove(self, ids) -> int:
        """Tombstone ``ids``; returns how many were live. Rebuilds the graph when tombstones pass the ratio."""
        gone = self._live.intersection(np.asarray(ids, dtype=np.int64).reshape(-1).tolist())
        self._live -= gone
        self._dead |= gone
        if self._dead and len(self._dead) > self.compact_ratio * max(self._index.ntotal, 1):
            self._compact()
        return len(gone)

    def _compact(self) -> None:
        faiss = _faiss()
        all_ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        keep = ~np.isin(all_ids, np.fromiter(self._dead, np.int64, len(self._dead)))
        vectors = self._index.index.reconstruct_n(0, self._index.ntotal)[keep] if self._index.ntotal else None
        self._index, self._dead = self._new_index(), set()
        if vectors is not None and len(vectors):
            self._index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(all_ids[keep]))

    def vectors(self, ids) -> np.ndarray:
        """(N, dim) the stored vectors of live ``ids``."""
        missing = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) not in self._live]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:5]}")
        return (
            np.stack([self._index.reconstruct(int(i)) for i in np.asarray(ids).reshape(-1)])
            if len(ids)
            else np.zeros((0, self.dim), np.float32)
        )

    def search(self, queries, k: int) -> SearchResult:
        """The ``k`` nearest live vectors to each of ``queries`` (Q, dim), best first."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.dim))
        n_q = len(q)
        out_ids = np.full((n_q, k), -1, dtype=np.int64)
        out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        if self._index.ntotal == 0 or k <= 0 or n_q == 0:
            return SearchResult(out_ids, out_scores)
        fetch = min(k + len(self._dead), int(self._index.ntotal))
        faiss = _faiss()
        faiss.downcast_index(self._index.index).hnsw.efSearch = max(self.ef_search, fetch)
        # one query on one OpenMP thread: it gains nothing from more, and waking a thread team costs ~10 ms on a busy
        # machine (the setting is the calling thread's; restored after)
        prev = faiss.omp_get_max_threads()
        if n_q == 1:
            faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._index.search(q, fetch)
        finally:
            faiss.omp_set_num_threads(prev)
        for r in range(n_q):
            j = 0
            for i, s in zip(ids[r], scores[r]):
                if i < 0 or int(i) in self._dead:
                    continue
                out_ids[r, j], out_scores[r, j] = i, s
                j += 1
                if j == k:
                    break
        return SearchResult(out_ids, out_scores)

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to directory ``path`` atomically (a complete old or new copy, never half)."""
        faiss = _faiss()
        path = Path(path)
        with atomic_dir(path, overwrite=True) as tmp:
            faiss.write_index(self._index, str(tmp / _INDEX_FILE))
            meta = {
                "dim": self.dim,
                "m": self.m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
                "compact_ratio": self.compact_ratio,
                "dead": sorted(self._dead),
            }
            (tmp / _META_FILE).write_text(json.dumps(meta))
        for stale in _leftovers(path):  # of earlier saves cut short (the copy just written supersedes them)
            shutil.rmtree(stale, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        faiss = _faiss()
        path = Path(path)
        if not (path / _META_FILE).is_file():  # a save killed between its two renames left the old copy aside
            path = next((d for d in _leftovers(path, old_only=True) if (d / _META_FILE).is_file()), path)
        meta_file = path / _META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path}: not a vector index (no {_META_FILE})")
        meta = json.loads(meta_file.read_text())
        self = cls(
            meta["dim"],
            m=meta["m"],
            ef_construction=meta["ef_construction"],
            ef_search=meta["ef_search"],
            compact_ratio=meta["compact_ratio"],
        )
        self._index = faiss.read_index(str(path / _INDEX_FILE))  # an IndexIDMap2 (read_index returns the concrete type)
        self._dead = set(meta["dead"])
        self._live = set(faiss.vector_to_array(self._index.id_map).astype(np.int64).tolist()) - self._dead
        return self


def _leftovers(path: Path, old_only: bool = False) -> list[Path]:
    """What saves of ``path`` cut short left beside it (``atomic_dir``'s ``.NAME.old-*`` / ``.NAME.tmp-*``), newest first."""
    kinds = ("old",) if old_only else ("old", "tmp")
    found = [d for kind in kinds for d in path.parent.glob(f".{path.name}.{kind}-*") if d.is_dir()]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)
