"""SemanticCache with a deterministic fake embedder: hits, misses, contexts, TTL, LRU, restarts, a killed
writer, several processes and threads, stats and clear."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from alignkit.rag.cache import DB_FILE, VECTORS_DIR, SemanticCache
from alignkit.rag.errors import RagError
from alignkit.rag.match import PlainCosine, RuleCheck

REPO = Path(__file__).resolve().parents[2]


class HashEmbedder:
    """A hashed bag of words, L2-normalised: questions sharing words are close. Deterministic across
    processes (crc32, not Python's salted hash)."""

    def __init__(self, dim: int = 128, name: str = "hash-bow"):
        self.dim, self.name, self.calls = dim, name, 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", text.lower()):
                out[i, zlib.crc32(w.rstrip("s").encode()) % self.dim] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-9)
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())


Q = "How do I reset my password?"
PARA = "How can I reset my password?"  # shares 5 of 6 words
NEG = "How do I reset my username?"  # cosine 0.83, but a different question


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def open_cache(path, **kw) -> SemanticCache:
    kw.setdefault("embedder", HashEmbedder())
    kw.setdefault("threshold", 0.5)
    if (
        "error_bound" not in kw
    ):  # the store and policy mechanics, with the rule check; the default check: test_cache_default_check.py
        kw.setdefault("check", RuleCheck())
    return SemanticCache(path, **kw)


def test_hit_on_paraphrase_and_miss_on_near_miss(tmp_path):
    with open_cache(tmp_path / "c") as cache:
        cache.put(Q, "use the reset link")
        assert cache.get(PARA) == "use the reset link"
        assert cache.get(NEG) is None  # cosine is above the threshold: the second check refuses it
        assert cache.get("What is the capital of France?") is None
        why = {c.question: c for c in cache.explain(NEG)}
        assert why[Q].score >= 0.5 and not why[Q].verdict.ok and not why[Q].hit
        assert any("swapped" in r for r in why[Q].verdict.reasons)


def test_plain_cosine_serves_the_near_miss(tmp_path):
    with open_cache(tmp_path / "c", check=PlainCosine()) as cache:
        cache.put(Q, "use the reset link")
        assert cache.get(NEG) == "use the reset link"  # what the second check is for


def test_exact_repeat_hits_without_embedding(tmp_path):
    emb = HashEmbedder()
    with open_cache(tmp_path / "c", embedder=emb, threshold=1.0) as cache:  # no semantic hit is possible
        cache.put(Q, "A")
        calls = emb.calls
        assert cache.get("  how do I RESET my password ") == "A"
        assert emb.calls == calls
        assert cache.get(PARA) is None and emb.calls == calls + 1


def test_context_must_match_exactly(tmp_path):
    with open_cache(tmp_path / "c") as cache:
        cache.put(Q, "A1", context="doc-1")
        cache.put(Q, "A2", context="doc-2")
        assert cache.get(Q, context="doc-1") == "A1" and cache.get(PARA, context="doc-1") == "A1"
        assert cache.get(Q, context="doc-2") == "A2" and cache.get(PARA, context="doc-2") == "A2"
        assert cache.get(Q) is None and cache.get(PARA) is None
        assert cache.get(PARA, context="doc-1 ") is None
        cache.put("What is a GPU?", "B")
        assert cache.get("What is a GPU?", context="") == "B"  # None and "" are both "no context"
        with pytest.raises(RagError, match="context must be a string"):
            cache.get(Q, context=3)


def test_context_filter_fetches_past_top_k(tmp_path):
    with open_cache(tmp_path / "c", top_k=4) as cache:
        cache.put_many([(Q, f"answer {i}", f"ctx-{i}") for i in range(30)])
        assert cache.get(PARA, context="ctx-17") == "answer 17"  # 29 equally close candidates in other contexts


def test_put_replaces_the_answer_of_the_same_question(tmp_path):
    with open_cache(tmp_path / "c") as cache:
        (first,) = cache.put_many([(Q, "old")])
        assert cache.put(Q.upper(), "new") == first
        assert cache.get(PARA) == "new" and len(cache) == 1
        ids = cache.put_many([("What is X?", "1"), ("what is x", "2"), ("What is Y?", "3", "ctx")])
        assert len(ids) == 2 and cache.get("What is X?") == "2"


def test_ttl_expiry_with_an_injected_clock(tmp_path):
    clock = Clock()
    with open_cache(tmp_path / "c", ttl=10, clock=clock) as cache:
        cache.put(Q, "A")
        clock.t += 9
        assert cache.get(Q) == "A" and cache.get(PARA) == "A"
        clock.t += 2
        assert cache.get(Q) is None and cache.get(PARA) is None  # never served once expired
        stats = cache.stats()  # the expired row met in the lookups is purged
        assert (stats.entries, stats.expired) == (0, 1)
        cache.put("What is X?", "x")
        clock.t += 11
        cache.put("What is Y?", "y")  # a put purges every expired row
        stats = cache.stats()
        assert (stats.entries, stats.expired) == (1, 2)
        assert cache.get("What is Y?") == "y" and cache.get("What is X?") is None


def test_lru_bound_evicts_the_least_recently_used(tmp_path):
    clock = Clock()
    with open_cache(tmp_path / "c", max_entries=3, clock=clock) as cache:
        for q in ("alpha question one", "beta question two", "gamma question three"):
            clock.t += 1
            cache.put(q, q.split()[0])
        clock.t += 1
        assert cache.get("alpha question one") == "alpha"  # alpha is now the most recently used
        clock.t += 1
        cache.put("delta question four", "delta")
        assert cache.get("beta question two") is None
        assert [cache.get(q) for q in ("alpha question one", "gamma question three", "delta question four")] == [
            "alpha",
            "gamma",
            "delta",
        ]
        assert all(c.question != "beta question two" for c in cache.explain("beta question two", k=10))
        stats = cache.stats()
        assert (stats.entries, stats.evictions) == (3, 1)


def test_restart_keeps_entries(tmp_path):
    with open_cache(tmp_path / "c") as cache:
        cache.put(Q, "A")
        cache.put("What is the capital of France?", "Paris", context="geo")
    emb = HashEmbedder()
    with open_cache(tmp_path / "c", embedder=emb) as cache:
        assert cache.get(PARA) == "A"
        assert cache.get("Tell me the capital of France?", context="geo") == "Paris"
        assert emb.calls == 2  # the two queries only: the saved index was loaded, nothing re-embedded


def test_open_rebuilds_a_lost_index_and_drops_vectors_without_rows(tmp_path):
    path = tmp_path / "c"
    with open_cache(path) as cache:
        cache.put(Q, "A")
        cache.put("What is the capital of France?", "Paris")
    with sqlite3.connect(path / DB_FILE) as db:  # as if a delete was committed but the index never saved
        db.execute("DELETE FROM entries WHERE answer = 'Paris'")
    with open_cache(path) as cache:
        assert [c.question for c in cache.explain("What is the capital of France?", k=5)] == [Q]
    import shutil

    shutil.rmtree(path / VECTORS_DIR)  # as if the index was never saved
    emb = HashEmbedder()
    with open_cache(path, embedder=emb) as cache:
        assert cache.get(PARA) == "A"
        assert emb.calls == 2  # the missing row re-embedded, then the query


def test_embedder_must_match_and_is_built_lazily(tmp_path):
    path = tmp_path / "c"
    open_cache(path).close()
    with pytest.raises(RagError, match="built with embedder 'hash-bow', opened with 'other'"):
        SemanticCache(path, embedder=HashEmbedder(name="other"))
    with pytest.raises(RagError, match="dimension 128, the embedder 64"):
        SemanticCache(path, embedder=HashEmbedder(dim=64))
    cache = SemanticCache(path)  # None: the cache's own embedder, built on first need
    assert cache.embedder_name == "hash-bow" and cache.stats().entries == 0
    assert cache._embedder is None
    cache.close()
    code = "import sys, alignkit.rag.cache; print([m for m in ('torch', 'sentence_transformers', 'faiss') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_bad_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RagError, match="is a file"):
        open_cache(tmp_path / "file")
    with pytest.raises(RagError, match="threshold"):
        open_cache(tmp_path / "c", threshold=1.5)
    with pytest.raises(RagError, match="max_entries"):
        open_cache(tmp_path / "c", max_entries=0)
    with pytest.raises(RagError, match="no semantic cache here"):
        SemanticCache(tmp_path / "missing", create=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_FILE).write_text("not sqlite at all" * 100)
    with pytest.raises(RagError, match="not a semantic cache database"):
        open_cache(tmp_path / "bad")


def test_stats_and_clear(tmp_path):
    path = tmp_path / "c"
    with open_cache(path, ttl=100, max_entries=10) as cache, open_cache(path) as other:
        cache.put(Q, "A")
        cache.put("What is the capital of France?", "Paris")
        assert other.get(PARA) == "A"  # the other instance has its index loaded before the clear
        assert cache.get(PARA) == "A" and cache.get(NEG) is None and cache.get(Q) == "A"
        s = cache.stats()
        assert (s.entries, s.hits, s.misses) == (2, 2, 1) and s.hit_rate == pytest.approx(2 / 3)
        assert (s.embedder, s.dim, s.threshold, s.ttl, s.max_entries) == ("hash-bow", 128, 0.5, 100, 10)
        assert s.size_bytes > 0 and s.path == str(path)
        assert cache.clear() == 2
        s = cache.stats()
        assert (s.entries, s.hits, s.misses, s.evictions, s.expired) == (0, 0, 0, 0, 0)
        assert cache.get(PARA) is None
        assert other.get(PARA) is None and other.explain(PARA) == []  # the other instance followed the clear
        other.put(Q, "B")
        assert cache.get(PARA) == "B"


def test_closed_cache_refuses_calls(tmp_path):
    cache = open_cache(tmp_path / "c")
    cache.close()
    cache.close()  # twice is fine
    with pytest.raises(RagError, match="closed"):
        cache.get(Q)


def test_threads_share_one_cache(tmp_path):
    errors: list[BaseException] = []
    with open_cache(tmp_path / "c") as cache:

        def work(t: int) -> None:
            try:
                for i in range(15):
                    cache.put(f"thread {t} item {i} question", f"{t}-{i}")
                    assert cache.get(f"thread {t} item {i} question") == f"{t}-{i}"
                    cache.get(f"thread {t} item {i} question please")
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert len(cache) == 60
        s = cache.stats()
        assert s.hits + s.misses == 120 and s.hits >= 60


# --- several processes ------------------------------------------------------------------------------
_CHILD_PRELUDE = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.unit.test_semantic_cache import HashEmbedder
from alignkit.rag.cache import SemanticCache
from alignkit.rag.match import RuleCheck
"""


def _child(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_PRELUDE + code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        **kw,
    )


def test_a_writer_killed_mid_write_loses_nothing_committed(tmp_path):
    path = tmp_path / "c"
    code = """
cache = SemanticCache(sys.argv[1], embedder=HashEmbedder(), threshold=0.5, check=RuleCheck(), save_every=5)
i = 0
while True:
    row = cache.put(f"question {i} about item{i}", f"answer {i}")  # returns after the commit
    print(row, i, flush=True)
    i += 1
"""
    child = _child(code, str(path))
    done: list[tuple[int, int]] = []
    try:
        for line in child.stdout:
            done.append(tuple(map(int, line.split())))
            if len(done) >= 40:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and len(done) == 40, child.stderr.read()
    with open_cache(path) as cache:
        assert len(cache) >= 40
        for row, i in done:  # every committed entry, found by words and by its vector
            assert cache.get(f"question {i} about item{i}") == f"answer {i}"
            assert cache.explain(f"question {i} about item{i}", k=1)[0].id == row


def test_two_processes_read_and_follow_each_others_writes(tmp_path):
    path = tmp_path / "c"
    with open_cache(path) as cache:
        cache.put(Q, "A")
        cache.put("What is the capital of France?", "Paris")
        assert cache.get(PARA) == "A"  # the parent's index is loaded now
        cache.flush_seconds = 0.0  # write counters at once, so the other process sees them
        reader = """
cache = SemanticCache(sys.argv[1], embedder=HashEmbedder(), threshold=0.5, check=RuleCheck())
print(cache.get("How can I reset my password?"), cache.get("Tell me the capital of France?"), cache.get("How do I reset my username?"))
cache.put("Which port does HTTPS use by default?", "443")
cache.close()
"""
        readers = [_child(reader, str(path)) for _ in range(2)]  # two readers at once
        outs = [r.communicate(timeout=120) for r in readers]
        for (out, err), r in zip(outs, readers):
            assert r.returncode == 0, err
            assert out.split() == ["A", "Paris", "None"]
        # the parent follows the children's write without reopening: the new row is found by its vector
        assert cache.get("By default, which port does HTTPS use?") == "443"
        assert cache.stats().hits >= 2 * 2 + 2
        remover = """
cache = SemanticCache(sys.argv[1], embedder=HashEmbedder(), threshold=0.5, check=RuleCheck(), max_entries=1)
cache.put("Is this the newest entry?", "yes")  # evicts all the older rows
cache.close()
"""
        r = _child(remover, str(path))
        _, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        assert cache.get(PARA) is None
        assert [c.question for c in cache.explain(PARA, k=10)] == ["Is this the newest entry?"]
