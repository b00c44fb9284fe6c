"""Readers, cleaning and chunking: edge cases, overlap, heading boundaries, offsets, HTML and d2l markup."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alignkit.rag.documents import (
    Chunk,
    assemble,
    chunk_document,
    clean_text,
    html_blocks,
    markdown_blocks,
    read_document,
    word_counter,
)
from alignkit.rag.errors import RagError

REPO = Path(__file__).resolve().parents[2]
D2L = REPO / "data" / "d2l"


class CharEmbedder:
    """count_tokens: one token per started 5 characters of each word (so a long word is many tokens)."""

    name, dim = "fake-chars", 4

    def count_tokens(self, text: str) -> int:
        return sum(math.ceil(len(w) / 5) for w in text.split())


def count():
    return word_counter(CharEmbedder())


def chunks_of(text: str, kind: str = "markdown", chunk_tokens: int = 20, overlap: int = 4) -> tuple[str, list[Chunk]]:
    doc = clean_text(text, kind, "doc.md")
    return doc.text, chunk_document(doc, count(), chunk_tokens=chunk_tokens, overlap=overlap)


def assert_offsets(text: str, chunks: list[Chunk]) -> None:
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.text == c.text.strip() and c.text


# --- edge cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   \n\n  \n", "```python\nprint(1)\n```\n", ":label:`sec_x`\n"])
def test_empty_documents_give_no_chunks(text):
    assert chunks_of(text)[1] == []


def test_doc_shorter_than_one_chunk_is_one_chunk():
    text, chunks = chunks_of("# Title\n\nA short body of six words.\n")
    assert len(chunks) == 1
    assert chunks[0].text == "A short body of six words." and chunks[0].heading == "Title"
    assert_offsets(text, chunks)


def test_heading_without_body_gives_no_chunk_but_names_its_subsections():
    text, chunks = chunks_of("# Outer\n\n## Empty\n\n## Inner\n\nbody text here\n")
    doc = clean_text("# Outer\n\n## Empty\n\n## Inner\n\nbody text here\n", "markdown", "d.md")
    assert [s.heading for s in doc.sections] == ["Outer", "Outer > Empty", "Outer > Inner"]
    assert [s.body_start == s.body_end for s in doc.sections] == [True, True, False]
    assert [(c.heading, c.text) for c in chunks] == [("Outer > Inner", "body text here")]


def test_heading_path_pops_to_the_right_level():
    md = "# A\n\na\n\n## B\n\nb\n\n### C\n\nc\n\n## D\n\nd\n\n# E\n\ne\n"
    _, chunks = chunks_of(md)
    assert [(c.heading, c.text) for c in chunks] == [("A", "a"), ("A > B", "b"), ("A > B > C", "c"), ("A > D", "d"), ("E", "e")]


def test_text_before_the_first_heading_has_an_empty_heading():
    _, chunks = chunks_of("preamble words\n\n# H\n\nbody\n")
    assert [(c.heading, c.text) for c in chunks] == [("", "preamble words"), ("H", "body")]


def test_very_long_paragraph_without_newline_is_split_within_budget():
    words = [f"w{i:03d}" for i in range(500)]  # each word is one token
    text, chunks = chunks_of("# H\n\n" + " ".join(words), chunk_tokens=50, overlap=10)
    assert len(chunks) > 10
    assert all(c.n_tokens <= 50 and CharEmbedder().count_tokens(c.text) == c.n_tokens for c in chunks)
    assert_offsets(text, chunks)
    covered = set()
    for c in chunks:
        covered.update(c.text.split())
    assert covered == set(words)  # nothing lost


def test_a_single_word_longer_than_a_chunk_is_cut_into_pieces():
    blob = "x" * 1000  # 200 tokens with no whitespace
    text, chunks = chunks_of("# H\n\n" + blob, chunk_tokens=30, overlap=0)
    assert all(c.n_tokens <= 30 for c in chunks)
    assert "".join(c.text for c in chunks) == blob
    assert_offsets(text, chunks)


@pytest.mark.parametrize("overlap", [0, 1, 5, 12])
def test_consecutive_chunks_overlap_by_at_most_overlap_tokens(overlap):
    words = " ".join(f"w{i:03d}" for i in range(300))
    text, chunks = chunks_of("# H\n\n" + words, chunk_tokens=25, overlap=overlap)
    counter = CharEmbedder()
    for a, b in zip(chunks, chunks[1:]):
        assert b.start > a.start  # always progresses
        if overlap == 0:
            assert b.start > a.end
        else:
            shared = text[b.start : a.end]
            assert a.end > b.start and counter.count_tokens(shared) == overlap  # one-token words: exactly `overlap`
            assert a.text.endswith(shared) and b.text.startswith(shared)


def test_chunks_never_cross_a_heading():
    md = "\n\n".join(f"## S{i}\n\n" + " ".join(f"s{i}w{j}" for j in range(57)) for i in range(5))
    doc = clean_text("# Top\n\n" + md, "markdown", "d.md")
    chunks = chunk_document(doc, count(), chunk_tokens=20, overlap=5)
    spans = {s.heading: (s.body_start, s.body_end) for s in doc.sections}
    for c in chunks:
        start, end = spans[c.heading]
        assert start <= c.start < c.end <= end
        section = c.heading.split(" > ")[-1].lower()
        assert all(w.startswith(section) for w in c.text.split())
    assert {c.heading for c in chunks} == {f"Top > S{i}" for i in range(5)}


def test_chunks_prefer_to_end_at_a_sentence():
    sentence = "one two three four five six seven eight nine ten."
    text, chunks = chunks_of("# H\n\n" + " ".join([sentence] * 12), chunk_tokens=45, overlap=0)
    assert all(c.text.endswith(".") for c in chunks)
    assert_offsets(text, chunks)


def test_bad_chunk_settings_are_errors():
    doc = clean_text("text", "text", "a.txt")
    with pytest.raises(RagError, match="overlap"):
        chunk_document(doc, count(), chunk_tokens=10, overlap=10)


# --- cleaning ------------------------------------------------------------------------------------
def test_html_drops_script_style_head_and_keeps_headings():
    html = """<html><head><title>T</title><style>body {color: red}</style></head>
    <body><script>var secret = "nope";</script>
    <h1>Main &amp; Title</h1><p>First <b>para</b>graph&nbsp;here.</p>
    <h2>Sub</h2><div>Second<br>line</div><noscript>no js</noscript>
    <h3></h3><ul><li>item one</li><li>item two</li></ul></body></html>"""
    doc = clean_text(html, "html", "p.html")
    for gone in ("secret", "color", "nope", "no js", "<", ">", "T\n"):
        assert gone not in doc.text
    assert "Main & Title" in doc.text and "First paragraph\xa0here." in doc.text
    assert [s.heading for s in doc.sections] == ["Main & Title", "Main & Title > Sub"]
    chunks = chunk_document(doc, count(), chunk_tokens=50, overlap=0)
    assert [c.heading for c in chunks] == ["Main & Title", "Main & Title > Sub"]
    assert "item one" in chunks[1].text and "Second\nline" in chunks[1].text
    assert_offsets(doc.text, chunks)


def test_html_blocks_handle_unclosed_tags_and_pre():
    blocks = html_blocks("<p>open paragraph<pre>  keep\n    indent</pre><h2>H</h2>tail")
    assert [b.text for b in blocks] == ["open paragraph", "  keep\n    indent", "H", "tail"]
    assert [b.level for b in blocks] == [0, 0, 2, 0]


def test_d2l_markdown_markers_are_cleaned():
    md = """```{.python .input}
%load_ext d2lbook.tab
```

# Linear Regression
:label:`sec_linear_regression`

As shown in :numref:`fig_x` and :eqref:`eq_loss`, see :citet:`Legendre.1805` and :cite:`Gauss.1809`.
We [**implement the loss**] with `torch`, read [the docs](https://x.org) and ![a cat](img/cat.svg).
*Regression* is **useful**.

$$y = wx + b$$
:eqlabel:`eq_loss`

:begin_tab:`mxnet`
MXNet only words.
:end_tab:

:begin_tab:`pytorch`
PyTorch words.
:end_tab:

```python
def hidden(): pass
```
"""
    doc = clean_text(md, "markdown", "lr.md")
    assert doc.text.startswith("Linear Regression\n\n")
    for gone in (
        ":label:",
        "sec_linear",
        ":numref:",
        ":eqref:",
        ":cite",
        "Gauss",
        "d2lbook",
        "hidden",
        "MXNet",
        "**",
        "`",
        "https",
        "begin_tab",
        "eqlabel",
        "*Regression*",
    ):
        assert gone not in doc.text, gone
    for kept in (
        "As shown in the figure and the equation, see Legendre and.",
        "We implement the loss with torch",
        "read the docs and a cat.",
        "Regression is useful.",
        "$$y = wx + b$$",
        "PyTorch words.",
    ):
        assert kept in doc.text, kept


def test_markdown_keep_code_and_setext_headings():
    md = "Title\n=====\n\nintro\n\nPart\n----\n\n```\ncode line\n```\n"
    blocks = markdown_blocks(md, keep_code=True)
    assert [(b.text, b.level) for b in blocks] == [("Title", 1), ("intro", 0), ("Part", 2), ("code line", 0)]
    assert "code line" not in assemble("x", markdown_blocks(md)).text


def test_plain_text_paragraphs(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("first para\nline two   \n\n\n\nsecond para\r\n")
    doc = read_document(f, "notes.txt")
    assert doc.text == "first para\nline two\n\nsecond para"
    assert [s.heading for s in doc.sections] == [""]


def test_undecodable_and_unsupported_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"ok \xff\xfe broken")
    with pytest.raises(RagError, match=r"bad\.md: not UTF-8"):
        read_document(bad)
    doc = tmp_path / "x.docx"
    doc.write_bytes(b"PK")
    with pytest.raises(RagError, match=r"x\.docx: unsupported file type"):
        read_document(doc)


# --- real tokenizer, real corpus -----------------------------------------------------------------
class TokenizerEmbedder:
    def __init__(self):
        from alignkit.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
        self.name, self.dim = "minilm-tokenizer", 384

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_minilm_token_counts_are_exact_on_a_d2l_section():
    emb = TokenizerEmbedder()
    doc = read_document(D2L / "chapter_linear-regression" / "linear-regression.md", "lr.md")
    chunks = chunk_document(doc, word_counter(emb), chunk_tokens=128, overlap=16)
    assert len(chunks) > 10
    assert_offsets(doc.text, chunks)
    for c in chunks:
        assert c.n_tokens == emb.count_tokens(c.text) <= 128  # the per-word sum is the WordPiece count
    headings = {c.heading for c in chunks}
    assert "Linear Regression > Basics > Loss Function" in headings
    assert not any(":label:" in c.text or "```" in c.text for c in chunks)


def test_math_is_left_alone_and_markup_spanning_lines_is_cleaned():
    md = (
        "# Q\n\nthe optimal $Q^*(s, a)$ and its estimate $Q^*$ differ;\n(**weight decay restricts\nthe values**)"
        " of a “&lt;mask&gt;” token\n\n$$a * b * c$$\n"
    )
    text = clean_text(md, "markdown", "q.md").text
    assert "$Q^*(s, a)$" in text and "$Q^*$" in text and "$$a * b * c$$" in text
    assert "weight decay restricts\nthe values of a “<mask>” token" in text
