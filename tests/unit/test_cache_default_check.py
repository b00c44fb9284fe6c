"""The cache's default second check (VerifiedCheck): vetoes first, then the calibrated verifier on at most the
few best candidates, an answer served only when P(wrong) < error_bound, and stats() reporting the estimated error
rate among hits. A fake verifier with set probabilities makes every decision checkable by hand; the shipped
verifier is exercised in tests/smoke/test_cache_cli.py."""

from __future__ import annotations

import pytest

from alignkit.rag.cache import SemanticCache
from alignkit.rag.errors import RagError
from alignkit.rag.match import RuleCheck
from alignkit.rag.policy import VerifierInput
from alignkit.rag.verified_check import VerifiedCheck
from tests.unit.test_semantic_cache import HashEmbedder


class FakeVerifier:
    """P(one answer serves both) from a table keyed by the cached question; records what it was asked."""

    def __init__(self, table: dict[str, float]):
        self.table, self.calls = table, []

    def probability(self, pairs):
        self.calls.append(list(pairs))
        return [self.table.get(b, 0.0) for _, b in pairs]


def _inputs(*questions):
    return [VerifierInput(i, q, f"answer {i}", "", 0.9 - 0.01 * i) for i, q in enumerate(questions)]


def test_bound_vetoes_and_the_candidate_limit_by_hand():
    fake = FakeVerifier({"A?": 0.985, "B?": 0.975, "C?": 0.999, "D?": 0.999})
    check = VerifiedCheck(0.02, verifier=fake, max_candidates=2)
    got = check.verify("What is item 7?", _inputs("What is item 8?", "A?", "B?", "C?", "D?"))
    # item 8: both state numbers, 7 != 8 -> vetoed, not read; A: P(wrong) 0.015 < 0.02 -> served;
    # B: 0.025 -> refused; C, D: beyond the 2 the verifier reads
    assert [d.ok for d in got] == [False, True, False, False, False]
    assert got[0].reasons == ("different numbers: 7 vs 8",) and got[0].probability == 0.0
    assert got[1].probability == pytest.approx(0.985) and got[1].reasons == ()
    assert "is not below the bound 0.02" in got[2].reasons[0]
    assert "reads the 2 best" in got[3].reasons[0] and got[3].probability is None
    assert fake.calls == [[("What is item 7?", "A?"), ("What is item 7?", "B?")]]  # one batch, vetoed one left out
    assert VerifiedCheck(0.03, verifier=fake, max_candidates=2).verify("q", _inputs("B?"))[0].ok  # 0.025 < 0.03
    with pytest.raises(ValueError):
        VerifiedCheck(0.0)


def test_the_cache_serves_by_the_bound_and_reports_the_estimated_error_rate(tmp_path):
    q, para, near = "How do I reset my password?", "How can I reset my password?", "How do I reset my username?"
    fake = FakeVerifier({q: 0.99})
    with SemanticCache(tmp_path / "c", embedder=HashEmbedder(), check=VerifiedCheck(0.02, verifier=fake)) as cache:
        cache.put(q, "use the reset link")
        assert cache.get(q) == "use the reset link"  # an exact repeat: no verifier
        assert fake.calls == []
        assert cache.get(para) == "use the reset link"  # P(wrong) 0.01 < 0.02
        fake.table = {q: 0.97}
        assert cache.get(near) is None  # P(wrong) 0.03
        st = cache.stats()
        assert (st.hits, st.misses, st.semantic_hits) == (2, 1, 1)
        assert st.error_bound == 0.02 and st.check == "verifier (error bound 0.02)"
        assert st.estimated_error_rate == pytest.approx((0.0 + 0.01) / 2)  # the exact repeat counts 0
        hit = [c for c in cache.explain(para) if c.hit]
        assert hit == []  # explain reads the verifier as it is now (0.97): no hit


def test_the_default_check_and_its_bound(tmp_path):
    with SemanticCache(tmp_path / "a", embedder=HashEmbedder(), error_bound=0.05) as cache:
        assert isinstance(cache.check, VerifiedCheck) and cache.check.error_bound == 0.05
        assert cache.threshold == cache.check.default_threshold
    with SemanticCache(tmp_path / "b", embedder=HashEmbedder()) as cache:
        assert cache.check.error_bound == 0.02  # the default
    with pytest.raises(RagError, match="error_bound sets the default check"):
        SemanticCache(tmp_path / "c", embedder=HashEmbedder(), check=RuleCheck(), error_bound=0.05)


def test_counters_survive_a_restart_and_old_caches_gain_them(tmp_path):
    fake = FakeVerifier({"How do I reset my password?": 0.995})
    path = tmp_path / "c"
    with SemanticCache(path, embedder=HashEmbedder(), check=VerifiedCheck(verifier=fake)) as cache:
        cache.put("How do I reset my password?", "link")
        assert cache.get("How can I reset my password?") == "link"
    with SemanticCache(path, embedder=HashEmbedder(), check=VerifiedCheck(verifier=fake)) as cache:
        st = cache.stats()
        assert st.semantic_hits == 1 and st.estimated_error_rate == pytest.approx(0.005)


def test_explain_judges_the_eligible_candidates_as_get_does(tmp_path):
    """In a cache holding the same question under several contexts, explain's verdicts for the eligible
    candidates are the ones get() acts on: the verifier reads the best eligible ones together, whatever ranks
    above them in other contexts."""
    fake = FakeVerifier({"How do I reset my password?": 0.999})
    check = VerifiedCheck(verifier=fake, max_candidates=1)
    with SemanticCache(tmp_path / "c", embedder=HashEmbedder(), check=check) as cache:
        for ctx in ("a", "b", "c"):
            cache.put("How do I reset my password?", f"answer {ctx}", context=ctx)
        assert cache.get("How can I reset my password?", context="c") == "answer c"
        cands = cache.explain("How can I reset my password?", context="c")
        assert [c.hit for c in cands if c.context_ok] == [True]
        assert [c.answer for c in cands if c.hit] == ["answer c"]
