"""The semantic cache with the real embedder (all-MiniLM-L6-v2, offline) and ``alignkit cache stats|clear``."""

import json

from alignkit.cli import main
from alignkit.rag.embed import DEFAULT_EMBEDDER, Embedder
from alignkit.rag.match import DEFAULT_THRESHOLD

CACHED = {
    "What is the capital of Australia?": "Canberra",
    "How tall is the Eiffel Tower?": "330 m",
    "What's new in Python 3.12?": "PEP 695 type syntax, f-string grammar, ...",
    "How do I sort a dictionary by value in Python?": "sorted(d.items(), key=lambda kv: kv[1])",
}


def test_real_embedder_cache_and_cli(tmp_path, capsys):
    from alignkit.rag import SemanticCache  # the package's lazy export

    path = tmp_path / "cache"
    with SemanticCache(path, embedder=Embedder()) as cache:
        cache.put_many(list(CACHED.items()))
        assert cache.get("Which city is Australia's capital?") == "Canberra"  # paraphrases: cosine 0.93, 0.98
        assert cache.get("What is the height of the Eiffel Tower?") == "330 m"
        assert cache.get("What's new in Python 3.11?") is None  # cosine 0.95: refused, numbers differ
        assert cache.get("How do I sort a dictionary by key in Python?") is None  # cosine 0.93: words swapped
    assert main(["cache", "stats", "--cache", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["entries"], stats["hits"], stats["misses"]) == (4, 2, 2)
    assert stats["embedder"] == DEFAULT_EMBEDDER and stats["dim"] == 384
    assert stats["threshold"] == DEFAULT_THRESHOLD and stats["size_bytes"] > 0

    with SemanticCache(path) as cache:  # restart; the default embedder is built on first need
        assert cache._embedder is None
        assert cache.get("Tell me the capital city of Australia.") == "Canberra"

    assert main(["cache", "clear", "--cache", str(path)]) == 0
    assert "cleared 4 entries" in capsys.readouterr().out
    assert main(["cache", "stats", "--cache", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0

    assert main(["cache", "stats", "--cache", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkit: error:") and "no semantic cache here" in err and "\n" not in err
