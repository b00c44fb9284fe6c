"""The semantic cache with the real embedder (all-MiniLM-L6-v2, offline) and ``alignkit cache stats|clear``."""

import json

from alignkit.cli import main
from alignkit.rag.cache import DEFAULT_THRESHOLD
from alignkit.rag.embed import DEFAULT_EMBEDDER, Embedder

CACHED = {
    "What is the capital of Australia?": "Canberra",
    "How tall is the Eiffel Tower?": "330 m",
    "What's new in Python 3.12?": "PEP 695 type syntax, f-string grammar, ...",
    "How do I sort a dictionary by value in Python?": "sorted(d.items(), key=lambda kv: kv[1])",
}


def test_real_embedder_cache_and_cli(tmp_path, capsys):
    """The default cache end to end: the real embedder, the crisp vetoes and the shipped verifier under the
    default error bound, the counters and the CLI. What the verifier says of these four questions is logged in
    stats(): an answer it serves must have P(wrong) under the bound."""
    from alignkit.rag import SemanticCache  # the package's lazy export
    from alignkit.rag.cache import DEFAULT_ERROR_BOUND

    path = tmp_path / "cache"
    with SemanticCache(path, embedder=Embedder()) as cache:
        cache.put_many(list(CACHED.items()))
        assert cache.get("what is the capital of australia") == "Canberra"  # an exact repeat (case, punctuation)
        refused = cache.explain("What's new in Python 3.11?")  # cosine 0.95, but the numbers differ: vetoed
        assert refused[0].score > 0.9 and refused[0].verdict.reasons == ("different numbers: 3.11 vs 3.12",)
        assert cache.get("What's new in Python 3.11?") is None
        swap = cache.explain("How do I sort a dictionary by key in Python?")[0]  # cosine 0.93: key / value
        assert swap.score > 0.9 and not swap.hit and swap.verdict.probability < 0.5
        for c in cache.explain("Which city is Australia's capital?"):
            assert c.hit == (c.verdict.probability is not None and 1 - c.verdict.probability < DEFAULT_ERROR_BOUND)
    assert main(["cache", "stats", "--cache", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["entries"], stats["hits"], stats["misses"]) == (4, 1, 1)
    assert stats["embedder"] == DEFAULT_EMBEDDER and stats["dim"] == 384
    assert stats["threshold"] == DEFAULT_THRESHOLD and stats["size_bytes"] > 0
    assert stats["error_bound"] == DEFAULT_ERROR_BOUND and stats["estimated_error_rate"] == 0.0  # one exact hit

    with SemanticCache(path) as cache:  # restart; the default embedder is built on first need
        assert cache._embedder is None
        assert cache.get("How tall is the Eiffel Tower?") == "330 m"
        assert cache._embedder is None  # an exact repeat needs no embedding

    assert main(["cache", "clear", "--cache", str(path)]) == 0
    assert "cleared 4 entries" in capsys.readouterr().out
    assert main(["cache", "stats", "--cache", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0

    assert main(["cache", "stats", "--cache", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkit: error:") and "no semantic cache here" in err and "\n" not in err
