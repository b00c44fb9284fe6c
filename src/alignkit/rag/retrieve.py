"""Top-k retrieval over a :class:`~alignkit.rag.store.CorpusIndex`, optionally re-ranked by MMR.

Maximal marginal relevance (Carbonell and Goldstein, 1998, "The use of MMR, diversity-based reranking for
reordering documents and producing summaries", eq. 1) picks, one at a time from ``fetch_k`` candidates, the one
maximising ``λ·sim(q, d) − (1 − λ)·max_{s ∈ selected} sim(d, s)``: λ = 1 is plain top-k, lower λ trades
relevance for passages that do not repeat each other (overlapping chunks, near-duplicate sections).
Similarities are cosines of the stored (L2-normalised) vectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from alignkit.rag.documents import cite
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk."""

    chunk_id: int
    text: str
    source: str  # file path relative to the docs root
    heading: str  # heading path "A > B"
    score: float  # cosine similarity to the question
    rank: int  # 1-based position in the result
    pages: tuple[int, int] | None = None  # PDF: (first, last) page of the chunk, from 1; None for other formats

    @property
    def citation(self) -> str:
        """``book.pdf page 12 — 1 Chapter > 1.2 Section``; ``notes.md — Heading`` for a file without pages."""
        return cite(self.source, self.pages, self.heading)

    def to_dict(self) -> dict:
        """The fields (``pages`` as a list or None) and the ``citation``: what the server returns as a source."""
        d = asdict(self)
        d["pages"] = list(self.pages) if self.pages else None
        d["citation"] = self.citation
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Hit:
        pages = d.get("pages")
        return cls(
            int(d["chunk_id"]),
            str(d["text"]),
            str(d["source"]),
            str(d["heading"]),
            float(d["score"]),
            int(d["rank"]),
            (int(pages[0]), int(pages[1])) if pages else None,
        )


def mmr_select(query: np.ndarray, candidates: np.ndarray, k: int, lam: float = 0.5) -> list[int]:
    """Indices into ``candidates`` (N, dim) chosen by MMR for ``query`` (dim,), in selection order.

    All vectors L2-normalised, so dot products are cosines. Ties go to the earlier candidate (the better
    ranked one, as candidates come best first)."""
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    relevance = candidates @ query  # (N,)
    pairwise = candidates @ candidates.T  # (N, N)
    selected: list[int] = []
    redundancy = np.zeros(n)  # (N,) max similarity to anything selected so far (0 before the first pick)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        score = lam * relevance - (1 - lam) * redundancy
        score[~available] = -np.inf
        best = int(np.argmax(score))
        selected.append(best)
        available[best] = False
        redundancy = pairwise[best] if len(selected) == 1 else np.maximum(redundancy, pairwise[best])
    return selected


class Retriever:
    """``retrieve(question) -> list[Hit]``: embed the question, take the ``k`` nearest chunks (or, with ``mmr``,
    ``fetch_k`` nearest re-ranked by MMR with ``mmr_lambda``)."""

    def __init__(self, index, embedder: EmbedderLike, k: int = 5, mmr: bool = False, mmr_lambda: float = 0.5, fetch_k: int = 20):
        if k < 1:
            raise RagError(f"top-k must be >= 1, got {k}")
        if not 0.0 <= mmr_lambda <= 1.0:
            raise RagError(f"mmr_lambda must be in [0, 1], got {mmr_lambda}")
        index_embedder = getattr(index, "embedder_name", embedder.name)
        if index_embedder != embedder.name:
            raise RagError(
                f"{getattr(index, 'path', 'index')}: built with embedder {index_embedder}, the retriever has {embedder.name}"
            )
        self.index, self.embedder = index, embedder
        self.k, self.mmr, self.mmr_lambda, self.fetch_k = k, mmr, mmr_lambda, max(fetch_k, k)

    def key(self) -> str:
        """The retrieval settings as a stable string (part of the semantic cache's context key)."""
        return f"k={self.k},mmr={self.mmr},mmr_lambda={self.mmr_lambda},fetch_k={self.fetch_k if self.mmr else self.k}"

    def retrieve(self, question: str) -> list[Hit]:
        query = self.embedder.encode([question])  # (1, dim)
        n = self.fetch_k if self.mmr else self.k
        found = self.index.search(query, n)
        ids = [int(i) for i in found.ids[0] if i >= 0]
        scores = {int(i): float(s) for i, s in zip(found.ids[0], found.scores[0]) if i >= 0}
        if self.mmr and len(ids) > 1:
            order = mmr_select(query[0], self.index.vectors(ids), self.k, self.mmr_lambda)
            ids = [ids[j] for j in order]
        rows = {r.id: r for r in self.index.rows(ids[: self.k])}
        hits = []
        for i in ids[: self.k]:
            if i in rows:  # a vector whose row went away under us (a concurrent re-index) is dropped
                r = rows[i]
                hits.append(Hit(r.id, r.text, r.source, r.heading, scores[i], len(hits) + 1, r.pages))
        return hits
