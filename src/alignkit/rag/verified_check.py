"""The semantic cache's default second check: crisp vetoes, then a calibrated learned verifier, against an error bound.

For the candidates a lookup found (best cosine first, already above the cosine prefilter, same context):

1. :func:`alignkit.rag.vetoes.veto` refuses the certain cases (both state numbers and they differ; both name
   things the other never mentions);
2. the ``max_candidates`` (default 1) best of the rest go to the :class:`~alignkit.rag.verifier.Verifier` in one batch: a
   cross-encoder reading both questions, whose score is calibrated (isotonic, on held-out pairs) into p =
   P(the cached answer serves the new question);
3. a candidate is served only when ``1 - p``, the calibrated probability that its answer is wrong, is below
   ``error_bound``. The decision threshold is derived from the bound and the calibration, never hand-picked;
   the cache adds every served ``1 - p`` to its counters, and ``stats()`` reports their mean: the estimated
   error rate among hits.

Nothing here is English-specific beyond what the verifier learned from its training pairs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from alignkit.rag.policy import Decision, VerifierInput
from alignkit.rag.vetoes import veto

DEFAULT_ERROR_BOUND = 0.02  # serve when P(wrong) < 2%
DEFAULT_PREFILTER = 0.5  # cosine below which a cached question is not even shown to the verifier
# the verifier reads at most this many candidates per lookup (latency: one MiniLM pass per candidate). On
# data/cache_eval every right hit of the 3-candidate check came from the first candidate it read (the only later
# one, on dev, was wrong), so one costs nothing there and keeps a lookup at one verifier pass.
MAX_CANDIDATES = 1

_SHIPPED: list = []  # the shipped verifier, loaded once per process and shared (it is thread-safe)
_SHIPPED_LOCK = threading.Lock()


def shipped_verifier():
    """The :class:`~alignkit.rag.verifier.Verifier` shipped with alignkit, loaded on first use, once per process."""
    with _SHIPPED_LOCK:
        if not _SHIPPED:
            from alignkit.rag.verifier import Verifier

            _SHIPPED.append(Verifier.load())
        return _SHIPPED[0]


class VerifiedCheck:
    """Vetoes + the calibrated verifier + the error bound (module doc). ``verifier``: anything with
    ``probability(pairs) -> (N,) array`` (default: the shipped :class:`~alignkit.rag.verifier.Verifier`, loaded on
    first use); ``prefilter``: the cache's cosine threshold when it is given none."""

    def __init__(
        self,
        error_bound: float = DEFAULT_ERROR_BOUND,
        *,
        verifier=None,
        prefilter: float = DEFAULT_PREFILTER,
        max_candidates: int = MAX_CANDIDATES,
    ):
        if not 0 < error_bound < 1:
            raise ValueError(f"error_bound must be in (0, 1), got {error_bound}")
        self.error_bound = float(error_bound)
        self.default_threshold = float(prefilter)
        self.max_candidates = max(1, int(max_candidates))
        self._verifier = verifier
        self.name = f"verifier (error bound {self.error_bound:g})"

    @property
    def verifier(self):
        if self._verifier is None:
            self._verifier = shipped_verifier()
        return self._verifier

    def verify(self, question: str, candidates: Sequence[VerifierInput]) -> list[Decision]:
        out: list[Decision | None] = [None] * len(candidates)
        scored: list[int] = []
        for i, c in enumerate(candidates):
            if len(scored) >= self.max_candidates:
                out[i] = Decision(False, (f"not read: the verifier reads the {self.max_candidates} best candidates",))
                continue
            reason = veto(question, c.question)
            if reason is not None:
                out[i] = Decision(False, (reason,), 0.0)
            else:
                scored.append(i)
        if scored:
            probs = self.verifier.probability([(question, candidates[i].question) for i in scored])
            for i, p in zip(scored, probs):
                p = float(p)
                wrong = 1.0 - p
                ok = wrong < self.error_bound
                reasons = () if ok else (f"P(wrong) {wrong:.3f} is not below the bound {self.error_bound:g}",)
                out[i] = Decision(ok, reasons, p)
        return out  # type: ignore[return-value]
