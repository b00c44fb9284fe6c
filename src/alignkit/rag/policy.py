"""The semantic cache's lookup policy: which stored answer, if any, a question gets.

A lookup (:meth:`LookupPolicy.lookup`) is:

1. an exact repeat -- the same words after :func:`~alignkit.rag.match.normalise`, the same context, not expired --
   is a hit without embedding anything;
2. otherwise the store's ``top_k`` nearest neighbours of the question's vector are the candidates; a candidate is
   *eligible* when its cosine is at least ``threshold``, its context is the same and it is not expired;
3. the **second check** (a :class:`Verifier`) decides on the eligible candidates; the first one (best cosine
   first) it accepts is the hit. When every one of the ``k`` fetched cleared the threshold but none was served
   (other contexts, refused), ``k`` grows fourfold (up to 1024) and the next ones are judged.

The policy reads the store (:mod:`alignkit.rag.cache_store`) and never writes it; the cache counts the outcome.

The second check is injected. Anything with this shape is a :class:`Verifier`::

    class MyVerifier:
        name = "my-verifier"            # shown by stats()
        default_threshold = 0.80        # the cosine prefilter used when the cache is given no threshold
        def verify(self, question: str, candidates: Sequence[VerifierInput]) -> list[Decision]:
            # one Decision per candidate, in order: ok (serve its answer), the probability (None when the
            # check has none) that one answer serves both questions, reasons (why not; short lines)
            ...

Candidates come best cosine first with their row (question, answer, context) and cosine, so a learned verifier
can batch them in one forward pass. The pairwise checks of :mod:`alignkit.rag.match` (``check(query, cached) ->
Verdict``: :class:`~alignkit.rag.match.RuleCheck`, the default, and :class:`~alignkit.rag.match.PlainCosine`)
are adapted by :class:`PairwiseVerifier`; :func:`as_verifier` accepts either kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from alignkit.rag.cache_store import CacheRow, CacheStore

__all__ = ["Candidate", "Decision", "LookupPolicy", "PairwiseVerifier", "Verifier", "VerifierInput", "as_verifier"]

MAX_FETCH = 1024  # the most neighbours one lookup fetches


class VerifierInput(NamedTuple):
    """One candidate handed to a :class:`Verifier`."""

    id: int  # row id
    question: str  # the cached question
    answer: str  # its cached answer
    context: str  # its context ('' for none; the same as the lookup's when it reaches get()'s verifier)
    score: float  # cosine similarity of the two questions' embeddings


class Decision(NamedTuple):
    """A verifier's answer for one candidate (``ok`` and ``reasons`` read like :class:`~alignkit.rag.match.Verdict`)."""

    ok: bool  # serve this candidate's answer for the question
    reasons: tuple[str, ...] = ()  # why not (empty when ok): one short line each
    probability: float | None = None  # P(one answer serves both questions), when the verifier estimates it


@runtime_checkable
class Verifier(Protocol):
    """The second check (see the module doc)."""

    name: str
    default_threshold: float

    def verify(self, question: str, candidates: Sequence[VerifierInput]) -> list[Decision]: ...


class PairwiseVerifier:
    """A :class:`Verifier` from a pairwise ``check(query, cached) -> Verdict`` (e.g. :class:`~alignkit.rag.match.RuleCheck`)."""

    def __init__(self, check):
        self.check = check
        self.name: str = check.name
        self.default_threshold: float = check.default_threshold

    def verify(self, question: str, candidates: Sequence[VerifierInput]) -> list[Decision]:
        out = []
        for c in candidates:
            v = self.check(question, c.question)
            out.append(Decision(bool(v.ok), tuple(v.reasons)))
        return out


def as_verifier(check) -> Verifier:
    """``check`` as a :class:`Verifier`: one already (it has ``verify``), or a pairwise check wrapped."""
    return check if callable(getattr(check, "verify", None)) else PairwiseVerifier(check)


class Candidate(NamedTuple):
    """One cached question considered for a lookup (see :meth:`SemanticCache.explain`)."""

    id: int  # row id
    question: str  # the cached question
    answer: str
    score: float  # cosine similarity of the two questions' embeddings
    context_ok: bool  # the contexts match exactly
    expired: bool  # older than the TTL (never served)
    verdict: Decision  # the second check (ok, reasons, probability); ("not checked",) when get() had no need
    hit: bool  # the one get() would return: first by score with score >= threshold, context ok, not expired, verdict ok


_NOT_CHECKED = Decision(False, ("not checked",))


class LookupPolicy:
    """Exact repeat, nearest neighbours, the second check (see the module doc). ``threshold``: the least cosine
    for a candidate to be judged; ``top_k``: neighbours fetched first."""

    def __init__(self, verifier: Verifier, threshold: float, top_k: int = 8):
        self.verifier, self.threshold, self.top_k = verifier, float(threshold), max(1, int(top_k))

    def candidates(
        self, store: CacheStore, question: str, vec: np.ndarray, ctx: str, now: float, *, first_hit: bool, k: int | None = None
    ) -> list[Candidate]:
        """Candidates best first. With ``first_hit`` (what get() does): stop at the first hit, judge only the
        eligible ones, fetch more than ``top_k`` when all those fetched clear the threshold but none is served.
        Without (explain): the ``k`` nearest, every one judged."""
        k = k or self.top_k
        out: list[Candidate] = []
        seen: set[int] = set()
        hit_found = False
        while True:
            rows = store.nearest(vec, k, now)
            fresh = [r for r in rows if r.id not in seen]
            seen.update(r.id for r in fresh)
            # the eligible rows are judged together, as get() judges them (a verifier that reads only the few
            # best sees the same ones); explain also judges the rest, apart
            eligible = [r for r in fresh if self._eligible(r, ctx)]
            decisions = dict(zip((r.id for r in eligible), self._verify(question, eligible)))
            if not first_hit:
                rest = [r for r in fresh if r.id not in decisions]
                decisions.update(zip((r.id for r in rest), self._verify(question, rest)))
            for r in fresh:
                verdict = decisions.get(r.id, _NOT_CHECKED)
                hit = not hit_found and self._eligible(r, ctx) and verdict.ok
                hit_found |= hit
                out.append(Candidate(r.id, r.question, r.answer, r.score, r.context == ctx, r.expired, verdict, hit))
                if hit and first_hit:
                    return out
            below = len(rows) < k or rows[-1].score < self.threshold
            if not first_hit or below or k >= MAX_FETCH:
                return out
            k = min(4 * k, MAX_FETCH)

    def _eligible(self, r: CacheRow, ctx: str) -> bool:
        return r.score >= self.threshold and r.context == ctx and not r.expired

    def _verify(self, question: str, rows: list[CacheRow]) -> list[Decision]:
        if not rows:
            return []
        inputs = [VerifierInput(r.id, r.question, r.answer, r.context, r.score) for r in rows]
        decisions = list(self.verifier.verify(question, inputs))
        if len(decisions) != len(inputs):
            raise ValueError(f"verifier {self.verifier.name!r} returned {len(decisions)} decisions for {len(inputs)} candidates")
        return decisions
