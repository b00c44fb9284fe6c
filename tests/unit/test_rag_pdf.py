"""PDF ingestion: the clean-up (ligatures, line-end hyphens, headers/footers/page numbers, columns), pages kept
with chunks and cited, scans counted, encrypted and damaged files as one-line errors or counted skips, and the
incremental index (content hash, crash safety) for PDFs. The small PDFs in tests/fixtures/pdf are made by
tests/fixtures/pdf/make_fixtures.py; data/d2l_pdf holds a real typeset book chapter (data/README.md)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from alignkit.rag.documents import Block, Chunk, assemble, chunk_document, cite, read_document
from alignkit.rag.errors import RagError
from alignkit.rag.pdf import Line, Page, clean_line, join_lines, margin_lines
from alignkit.rag.retrieve import Hit, Retriever
from alignkit.rag.store import CorpusIndex
from tests.unit.test_rag_postgres import pg_server, pg_url  # noqa: F401 - fixtures
from tests.unit.test_rag_store import BagOfWords, kill_while_indexing

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pdf"
BOOK = Path(__file__).resolve().parents[2] / "data" / "d2l_pdf" / "d2l_mlp_chapter.pdf"


def words(text: str) -> list[int]:
    return [1] * len(text)


def one_per_word(ws):
    return [1 for _ in ws]


# --- clean-up, pure functions --------------------------------------------------------------------
def test_clean_line_expands_ligatures_and_drops_unmapped_glyphs():
    assert clean_line("The e\ufb03cient \ufb02ow of the \ufb01rst o\ufb00er\n") == "The efficient flow of the first offer"
    assert clean_line("a(cid:12)b  c\t d") == "ab c d"
    assert clean_line("hy\xadphen\xad") == "hyphen-"  # a soft hyphen counts only at the line end


def test_join_lines_joins_hyphenated_words_but_keeps_real_hyphens():
    lines = ["The compu-", "tation is state-of-the-", "art, well-", "known and GPT-", "4 based."]
    text, starts = join_lines(lines, hyphenated={"well-known"}, joined=set())
    assert text == "The computation is state-of-the-art, well-known and GPT-4 based."
    assert starts == [0, 9, 32, 42, 56]  # where each line begins in the joined text
    assert [text[s : s + 3] for s in starts] == ["The", "tat", "art", "kno", "4 b"]
    # the document writes "wellknown" too: then the joined form wins
    assert join_lines(["well-", "known"], hyphenated={"well-known"}, joined={"wellknown"})[0] == "wellknown"
    assert join_lines(["a line", "another"], set(), set()) == ("a line another", [0, 7])


def page(number: int, lines: list[tuple[float, str]], height: float = 800) -> Page:
    return Page(number, height, [Line(72, y, 300, y + 10, text, i) for i, (y, text) in enumerate(lines)])


def test_margin_lines_drop_headers_footers_and_page_numbers():
    pages = [
        page(1, [(400, "Body text of the first page."), (30, "1")]),  # a chapter opening: the number at the bottom
        page(2, [(760, "2 CHAPTER 1. GRADIENTS"), (400, "More body text."), (300, "Body again.")]),
        page(3, [(760, "1.1 DESCENT"), (760, "3"), (400, "Body text."), (120, "dx")]),
        page(4, [(760, "1.2 STEP SIZES 4"), (400, "Text."), (30, "dx")]),
        page(5, [(760, "Top body line that is no header."), (400, "Body.")]),
    ]
    # page 2: its header starts with the printed number (printed - position = 0, as the bare "1" and "3" say);
    # page 3: a group with a bare page number; page 4: ends with its number; "dx" is too short to be a running
    # footer though it repeats; page 5: a top line that is neither repeated nor numbered stays
    assert margin_lines(pages) == [{1}, {0}, {0, 1}, {0}, set()]


def test_margin_lines_drop_a_repeated_header_without_numbers():
    pages = [page(n, [(770, "Journal of Test Documents"), (400, f"Body {n}."), (40, f"Page {n} of 3")]) for n in (1, 2, 3)]
    assert margin_lines(pages) == [{0, 2}, {0, 2}, {0, 2}]


# --- pages and citations -------------------------------------------------------------------------
def test_blocks_pages_become_the_document_page_map_and_chunk_spans():
    blocks = [
        Block("1 Descent", 1, ((0, 1),)),
        Block("aaa bbb ccc ddd", 0, ((0, 1), (8, 2))),  # "ccc" starts page 2
        Block("eee fff", 0, ((0, 3),)),
    ]
    doc = assemble("book.pdf", blocks)
    assert doc.text == "1 Descent\n\naaa bbb ccc ddd\n\neee fff"
    assert doc.pages == ((0, 1), (19, 2), (28, 3))
    assert doc.page_span(11, 18) == (1, 1) and doc.page_span(11, 26) == (1, 2) and doc.page_span(19, 35) == (2, 3)
    chunks = chunk_document(doc, one_per_word, chunk_tokens=2, overlap=0)
    assert [(c.text, c.pages) for c in chunks] == [("aaa bbb", (1, 1)), ("ccc ddd", (2, 2)), ("eee fff", (3, 3))]
    md = assemble("notes.md", [Block("x y")])
    assert md.pages == () and chunk_document(md, one_per_word)[0].pages is None


def test_citation_text():
    assert cite("book.pdf", (12, 12)) == "book.pdf page 12"
    assert cite("book.pdf", (12, 13), "1 Chapter > 1.2 Section") == "book.pdf pages 12-13 — 1 Chapter > 1.2 Section"
    assert cite("notes.md", None, "Intro") == "notes.md — Intro"
    chunk = Chunk("a.pdf", "", 0, 1, "x", 1, 0, (3, 4))
    assert cite(chunk.source, chunk.pages, chunk.heading) == "a.pdf pages 3-4"
    hit = Hit(7, "x", "a.pdf", "H", 0.5, 1, (2, 2))
    d = hit.to_dict()
    assert d["pages"] == [2, 2] and d["citation"] == "a.pdf page 2 — H"
    assert Hit.from_dict(d) == hit
    old = {k: v for k, v in d.items() if k not in ("pages", "citation")}  # a cached source from before pages
    assert Hit.from_dict(old).pages is None


# --- the edge-case PDFs --------------------------------------------------------------------------
def test_ligature_glyphs_become_letters():
    assert read_document(FIXTURES / "ligatures.pdf").text == "The efficient flow of the first offer. A final affine map."


def test_line_end_hyphens_in_a_pdf():
    assert read_document(FIXTURES / "hyphenation.pdf").text == (
        "A well-known result. The computation of gradients is state-of-the-art and well-known to every reader."
    )


def test_headers_footers_outline_and_a_paragraph_across_pages():
    doc = read_document(FIXTURES / "headers.pdf")
    assert "Journal" not in doc.text and "Page" not in doc.text
    assert [s.heading for s in doc.sections] == ["1 Descent", "2 Momentum"]
    para = "Gradient descent updates the weights along the negative gradient. The learning rate scales each step of the descent, and a schedule lowers it over time."
    assert (
        doc.text
        == f"1 Descent\n\n{para}\n\n2 Momentum\n\nMomentum keeps a running average of past gradients.\n\nWeight decay shrinks the weights toward zero at every step."
    )
    start = doc.text.index("The learning")
    assert doc.page_span(start, start + len("The learning rate scales each step of the descent")) == (1, 2)
    assert doc.page_span(doc.text.index("Weight"), len(doc.text)) == (3, 3)


def test_two_columns_are_read_column_by_column():
    doc = read_document(FIXTURES / "two_columns.pdf")
    assert doc.text == (
        "Left column line one about convolutions and their kernels sliding over images.\n\n"
        "Right column line one about recurrent networks and their hidden states."
    )


def test_a_scanned_page_is_counted():
    doc = read_document(FIXTURES / "scanned.pdf")
    assert doc.no_text_pages == (2,)
    assert doc.text == "The first page has text.\n\nThe third page has text too." and doc.pages == ((0, 1), (26, 3))


@pytest.mark.parametrize(
    "name, message",
    [("encrypted.pdf", r"encrypted\.pdf: encrypted PDF \(it needs a password\)"), ("damaged.pdf", r"damaged\.pdf: damaged PDF")],
)
def test_encrypted_and_damaged_pdfs_are_one_line_errors(name, message):
    with pytest.raises(RagError, match=message) as err:
        read_document(FIXTURES / name)
    assert "\n" not in str(err.value)


def test_without_pdfminer_a_pdf_is_a_one_line_error_naming_the_extra(tmp_path, monkeypatch):
    """pdfminer not installed (its package and any submodule a test imported before hidden): reading or indexing a
    PDF is the one-line MissingExtra naming ``alignkit[rag]``, not a ModuleNotFoundError from a submodule import."""
    import sys

    from alignkit.errors import MissingExtra

    for name in [m for m in sys.modules if m == "pdfminer" or m.startswith("pdfminer.")] + ["pdfminer"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(MissingExtra) as err:
        read_document(FIXTURES / "headers.pdf")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("reading PDF files needs pdfminer") and msg.endswith("pip install 'alignkit[rag]'")
    docs = pdf_docs(tmp_path, "headers.pdf")
    with (
        CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index,
        pytest.raises(MissingExtra, match=r"alignkit\[rag\]'$"),
    ):
        index.update([docs], chunk_tokens=64, overlap=8)


# --- the real PDF (a typeset d2l chapter) --------------------------------------------------------
@pytest.fixture(scope="module")
def book():
    return read_document(BOOK)


def test_real_pdf_is_clean_and_has_the_outline_headings(book):
    assert "CHAPTER 1. MULTILAYER PERCEPTRONS" not in book.text and "1.5. DROPOUT" not in book.text
    assert not any(c in book.text for c in "\ufb00\ufb01\ufb02\ufb03\ufb04")
    assert "transformation" in book.text and "transfor-" not in book.text  # hyphenated at a line end in the PDF
    assert "single-hidden-layer network" in book.text
    headings = [s.heading for s in book.sections]
    assert "1 Multilayer Perceptrons > 1.5 Dropout > 1.5.1 Dropout in Practice" in headings
    assert len(headings) == 27 and book.no_text_pages == ()


@pytest.mark.parametrize(
    "phrase, page",
    [
        ("parametrized ReLU (pReLU)", 6),
        ("co-adaptation", 19),
        ("We know that the brain is capable", 5),
        ("possibly absurdly many", 6),
    ],
)
def test_real_pdf_chunks_know_their_page(book, phrase, page):
    """Pages checked by reading the PDF (pdfminer's raw text of that page holds the phrase)."""
    chunks = chunk_document(book, one_per_word, chunk_tokens=128, overlap=16)
    found = [c for c in chunks if phrase in c.text]
    assert found and all(c.pages[0] <= page <= c.pages[1] for c in found)


# --- the index -----------------------------------------------------------------------------------
def pdf_docs(tmp_path, *names):
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(FIXTURES / n, docs / n)
    return docs


def test_index_stores_pages_cites_them_and_counts_scans(tmp_path):
    docs = pdf_docs(tmp_path, "headers.pdf", "scanned.pdf")
    (docs / "notes.md").write_text("# Notes\n\nMomentum and weight decay.\n")
    emb = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb, create=True) as index:
        r = index.update([docs], chunk_tokens=64, overlap=8)
        assert sorted(r.added) == ["headers.pdf", "notes.md", "scanned.pdf"] and r.no_text_pages == [("scanned.pdf", [2])]
        hits = Retriever(index, emb, k=1).retrieve("weight decay shrinks the weights toward zero")
        assert hits[0].citation == "headers.pdf pages 2-3 — 2 Momentum" and hits[0].pages == (2, 3)
        md = Retriever(index, emb, k=1).retrieve("notes momentum weight decay")[0]
        assert md.source == "notes.md" and md.pages is None and md.citation == "notes.md — Notes"
        calls = emb.calls
        again = index.update([docs], chunk_tokens=64, overlap=8)  # unchanged: nothing read, nothing embedded
        assert again.unchanged == 3 and again.chunks_added == 0 and emb.calls == calls and again.no_text_pages == []


def test_a_pdf_of_scans_only_is_skipped_as_having_no_text_layer(tmp_path):
    doc = read_document(FIXTURES / "scan_only.pdf")
    assert doc.no_text_pages == (1, 2) and doc.text == "" and doc.pages == ()
    docs = pdf_docs(tmp_path, "scan_only.pdf", "scanned.pdf")
    (docs / "empty.md").write_text("# Only a heading\n")
    with CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index:
        r = index.update([docs], chunk_tokens=64, overlap=8)
        assert r.added == ["scanned.pdf"] and r.no_text_pages == [("scan_only.pdf", [1, 2]), ("scanned.pdf", [2])]
        assert dict(r.skipped) == {
            "scan_only.pdf": "no text layer on any page (scanned?)",
            "empty.md": "no text to index after cleaning (empty, or only headings and code)",
        }


def test_bad_pdfs_are_counted_skips_or_one_line_errors(tmp_path):
    docs = pdf_docs(tmp_path, "headers.pdf", "encrypted.pdf", "damaged.pdf")
    with CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index:
        r = index.update([docs], chunk_tokens=64, overlap=8)
        assert r.added == ["headers.pdf"]
        assert dict(r.skipped) == {
            "damaged.pdf": "damaged PDF, cannot be read (PSEOF: Unexpected EOF)",
            "encrypted.pdf": "encrypted PDF (it needs a password): decrypt it first, e.g. qpdf --decrypt",
        }
    with CorpusIndex.open(tmp_path / "idx2", BagOfWords(), create=True) as index:
        with pytest.raises(RagError, match=r"damaged\.pdf: damaged PDF") as err:
            index.update([docs], chunk_tokens=64, overlap=8, on_error="error")
        assert "\n" not in str(err.value)
        assert list(index.files()) == []  # damaged.pdf comes first in order: nothing was indexed before it


def test_a_kill_while_indexing_pdfs_is_reconciled(tmp_path, monkeypatch):
    """Killed after the first PDF was committed and before the vectors were saved: the re-run embeds only the rest."""
    docs = pdf_docs(tmp_path, "headers.pdf", "two_columns.pdf")
    done = kill_while_indexing(tmp_path / "idx", docs, monkeypatch, files=1, chunk_tokens=64, overlap=8)

    emb2 = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb2) as index:
        assert emb2.calls == 0 and len(index) == done[0]  # the committed PDF's vectors come back from SQLite
        r = index.update([docs], chunk_tokens=64, overlap=8)
        assert r.added == ["two_columns.pdf"] and r.unchanged == 1 and emb2.calls == r.chunks_added
        rows = index.rows(index.vector_ids().tolist())
        assert {row.pages for row in rows if row.source == "headers.pdf"} == {(1, 2), (2, 3)}


def test_an_index_from_before_pdfs_opens_and_takes_pdfs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\n\nMomentum and weight decay.\n")
    with CorpusIndex.open(tmp_path / "idx", BagOfWords(), create=True) as index:
        index.update([docs], chunk_tokens=64, overlap=8)
    db = sqlite3.connect(tmp_path / "idx" / "chunks.sqlite")  # the schema before this change: no page columns
    db.execute("ALTER TABLE chunks DROP COLUMN page_start")
    db.execute("ALTER TABLE chunks DROP COLUMN page_end")
    db.commit()
    db.close()
    emb = BagOfWords()
    with CorpusIndex.open(tmp_path / "idx", emb) as index:
        assert [r.pages for r in index.rows(index.vector_ids().tolist())] == [None]
        shutil.copy(FIXTURES / "headers.pdf", docs / "headers.pdf")
        r = index.update([docs], chunk_tokens=64, overlap=8)
        assert r.added == ["headers.pdf"] and r.unchanged == 1 and not r.rechunked  # the markdown is not re-embedded
        assert {row.pages for row in index.rows(index.vector_ids().tolist())} == {None, (1, 2), (2, 3)}


def test_the_prompt_heads_a_pdf_passage_with_its_pages():
    from alignkit.rag.pipeline import build_messages

    hits = [Hit(1, "Dropout zeroes units.", "book.pdf", "1 MLP > 1.5 Dropout", 0.9, 1, (19, 20)), Hit(2, "x", "a.md", "", 0.5, 2)]
    user = build_messages("q", hits)[1]["content"]
    assert "[1] book.pdf pages 19-20 (1 MLP > 1.5 Dropout)\nDropout zeroes units." in user and "[2] a.md\nx" in user


def test_the_pdf_benchmark_questions_point_at_the_page_holding_their_evidence():
    """data/rag_eval/d2l_pdf_questions.jsonl: each question's evidence phrase is on its answer page and no other
    (pdfminer's raw text of each page, whitespace collapsed): the page labels the benchmark scores against."""
    import json
    import re

    from pdfminer.high_level import extract_text

    pages = [re.sub(r"\s+", " ", p) for p in extract_text(str(BOOK)).split("\f")]
    questions = [json.loads(line) for line in (BOOK.parents[1] / "rag_eval" / "d2l_pdf_questions.jsonl").open()]
    assert len(questions) == 22
    for q in questions:
        assert [i + 1 for i, p in enumerate(pages) if q["evidence"] in p] == [q["page"]], q


def test_postgres_store_keeps_pdf_pages(tmp_path, pg_url):  # noqa: F811
    """The server store writes and reads the page columns like SQLite, and a table from before PDFs gains them."""
    docs = pdf_docs(tmp_path, "headers.pdf")
    (docs / "notes.md").write_text("# Notes\n\nMomentum and weight decay.\n")
    emb = BagOfWords()
    with CorpusIndex.open(pg_url, emb, create=True) as pg, CorpusIndex.open(tmp_path / "idx", emb, create=True) as lite:
        pg.update([docs], chunk_tokens=64, overlap=8)
        lite.update([docs], chunk_tokens=64, overlap=8)
        pages = {(r.source, r.pages) for r in pg.rows(pg.search(emb.encode(["weight decay momentum"]), 10).ids[0].tolist())}
        assert pages == {(r.source, r.pages) for r in lite.rows(lite.vector_ids().tolist())}
        assert pages == {("headers.pdf", (1, 2)), ("headers.pdf", (2, 3)), ("notes.md", None)}
        pg._conn.execute(pg._sql("ALTER TABLE {C} DROP COLUMN page_start, DROP COLUMN page_end"))
        pg._conn.commit()
    with CorpusIndex.open(pg_url, emb) as pg:  # reopened: the columns come back (NULL), nothing is re-chunked
        ids = [i for i in pg.search(emb.encode(["weight decay momentum"]), 10).ids[0].tolist() if i >= 0]
        assert {r.pages for r in pg.rows(ids)} == {None} and len(ids) == 3
