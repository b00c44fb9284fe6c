"""A PDF book end to end: `alignkit rag index` on a folder mixing the real PDF (a typeset d2l chapter), a scan, an
encrypted PDF and markdown; then `alignkit rag ask` (real MiniLM, real tiny chat model) and the Python API, whose
first source cites the page that answers the question."""

from __future__ import annotations

import shutil
from pathlib import Path

from alignkit.cli import main
from tests.smoke.test_rag_smoke import embedder, shared_embedder  # noqa: F401 - the fixtures

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "data" / "d2l_pdf" / "d2l_mlp_chapter.pdf"
FIXTURES = REPO / "tests" / "fixtures" / "pdf"


def test_index_a_pdf_book_and_cite_the_answer_page(tmp_path, tiny_model_dir, shared_embedder, capsys):  # noqa: F811
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(BOOK, docs / "book.pdf")
    shutil.copy(FIXTURES / "scanned.pdf", docs / "scans.pdf")
    shutil.copy(FIXTURES / "encrypted.pdf", docs / "locked.pdf")
    (docs / "notes.md").write_text("# Notes\n\nBoil spaghetti for ten minutes.\n")
    index = str(tmp_path / "index")
    args = ["rag", "index", "--docs", str(docs), "--index", index, "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 new, 0 changed, 0 unchanged, 0 moved, 0 removed, 1 skipped" in out
    assert "  skipped locked.pdf: encrypted PDF (it needs a password)" in out

    assert "  no text layer: scans.pdf page 2 (scans? not indexed)" in out

    ask = ["rag", "ask", "--index", index, "--model", str(tiny_model_dir), "--top-k", "3", "--max-new-tokens", "4"]
    assert main([*ask, "Why is dropout usually turned off at test time?"]) == 0
    sources = capsys.readouterr().out.split("Sources:\n")[1]
    # "Typically, we disable dropout at test time" is on page 20 of the PDF
    assert sources.startswith(
        "  [1] book.pdf page 20 — 1 Multilayer Perceptrons > 1.5 Dropout > 1.5.1 Dropout in Practice (score "
    )

    from alignkit.rag.pipeline import RagPipeline  # the Python API cites the same page
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    class Echo:  # a backend that needs no model: the sources are the point here
        model_id = "echo"

        def chat(self, conversations, settings):
            from types import SimpleNamespace

            return [SimpleNamespace(text="ok", finish_reason="stop") for _ in conversations]

    with CorpusIndex.open(index, shared_embedder) as idx:
        answer = RagPipeline(Retriever(idx, shared_embedder, k=3), Echo()).answer("Is dropout used at test time?")
    assert answer.sources[0].pages == (20, 20) and answer.sources[0].citation.startswith("book.pdf page 20 — ")

    assert main(args) == 0  # nothing changed: nothing embedded
    assert "0 new, 0 changed, 3 unchanged, 0 moved, 0 removed, 1 skipped files; chunks +0 -0" in capsys.readouterr().out
    assert main([*args, "--on-error", "error"]) == 2  # the encrypted PDF stops indexing with one line
    err = capsys.readouterr().err
    assert "locked.pdf: encrypted PDF (it needs a password)" in err and err.count("\n") == 1
