"""The corpus index (persist, reload, incremental updates, crash reconcile), the retriever (top-k, MMR) and the
pipeline (cache before retrieval, context keys)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import pytest

from alignkit.rag.errors import RagError
from alignkit.rag.pipeline import RagPipeline, build_messages
from alignkit.rag.retrieve import Hit, Retriever, mmr_select
from alignkit.rag.store import CorpusIndex
from alignkit.rag.vectors import SearchResult, VectorIndex


class BagOfWords:
    """A deterministic embedder: hashed bag of lower-cased words, L2-normalised; one token per word."""

    def __init__(self, name: str = "fake-bow", dim: int = 256):
        self.name, self.dim = name, dim
        self.calls = 0  # texts encoded

    def encode(self, texts):
        self.calls += len(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


DOCS = {
    "pasta.md": "# Pasta\n\nBoil spaghetti in salted water for ten minutes.\n\n## Sauce\n\nTomato sauce simmers with garlic and basil.\n",
    "space/planets.md": "# Planets\n\nJupiter is the largest planet of the solar system.\n",
    "garden.txt": "Water tomato plants at the roots every morning.\n\nMulch keeps the soil moist.\n",
    "python.html": "<h1>Python lists</h1><p>A list grows with append and shrinks with pop.</p><script>x=1</script>",
}


def write_docs(root, docs=DOCS):
    for rel, text in docs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def build(tmp_path, emb=None, **kw):
    docs = write_docs(tmp_path / "docs")
    emb = emb or BagOfWords()
    index = CorpusIndex.open(tmp_path / "idx", emb, create=True)
    report = index.update([docs], chunk_tokens=kw.pop("chunk_tokens", 16), overlap=kw.pop("overlap", 4), **kw)
    return docs, emb, index, report


def consistent(index: CorpusIndex) -> set[int]:
    sql = {r[0] for r in index._db.execute("SELECT id FROM chunks")}
    assert sql == set(index.vector_ids().tolist())
    return sql


# --- the index -----------------------------------------------------------------------------------
def test_index_persists_and_reloads(tmp_path):
    _, emb, index, report = build(tmp_path)
    assert sorted(report.added) == ["garden.txt", "pasta.md", "python.html", "space/planets.md"]
    ids = consistent(index)
    q = emb.encode(["largest planet jupiter"])
    before = index.search(q, 3)
    version = index.version
    index.close()

    info = CorpusIndex.info(tmp_path / "idx")
    assert (info.embedder, info.dim, info.files, info.chunks, info.version) == ("fake-bow", 256, 4, len(ids), version)
    with CorpusIndex.open(tmp_path / "idx", BagOfWords()) as again:
        after = again.search(q, 3)
        assert np.array_equal(before.ids, after.ids) and np.allclose(before.scores, after.scores)
        top = again.rows([int(after.ids[0, 0])])[0]
        assert (top.source, top.heading) == ("space/planets.md", "Planets") and "Jupiter" in top.text
        assert again.version == version and consistent(again) == ids
        pasta = [r for r in again.rows(sorted(ids)) if r.source == "pasta.md"]
        assert [r.heading for r in pasta] == ["Pasta", "Pasta > Sauce"]


def test_reindex_skips_unchanged_replaces_changed_removes_deleted(tmp_path):
    docs, emb, index, _ = build(tmp_path)
    v0 = index.version
    rows0 = {r.source: r for r in index.rows(sorted(consistent(index)))}

    emb.calls = 0
    r = index.update([docs], chunk_tokens=16, overlap=4)
    assert (r.unchanged, r.added, r.changed, r.removed, r.chunks_added) == (4, [], [], [], 0)
    assert emb.calls == 0 and index.version == v0  # nothing re-embedded, same version

    (docs / "garden.txt").write_text("Prune roses in late winter.\n")
    (docs / "space" / "planets.md").unlink()
    r = index.update([docs], chunk_tokens=16, overlap=4)
    assert (r.unchanged, r.changed, r.removed) == (2, ["garden.txt"], ["space/planets.md"])
    rows = {x.source: x for x in index.rows(sorted(consistent(index)))}
    assert "space/planets.md" not in rows and rows["garden.txt"].text == "Prune roses in late winter."
    assert rows0["garden.txt"].id not in index.vector_ids() and rows0["space/planets.md"].id not in index.vector_ids()
    assert set(index.files()) == {"garden.txt", "pasta.md", "python.html"}
    assert index.version != v0


def test_a_moved_file_keeps_its_chunks_and_vectors(tmp_path):
    docs, emb, index, _ = build(tmp_path)
    before = {r.id: r for r in index.rows(sorted(consistent(index)))}
    (docs / "space" / "planets.md").rename(docs / "planets-moved.md")
    emb.calls = 0
    r = index.update([docs], chunk_tokens=16, overlap=4)
    assert r.moved == [("space/planets.md", "planets-moved.md")] and (r.removed, r.added, emb.calls) == ([], [], 0)
    after = {x.id: x for x in index.rows(sorted(consistent(index)))}
    assert after.keys() == before.keys()
    assert {x.source for x in after.values()} == {"pasta.md", "planets-moved.md", "garden.txt", "python.html"}
    assert "planets-moved.md" in index.files() and "space/planets.md" not in index.files()


def test_changing_the_chunking_rechunks_every_file(tmp_path):
    docs, _, index, _ = build(tmp_path)
    r = index.update([docs], chunk_tokens=8, overlap=0)
    assert r.rechunked and r.unchanged == 0 and len(r.changed) == 4
    assert all(x.text.count(" ") <= 7 for x in index.rows(sorted(consistent(index))))
    assert any(x.text.count(" ") > 7 for x in build(tmp_path / "again")[2].rows(range(1, 50)))  # 16 tokens: longer


def test_a_rechunk_stopped_midway_finishes_on_the_next_run(tmp_path):
    docs, emb, index, _ = build(tmp_path)
    real, calls = emb.encode, {"n": 0}

    def fail_second(texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(texts)

    emb.encode = fail_second
    with pytest.raises(KeyboardInterrupt):
        index.update([docs], chunk_tokens=8, overlap=0)
    emb.encode = real
    r = index.update([docs], chunk_tokens=8, overlap=0)
    assert r.unchanged == 1 and len(r.changed) == 3  # the one file re-chunked before the stop is kept
    assert all(x.text.count(" ") <= 7 for x in index.rows(sorted(consistent(index))))


def test_empty_and_undecodable_files_are_reported_not_raised(tmp_path):
    docs = write_docs(tmp_path / "docs")
    (docs / "empty.md").write_text("")
    (docs / "only-code.md").write_text("```python\nx = 1\n```\n")
    (docs / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (docs / "ignored.docx").write_bytes(b"PK")  # not a supported suffix: not picked up from a directory
    (docs / "cut.pdf").write_bytes(b"%PDF-1.4\n1 0 obj")  # a PDF that cannot be parsed
    with CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index:
        r = index.update([docs], chunk_tokens=16, overlap=4)
    skipped = dict(r.skipped)
    assert set(skipped) == {"empty.md", "only-code.md", "latin1.txt", "cut.pdf"}
    assert "no text" in skipped["empty.md"] and "UTF-8" in skipped["latin1.txt"]
    assert skipped["cut.pdf"].startswith("damaged PDF") and "\n" not in skipped["cut.pdf"]
    assert len(r.added) == 4


def test_a_file_that_becomes_empty_loses_its_chunks(tmp_path):
    docs, _, index, _ = build(tmp_path)
    (docs / "pasta.md").write_text("\n")
    r = index.update([docs], chunk_tokens=16, overlap=4)
    assert r.skipped[0][0] == "pasta.md" and "no text" in r.skipped[0][1] and r.chunks_removed == 2
    assert "pasta.md" not in index.files()
    assert all(x.source != "pasta.md" for x in index.rows(sorted(consistent(index))))


def test_opening_with_another_embedder_is_a_one_line_error(tmp_path):
    _, _, index, _ = build(tmp_path)
    index.close()
    with pytest.raises(RagError, match=r"built with embedder fake-bow \(dim 256\), not other \(dim 256\)") as err:
        CorpusIndex.open(tmp_path / "idx", BagOfWords("other"))
    assert "\n" not in str(err.value)
    with pytest.raises(RagError, match="dim 256.*dim 64"):
        CorpusIndex.open(tmp_path / "idx", BagOfWords("fake-bow", dim=64))
    with pytest.raises(RagError, match="no RAG index here"):
        CorpusIndex.open(tmp_path / "nothing", BagOfWords())


def test_missing_docs_path_is_an_error(tmp_path):
    with (
        CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index,
        pytest.raises(RagError, match="nope: no such file"),
    ):
        index.update([str(tmp_path / "nope")])


def test_a_crash_before_the_vectors_are_saved_is_reconciled_on_open(tmp_path, monkeypatch):
    docs, _, index, _ = build(tmp_path)
    old = {r.source: r.id for r in index.rows(sorted(consistent(index)))}
    index.close()
    saved_ids = set(VectorIndex.load(tmp_path / "idx" / "vectors").ids().tolist())

    (docs / "garden.txt").write_text("Prune roses in late winter.\n")
    monkeypatch.setattr(VectorIndex, "save", lambda self, path: None)  # killed after SQLite commits, before the save
    with CorpusIndex.open(tmp_path / "idx", BagOfWords()) as index:
        index.update([docs], chunk_tokens=16, overlap=4)
    monkeypatch.undo()
    on_disk = set(VectorIndex.load(tmp_path / "idx" / "vectors").ids().tolist())
    assert on_disk == saved_ids and old["garden.txt"] in on_disk  # the vectors on disk are the stale ones

    emb = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb) as index:
        ids = consistent(index)  # the stale vector is gone, the new chunk has one
        assert old["garden.txt"] not in ids and emb.calls == 0  # its embedding was committed with the chunk
        hit = index.rows([int(index.search(emb.encode(["prune roses"]), 1).ids[0, 0])])[0]
        assert hit.text == "Prune roses in late winter."
    assert set(VectorIndex.load(tmp_path / "idx" / "vectors").ids().tolist()) == ids  # and the fix was saved


def kill_while_indexing(index_dir, docs, monkeypatch, *, files: int, **update) -> list[int]:
    """Index ``docs`` into a new index at ``index_dir`` with a :class:`BagOfWords` embedder that is killed when
    asked to embed the file after the first ``files`` (one encode call per file). The kill is a SystemExit that
    stands for kill -9: the vectors are never saved (``VectorIndex.save`` is disabled) and the database is just
    closed. Returns the number of chunks embedded for each file committed before the kill. ``update``: the
    keyword arguments of :meth:`CorpusIndex.update`. Undoes ``monkeypatch`` when done."""
    emb = BagOfWords()
    real = emb.encode
    per_file: list[int] = []

    def killed_after(texts):
        if len(per_file) == files:
            raise SystemExit("killed")  # nothing after it runs (the save is disabled below)
        per_file.append(len(texts))
        return real(texts)

    emb.encode = killed_after
    monkeypatch.setattr(VectorIndex, "save", lambda self, path: None)
    index = CorpusIndex.open(index_dir, emb, create=True)
    with pytest.raises(SystemExit):
        index.update([docs], **update)
    index._db.close()
    monkeypatch.undo()
    return per_file


def test_a_kill_midway_keeps_the_embeddings_committed_before_it(tmp_path, monkeypatch):
    """Killed (no save, no cleanup) after 2 of 4 files were committed: the re-run embeds only the other 2."""
    docs = write_docs(tmp_path / "docs")
    per_file = kill_while_indexing(tmp_path / "idx", docs, monkeypatch, files=2, chunk_tokens=16, overlap=4)
    assert not (tmp_path / "idx" / "vectors").exists()  # no vector was ever saved

    emb2 = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb2) as index:
        assert emb2.calls == 0  # the 2 committed files' vectors come back from SQLite, not the embedder
        assert len(consistent(index)) == sum(per_file)
        report = index.update([docs], chunk_tokens=16, overlap=4)
        assert len(report.added) == 2 and report.unchanged == 2
        assert emb2.calls == report.chunks_added  # only the chunks of the 2 files not committed were embedded
        ids = consistent(index)
    fresh = BagOfWords()
    _, _, full, _ = build(tmp_path / "fresh", fresh)
    assert len(ids) == len(full) and emb2.calls + sum(per_file) == fresh.calls


def test_an_index_without_stored_embeddings_is_embedded_again(tmp_path):
    import shutil

    _, _, index, _ = build(tmp_path)
    ids = consistent(index)
    index._db.execute("UPDATE chunks SET embedding = NULL")  # as an index written before embeddings were stored
    index.close()
    shutil.rmtree(tmp_path / "idx" / "vectors")
    emb = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb) as index:
        assert consistent(index) == ids and emb.calls == len(ids)
        assert index.reconcile() == (0, 0)
    shutil.rmtree(tmp_path / "idx" / "vectors")
    emb = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb) as index:  # reconcile stored what it embedded
        assert consistent(index) == ids and emb.calls == 0


def test_lost_vector_directory_is_rebuilt_from_sqlite(tmp_path):
    import shutil

    _, _, index, _ = build(tmp_path)
    ids = consistent(index)
    index.close()
    shutil.rmtree(tmp_path / "idx" / "vectors")
    with CorpusIndex.open(tmp_path / "idx", BagOfWords()) as index:
        assert consistent(index) == ids


# --- retrieval -----------------------------------------------------------------------------------
def test_real_minilm_retrieves_the_right_chunk(tmp_path):
    from alignkit.rag.embed import Embedder

    emb = Embedder()
    _, _, index, _ = build(tmp_path, emb, chunk_tokens=64, overlap=8)
    retriever = Retriever(index, emb, k=3)
    for question, source in [
        ("How long do I cook spaghetti?", "pasta.md"),
        ("Which planet is the biggest?", "space/planets.md"),
        ("How do I remove the last element from a Python list?", "python.html"),
        ("When should I water my tomatoes?", "garden.txt"),
    ]:
        hits = retriever.retrieve(question)
        assert hits[0].source == source, (question, hits)
        assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score
    with pytest.raises(RagError, match="built with embedder"):
        Retriever(index, BagOfWords())


def test_mmr_prefers_a_diverse_second_pick():
    q = np.array([1.0, 0.0, 0.0])
    a = np.array([0.9, 0.436, 0.0])  # relevant
    a2 = np.array([0.89, 0.456, 0.0])  # relevant, near-duplicate of a
    b = np.array([0.8, 0.0, 0.6])  # a bit less relevant, different
    cands = np.stack([a, a2, b]) / np.linalg.norm(np.stack([a, a2, b]), axis=1, keepdims=True)
    assert mmr_select(q, cands, 2, lam=1.0) == [0, 1]  # λ = 1: plain relevance order
    assert mmr_select(q, cands, 2, lam=0.5) == [0, 2]  # the near-duplicate is penalised
    assert mmr_select(q, cands, 5, lam=0.5) == [0, 2, 1]  # k past N returns every candidate once
    assert mmr_select(q, cands[:0], 2) == []


@dataclass
class Row:
    id: int
    source: str
    heading: str
    start: int
    end: int
    text: str
    hash: str = ""
    pages: tuple[int, int] | None = None  # as ChunkRow: None for a non-PDF file


class HandIndex:
    """An index over hand-made vectors (search is exact cosine)."""

    embedder_name, version, path = "hand", "v1", "hand-index"

    def __init__(self, vecs: dict[int, list[float]]):
        self.vecs = {i: np.asarray(v, np.float32) / np.linalg.norm(v) for i, v in vecs.items()}

    def search(self, q, k):
        ids = sorted(self.vecs, key=lambda i: -float(self.vecs[i] @ q[0]))[:k]
        return SearchResult(np.array([ids]), np.array([[float(self.vecs[i] @ q[0]) for i in ids]], np.float32))

    def vectors(self, ids):
        return np.stack([self.vecs[int(i)] for i in ids])

    def rows(self, ids):
        return [Row(int(i), f"doc{i}.md", f"H{i}", 0, 1, f"text {i}") for i in ids]


class FixedQuery:
    name, dim = "hand", 3

    def encode(self, texts):
        return np.array([[1.0, 0.0, 0.0]], np.float32)

    def count_tokens(self, text):
        return len(text.split())


def test_retriever_with_mmr_reranks_candidates():
    index = HandIndex({1: [0.9, 0.436, 0], 2: [0.89, 0.456, 0], 3: [0.8, 0, 0.6], 4: [0, 1, 0]})
    plain = Retriever(index, FixedQuery(), k=2).retrieve("q")
    diverse = Retriever(index, FixedQuery(), k=2, mmr=True, mmr_lambda=0.5, fetch_k=4).retrieve("q")
    assert [h.chunk_id for h in plain] == [1, 2]
    assert [h.chunk_id for h in diverse] == [1, 3] and [h.rank for h in diverse] == [1, 2]
    assert diverse[1].score == pytest.approx(0.8, abs=1e-6)  # the score stays the cosine to the question
    assert (diverse[1].source, diverse[1].heading, diverse[1].text) == ("doc3.md", "H3", "text 3")


# --- the pipeline --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    max_new_tokens: int = 16
    temperature: float = 0.0

    def key(self) -> str:
        return f"max_new_tokens={self.max_new_tokens},temperature={self.temperature}"


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class FakeBackend:
    def __init__(self, model_id="tiny"):
        self.model_id, self.conversations = model_id, []

    def chat(self, conversations, settings):
        self.conversations += conversations
        return [Completion(" Boil it for ten minutes [1]. ") for _ in conversations]

    def stream(self, conversation, settings):
        yield from ()


class FakeRetriever:
    def __init__(self, version="v1"):
        self.index = type("I", (), {"version": version})()
        self.embedder = BagOfWords()
        self.calls = 0

    def key(self):
        return "k=2,mmr=False"

    def retrieve(self, question):
        self.calls += 1
        return [
            Hit(7, "Boil spaghetti ten minutes.", "pasta.md", "Pasta", 0.9, 1),
            Hit(9, "Tomato sauce.", "pasta.md", "Pasta > Sauce", 0.5, 2),
        ]


class DictCache:
    """The SemanticCache API over exact (question, context) keys."""

    def __init__(self):
        self.store, self.gets = {}, []

    def get(self, question, context=None):
        self.gets.append((question, context))
        return self.store.get((question, context))

    def put(self, question, answer, context=None):
        self.store[(question, context)] = answer


def test_a_cache_hit_calls_neither_retriever_nor_backend():
    retriever, backend, cache = FakeRetriever(), FakeBackend(), DictCache()
    pipe = RagPipeline(retriever, backend, cache=cache, settings=Settings())
    first = pipe.answer("How long to boil pasta?")
    assert not first.cached and first.text == "Boil it for ten minutes [1]."
    assert (retriever.calls, len(backend.conversations)) == (1, 1)
    stored = json.loads(cache.store[("How long to boil pasta?", first.context_key)])
    assert stored["answer"] == first.text and [s["chunk_id"] for s in stored["sources"]] == [7, 9]

    again = pipe.answer("How long to boil pasta?")
    assert again.cached and again.text == first.text and again.sources == first.sources
    assert (retriever.calls, len(backend.conversations)) == (1, 1)  # neither ran


def test_a_cached_value_the_pipeline_cannot_read_is_a_miss():
    retriever, backend, cache = FakeRetriever(), FakeBackend(), DictCache()
    pipe = RagPipeline(retriever, backend, cache=cache, settings=Settings())
    cache.store[("q?", pipe.context_key())] = "plain text from elsewhere"
    assert not pipe.answer("q?").cached and retriever.calls == 1


def test_context_key_changes_with_model_settings_and_index_version():
    def key(model="tiny", settings=Settings(), version="v1"):
        return RagPipeline(FakeRetriever(version), FakeBackend(model), settings=settings).context_key()

    base = key()
    assert base == key()
    assert len({base, key(model="other"), key(settings=Settings(max_new_tokens=17)), key(version="v2")}) == 4
    assert "model=tiny" in base and "embedder=fake-bow" in base and "index=v1" in base


def test_prompt_numbers_passages_and_asks_for_citations():
    retriever, backend = FakeRetriever(), FakeBackend()
    RagPipeline(retriever, backend, settings=Settings()).answer("How long?")
    system, user = backend.conversations[0]
    assert system["role"] == "system" and "[1]" in system["content"]
    assert "[1] pasta.md (Pasta)\nBoil spaghetti ten minutes." in user["content"]
    assert "[2] pasta.md (Pasta > Sauce)\nTomato sauce." in user["content"]
    assert user["content"].rstrip().endswith("cite them as [1], [2].") and "Question: How long?" in user["content"]
    assert "(no passages were found)" in build_messages("q", [])[1]["content"]


def test_context_budget_keeps_leading_passages():
    retriever, backend = FakeRetriever(), FakeBackend()
    answer = RagPipeline(retriever, backend, settings=Settings(), max_context_tokens=4).answer("q")
    assert [h.chunk_id for h in answer.sources] == [7]  # the second passage would pass 4 tokens
    assert "[2] pasta.md" not in backend.conversations[0][1]["content"]


class SmallContextBackend(FakeBackend):
    """A backend with a context of ``limit`` tokens whose prompt tokens are its words (the system message's too)."""

    def __init__(self, limit):
        super().__init__()
        self.max_positions = limit

    def prompt_tokens(self, conversation):
        return sum(len(m["content"].split()) for m in conversation)


def test_passages_past_the_model_context_are_left_out_and_counted():
    settings = Settings(max_new_tokens=10)
    both = build_messages("q", FakeRetriever().retrieve("q"))
    one = build_messages("q", FakeRetriever().retrieve("q")[:1])
    words = [sum(len(m["content"].split()) for m in c) for c in (one, both)]  # hand count: the two prompts' words
    fits_both = SmallContextBackend(words[1] + 10)  # exactly room for both passages and max_new_tokens
    answer = RagPipeline(FakeRetriever(), fits_both, settings=settings).answer("q")
    assert [h.chunk_id for h in answer.sources] == [7, 9] and answer.left_out == 0
    fits_one = SmallContextBackend(words[1] + 9)  # one token short: the second passage is left out
    answer = RagPipeline(FakeRetriever(), fits_one, settings=settings).answer("q")
    assert [h.chunk_id for h in answer.sources] == [7] and answer.left_out == 1
    assert "[2] pasta.md" not in fits_one.conversations[0][1]["content"]
    too_small = SmallContextBackend(words[0] - 1)  # not even one passage fits: the first is still given (the
    answer = RagPipeline(FakeRetriever(), too_small, settings=settings).answer("q")  # backend's error says so)
    assert [h.chunk_id for h in answer.sources] == [7] and answer.left_out == 1
