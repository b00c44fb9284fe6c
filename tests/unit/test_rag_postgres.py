"""The server store against a real PostgreSQL + pgvector that these tests start and stop themselves.

The server comes from the ``pgserver`` wheel (PostgreSQL 16 binaries with pgvector; in the dev extras): a session
fixture runs its ``initdb`` and ``pg_ctl`` in a temporary directory on a free TCP port (as the unprivileged user
``nobody`` when the tests run as root: PostgreSQL refuses root), creates the ``vector`` extension in ``template1``
and stops the server at the end. Each test gets a fresh database. Where the server cannot start the PostgreSQL
tests are skipped with one line saying why; the SQLite cases of the parametrized tests always run.

The cache's behaviour tests run on both stores; two caches on one URL stand for two server workers; the corpus
index on PostgreSQL must answer the same top-k as on SQLite.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from alignkit.rag.cache import SemanticCache
from alignkit.rag.errors import RagError
from alignkit.rag.match import RuleCheck
from alignkit.rag.store import CorpusIndex
from tests.unit.test_rag_store import BagOfWords, write_docs
from tests.unit.test_semantic_cache import NEG, PARA, Clock, HashEmbedder, Q


# --- the server ---------------------------------------------------------------------------------------
def _pg_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PostgreSQL tests: the pgserver package is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """``postgresql://postgres@127.0.0.1:PORT``: a throwaway server, stopped after the session."""
    for module, package in (("psycopg", "psycopg[binary]"), ("pgvector", "pgvector")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"PostgreSQL tests: the {package} package is not installed (pip install -e '.[dev]')")
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="alignkit-pg-"))
    run_as = {}
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # initdb refuses root: run the server as nobody
        import pwd

        pw = pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    port = _free_port()

    def pg(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=root, **run_as)

    data, log = root / "data", root / "server.log"
    started = False
    try:
        r = pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if r.returncode == 0:
            opts = f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off"
            r = pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", opts, "start")
            started = r.returncode == 0
        if not started:
            why = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
            pytest.skip(f"PostgreSQL tests: the server did not start ({why})")
        import psycopg

        url = f"postgresql://postgres@127.0.0.1:{port}"
        with psycopg.connect(f"{url}/template1", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # every database made from template1 has it
        yield url
    finally:
        if started:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh database on the session's server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{pg_server}/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    """Where a cache lives: a directory, or a PostgreSQL URL (a fresh database)."""
    if request.param == "sqlite":
        return str(tmp_path / "c")
    return request.getfixturevalue("pg_url")


def open_cache(where: str, **kw) -> SemanticCache:
    kw.setdefault("embedder", HashEmbedder())
    kw.setdefault("threshold", 0.5)
    if (
        "error_bound" not in kw
    ):  # the store and policy mechanics, with the rule check; the default check: test_cache_default_check.py
        kw.setdefault("check", RuleCheck())
    return SemanticCache(where, **kw)


# --- the cache's behaviour, on both stores ---------------------------------------------------------------
def test_hit_on_paraphrase_miss_on_near_miss_and_exact_repeat(location):
    emb = HashEmbedder()
    with open_cache(location, embedder=emb) as cache:
        cache.put(Q, "use the reset link")
        assert cache.get(PARA) == "use the reset link"
        assert cache.get(NEG) is None  # above the threshold, refused by the second check
        assert cache.get("What is the capital of France?") is None
        calls = emb.calls
        assert cache.get("  how do I RESET my password ") == "use the reset link" and emb.calls == calls
        why = {c.question: c for c in cache.explain(NEG)}
        assert why[Q].score == pytest.approx(float(emb.encode([NEG])[0] @ emb.encode([Q])[0]), abs=1e-5)
        assert not why[Q].verdict.ok and not why[Q].hit


def test_contexts_and_fetching_past_top_k(location):
    with open_cache(location, top_k=4) as cache:
        cache.put_many([(Q, f"answer {i}", f"ctx-{i}") for i in range(30)])
        assert cache.get(PARA, context="ctx-17") == "answer 17"
        assert cache.get(PARA) is None and cache.get(PARA, context="ctx-17 ") is None


def test_put_replaces_the_answer_and_keeps_the_id(location):
    with open_cache(location) as cache:
        (first,) = cache.put_many([(Q, "old")])
        assert cache.put(Q.upper(), "new") == first
        assert cache.get(PARA) == "new" and len(cache) == 1
        assert len(cache.put_many([("What is X?", "1"), ("what is x", "2"), ("What is Y?", "3", "ctx")])) == 2
        assert cache.get("What is X?") == "2"


def test_ttl_and_lru(location):
    clock = Clock()
    with open_cache(location, ttl=10, max_entries=3, clock=clock) as cache:
        cache.put(Q, "A")
        clock.t += 11
        assert cache.get(Q) is None and cache.get(PARA) is None
        s = cache.stats()
        assert (s.entries, s.expired) == (0, 1)
        for q in ("alpha question one", "beta question two", "gamma question three"):
            clock.t += 1
            cache.put(q, q.split()[0])
        clock.t += 1
        assert cache.get("alpha question one") == "alpha"
        clock.t += 1
        cache.put("delta question four", "delta")  # evicts beta, the least recently used
        assert cache.get("beta question two") is None
        assert [cache.get(q) for q in ("alpha question one", "gamma question three")] == ["alpha", "gamma"]
        s = cache.stats()
        assert (s.entries, s.evictions, s.expired) == (3, 1, 1)


def test_restart_stats_and_clear(location):
    with open_cache(location, ttl=100, max_entries=10) as cache:
        cache.put(Q, "A")
        cache.put("What is the capital of France?", "Paris")
    with open_cache(location) as cache:
        assert cache.get(PARA) == "A" and cache.get(NEG) is None and cache.get(Q) == "A"
        s = cache.stats()
        assert (s.entries, s.hits, s.misses, s.embedder, s.dim) == (2, 2, 1, "hash-bow", 128)
        assert s.size_bytes > 0 and s.path == location
        assert cache.clear() == 2
        s = cache.stats()
        assert (s.entries, s.hits, s.misses) == (0, 0, 0) and cache.get(PARA) is None
    with pytest.raises(RagError, match="built with embedder 'hash-bow', opened with 'other'"):
        SemanticCache(location, embedder=HashEmbedder(name="other"))
    with pytest.raises(RagError, match="dimension 128, the embedder 64"):
        SemanticCache(location, embedder=HashEmbedder(dim=64))


def test_threads_share_one_cache(location):
    errors: list[BaseException] = []
    with open_cache(location) as cache:

        def work(t: int) -> None:
            try:
                for i in range(8):
                    cache.put(f"thread {t} item {i} question", f"{t}-{i}")
                    assert cache.get(f"thread {t} item {i} question") == f"{t}-{i}"
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert len(cache) == 24 and cache.stats().hits == 24


# --- PostgreSQL only --------------------------------------------------------------------------------------
def test_two_workers_share_one_cache(pg_url):
    clock = Clock()
    with open_cache(pg_url, clock=clock) as a, open_cache(pg_url, clock=clock, max_entries=2) as b:
        a.put(Q, "A")
        assert b.get(PARA) == "A"  # the other worker's put, found by its vector
        b.put("What is the capital of France?", "Paris")
        assert a.get("Tell me the capital of France?") == "Paris"
        clock.t += 1
        assert a.get(PARA) == "A"  # Q is now more recently used than France...
        a.stats()  # ...once a's batched last-use times are written
        b.put("Which port does HTTPS use by default?", "443")  # b's bound: the least recently used goes
        assert a.get("Tell me the capital of France?") is None
        assert a.get("By default, which port does HTTPS use?") == "443" and a.get(PARA) == "A"
        a.stats()  # writes a's batched counters
        s = b.stats()
        assert (s.entries, s.evictions, s.hits, s.misses) == (2, 1, 5, 1)  # both workers' lookups, one set of counters


def test_missing_database_objects_and_bad_urls_are_one_line_errors(pg_url, pg_server):
    with pytest.raises(RagError, match="no semantic cache here"):
        SemanticCache(pg_url, create=False)
    with pytest.raises(RagError, match="prefix must be"):
        SemanticCache(pg_url + "?prefix=Bad-Name", embedder=HashEmbedder())
    port = _free_port()
    with pytest.raises(RagError, match=r"cannot connect") as err:
        SemanticCache(f"postgresql://postgres:secret@127.0.0.1:{port}/x", embedder=HashEmbedder())
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_prefixes_keep_two_caches_apart_in_one_database(pg_url):
    with open_cache(pg_url + "?prefix=one_") as one, open_cache(pg_url + "?prefix=two_") as two:
        one.put(Q, "from one")
        assert two.get(Q) is None and one.get(PARA) == "from one"


def test_corpus_index_on_postgres_answers_as_on_sqlite(tmp_path, pg_url):
    docs = write_docs(tmp_path / "docs")
    emb = BagOfWords()
    lite = CorpusIndex.open(tmp_path / "idx", emb, create=True)
    pg = CorpusIndex.open(pg_url, emb, create=True)
    with lite, pg:
        r_lite = lite.update([docs], chunk_tokens=16, overlap=4)
        r_pg = pg.update([docs], chunk_tokens=16, overlap=4)
        assert sorted(r_pg.added) == sorted(r_lite.added) and r_pg.chunks_added == r_lite.chunks_added
        assert len(pg) == len(lite) and pg.files() == lite.files()
        assert pg.version == lite.version  # same files, same chunking, same embedder
        queries = emb.encode(["largest planet jupiter", "tomato sauce garlic", "python list append", "water roots"])
        a, b = lite.search(queries, 3), pg.search(queries, 3)
        key = {r.id: (r.source, r.start) for r in lite.rows(sorted(set(a.ids.ravel().tolist())))}
        key_pg = {r.id: (r.source, r.start) for r in pg.rows(sorted(set(b.ids.ravel().tolist())))}
        assert np.allclose(a.scores, b.scores, atol=1e-5)
        full = lite.search(queries, len(lite))  # every chunk's score, to allow either order among equal scores
        key.update({r.id: (r.source, r.start) for r in lite.rows(full.ids[0].tolist())})
        for r in range(len(queries)):  # at each rank PostgreSQL's chunk has the score SQLite's has there
            score_of = {key[i]: s for i, s in zip(full.ids[r].tolist(), full.scores[r].tolist())}
            assert [score_of[key_pg[i]] for i in b.ids[r].tolist()] == pytest.approx(a.scores[r].tolist(), abs=1e-5)
        assert [key[i] for i in a.ids[:, 0]] == [key_pg[i] for i in b.ids[:, 0]]  # the top chunk: no ties here
        assert np.allclose(pg.vectors(b.ids[:, 0].tolist()), lite.vectors(a.ids[:, 0].tolist()), atol=1e-6)

        (docs / "garden.txt").write_text("Prune roses in late winter.\n")
        (docs / "space" / "planets.md").rename(docs / "planets-moved.md")
        r = pg.update([docs], chunk_tokens=16, overlap=4)
        assert r.changed == ["garden.txt"] and r.moved == [("space/planets.md", "planets-moved.md")]
        top = pg.rows([int(pg.search(emb.encode(["prune roses"]), 1).ids[0, 0])])[0]
        assert top.text == "Prune roses in late winter."
    info = CorpusIndex.info(pg_url)
    assert (info.embedder, info.dim, info.files) == ("fake-bow", 256, 4) and CorpusIndex.exists(pg_url)
    with pytest.raises(RagError, match="built with embedder fake-bow"):
        CorpusIndex.open(pg_url, BagOfWords("other"))


def test_two_server_workers_share_one_cache_and_say_hit(pg_url):
    from fastapi.testclient import TestClient

    from alignkit.serve.app import CACHE_HEADER, create_app
    from tests.smoke.test_server import MAX, EchoBackend, user

    echo_a, echo_b = EchoBackend(), EchoBackend()
    with open_cache(pg_url) as cache_a, open_cache(pg_url) as cache_b:  # each worker opens the URL itself
        a, b = TestClient(create_app(echo_a, cache=cache_a)), TestClient(create_app(echo_b, cache=cache_b))
        body = {"messages": user("How do I reset my password?"), "max_tokens": MAX}
        assert a.post("/v1/chat/completions", json=body).headers[CACHE_HEADER] == "miss"
        para = {**body, "messages": user("How can I reset my password?")}
        hit = b.post("/v1/chat/completions", json=para)
        assert hit.headers[CACHE_HEADER] == "hit" and (echo_a.generated, echo_b.generated) == (1, 0)
        assert hit.json()["choices"][0]["message"]["content"] == "echo: How do I reset my password?"


class RecordingVerifier:
    """A batch verifier (the Verifier protocol): accepts candidates whose answer is in ``good``."""

    name, default_threshold = "recording", 0.5

    def __init__(self, good: set[str]):
        self.good, self.calls = good, []

    def verify(self, question, candidates):
        from alignkit.rag.policy import Decision

        self.calls.append((question, [(c.question, c.answer, c.context, round(c.score, 4)) for c in candidates]))
        return [Decision(c.answer in self.good, () if c.answer in self.good else ("no",), 0.9) for c in candidates]


def test_an_injected_verifier_judges_the_eligible_candidates_in_one_call(location):
    v = RecordingVerifier({"B"})
    with open_cache(location, check=v, threshold=None) as cache:
        cache.put_many([(Q, "A"), ("How do I reset my password now?", "B"), ("What is the capital of France?", "C")])
        assert cache.get(PARA) == "B"  # the closer candidate A is refused by the verifier, B is served
        (question, seen), *_ = v.calls
        assert question == PARA and {q for q, *_ in seen} == {Q, "How do I reset my password now?"}  # France: < 0.5
        assert [a for _, a, _, _ in seen][0] == "A" and all(ctx == "" for *_, ctx, _ in seen)
        why = cache.explain(PARA, k=3)
        assert [c.answer for c in why] == ["A", "B", "C"] and [c.hit for c in why] == [False, True, False]
        assert why[1].verdict.probability == 0.9 and cache.stats().check == "recording"


def test_a_missing_driver_is_a_one_line_error_naming_the_package(monkeypatch):
    import sys

    from alignkit.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"needs psycopg, .*: pip install 'alignkit\[postgres\]'$") as err:
        SemanticCache("postgresql://nobody@127.0.0.1:1/x", embedder=HashEmbedder())
    assert "\n" not in str(err.value)
