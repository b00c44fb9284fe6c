"""A PDF book end to end: `alignkit rag index` on a folder mixing the real PDF (a typeset d2l chapter), a scan, an
encrypted PDF and markdown; then a question answered by the pipeline (real MiniLM, real tiny chat model) whose
first source cites the page that answers it."""

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

    from alignkit.models.backends import GenerationSettings, load_backend
    from alignkit.rag.pipeline import RagPipeline
    from alignkit.rag.retrieve import Retriever
    from alignkit.rag.store import CorpusIndex

    with CorpusIndex.open(index, shared_embedder) as idx:
        retriever = Retriever(idx, shared_embedder, k=3)
        rag = RagPipeline(
            retriever, load_backend(str(tiny_model_dir), device="cpu"), settings=GenerationSettings(max_new_tokens=4)
        )
        answer = rag.answer("Why is dropout usually turned off at test time?")
    first = answer.sources[0]
    assert first.source == "book.pdf" and first.pages == (20, 20)  # "Typically, we disable dropout at test time" is on page 20
    assert first.citation == "book.pdf page 20 — 1 Multilayer Perceptrons > 1.5 Dropout > 1.5.1 Dropout in Practice"

    assert main(args) == 0  # nothing changed: nothing embedded
    assert "0 new, 0 changed, 3 unchanged, 0 moved, 0 removed, 1 skipped files; chunks +0 -0" in capsys.readouterr().out
