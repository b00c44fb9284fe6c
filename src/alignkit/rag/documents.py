"""Read documents, clean their markup, and split them into token-bounded chunks that never cross a heading.

Three readers turn a file into a list of :class:`Block` (a heading with its level, or a paragraph of text):

- markdown (``.md``): ATX and setext headings; code fences dropped (the embedder is a prose model and code
  chunks crowd out the prose in retrieval); d2l's markers handled (``:label:``/``:eqlabel:``/``:width:`` lines
  dropped, ``:numref:``/``:eqref:`` replaced by words, ``:cite:`` dropped, ``:begin_tab:`` blocks kept only for
  one framework so the four near-copies do not become four near-duplicate chunks); links, images (their alt
  text is kept: d2l's captions are prose), emphasis and inline code reduced to their text.
- HTML (``.html``/``.htm``): the stdlib :class:`html.parser.HTMLParser`; ``script``/``style``/``head`` (and the
  like) are dropped, ``h1``-``h6`` become headings, block tags break paragraphs, entities are decoded.
- plain text (``.txt``): paragraphs split at blank lines, no headings.
- PDF (``.pdf``): :mod:`alignkit.rag.pdf` (pdfminer.six): ligatures, line-end hyphenation, running headers,
  footers and page numbers, columns; headings from the outline; each block remembers its pages, so each
  chunk records the pages it spans (:attr:`Chunk.pages`) and is cited as ``book.pdf pages 12-13`` (:func:`cite`).

:func:`assemble` lays the blocks out as one *cleaned text* (blocks separated by a blank line, headings as
their own line) and records each section: the heading path (``"Linear Regression > Basics > Model"``) and
the character span of its body. :func:`chunk_document` then splits each section body into chunks of at most
``chunk_tokens`` tokens of the embedder's tokenizer, consecutive chunks sharing up to ``overlap`` tokens. A
chunk's text is exactly ``cleaned[start:end]``, so its offsets point back into the cleaned text.

Tokens are counted per whitespace-separated word (one batched tokenizer call over the distinct words) and
summed: chunks are cut at whitespace only, and for a WordPiece tokenizer (MiniLM's), which splits at
whitespace before anything else, the sum is exactly the token count of the chunk.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path

from alignkit.rag.blocks import Block
from alignkit.rag.errors import RagError

CLEANER_VERSION = "1"  # bump when cleaning or chunking changes: indexes built before re-chunk every file
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}

TokenCounter = Callable[[Sequence[str]], list[int]]  # words -> token count of each word (no special tokens)


def cite(source: str, pages: tuple[int, int] | None = None, heading: str = "") -> str:
    """How a chunk is cited: ``book.pdf page 12`` / ``book.pdf pages 12-13`` (no page for other formats),
    then `` — `` and the heading path when there is one."""
    where = source
    if pages:
        where += f" page {pages[0]}" if pages[0] == pages[1] else f" pages {pages[0]}-{pages[1]}"
    return f"{where} — {heading}" if heading else where


def embed_text(heading: str, text: str) -> str:
    """What gets embedded for a chunk: the heading path, then the text (the heading carries the topic of short
    chunks). The index re-embeds stored chunks through this too, so both must agree."""
    return f"{heading}\n{text}" if heading else text


@dataclass(frozen=True)
class Section:
    """A heading's body in the cleaned text: ``text[body_start:body_end]`` (empty when the heading has no body)."""

    heading: str  # heading path, outermost first: "Linear Regression > Basics > Model" ("" before any heading)
    body_start: int  # char offset in the cleaned text
    body_end: int


@dataclass(frozen=True)
class CleanDocument:
    """A document after cleaning: its text and its sections in order."""

    source: str  # path relative to the indexed root, "/"-separated
    text: str  # the cleaned text (what chunk offsets index into)
    sections: list[Section]
    pages: tuple[tuple[int, int], ...] = ()  # PDF: (offset in text, page number) where each page begins, sorted
    no_text_pages: tuple[int, ...] = ()  # PDF: pages with no text layer (scans), from 1

    @cached_property
    def _page_offsets(self) -> tuple[int, ...]:
        """Where each page begins in ``text`` (the offsets of :attr:`pages`), built once per document."""
        return tuple(o for o, _ in self.pages)

    def page_span(self, start: int, end: int) -> tuple[int, int] | None:
        """(first, last) page of ``text[start:end]``; None when the document has no pages (not a PDF)."""
        if not self.pages:
            return None
        offsets = self._page_offsets
        first = self.pages[max(0, bisect.bisect_right(offsets, start) - 1)][1]
        last = self.pages[max(0, bisect.bisect_right(offsets, max(start, end - 1)) - 1)][1]
        return first, last


@dataclass(frozen=True)
class Chunk:
    """A piece of one section: ``text == document.text[start:end]``."""

    source: str  # the document's relative path
    heading: str  # the section's heading path
    start: int  # char offsets in the cleaned text
    end: int
    text: str
    n_tokens: int  # tokens of ``text`` (the sum of its words' counts)
    ordinal: int  # position of the chunk in its document, from 0
    pages: tuple[int, int] | None = None  # PDF: (first, last) page the chunk's text is on, from 1; else None

    def embed_text(self) -> str:
        return embed_text(self.heading, self.text)


# --- markdown ------------------------------------------------------------------------------------
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_DIRECTIVE_LINE = re.compile(r"^\s*:(label|eqlabel|width|bibliography|ref|maxdepth|members):`?[^`]*`?\s*$")
_BEGIN_TAB = re.compile(r"^\s*:begin_tab:`([^`]*)`\s*$")
_END_TAB = re.compile(r"^\s*:end_tab:\s*$")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_NUMREF = re.compile(r":numref:`([^`]*)`")
_EQREF = re.compile(r":eqref:`[^`]*`")
_CITE = re.compile(r"\s*:cite:`[^`]*`")
_CITET = re.compile(r":citet:`([^`]*)`")
_D2L_BOLD = re.compile(r"[\[(]\*\*(.+?)\*\*[\])]", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_STRONG = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.S)
_EM = re.compile(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_CODE = re.compile(r"`([^`]+)`")
_MATH = re.compile(r"(\$\$.+?\$\$|(?<![\\$])\$[^$\n]+?\$)", re.S)  # TeX is left as written
_HTML_TAG = re.compile(r"</?(?:br|hr|div|span|center|img|a|p|sup|sub|b|i|em|strong|small|font|u)\b[^>]*>", re.I)
_NUMREF_WORDS = (
    ("chap", "the chapter"),
    ("subsec", "the section"),
    ("sec", "the section"),
    ("fig", "the figure"),
    ("img", "the figure"),
    ("tab", "the table"),
    ("eq", "the equation"),
)


def _numref(m: re.Match) -> str:
    label = m.group(1).strip()
    if "<" in label:  # :numref:`Figure <fig_x>`: the given words
        return label.split("<", 1)[0].strip()
    for prefix, words in _NUMREF_WORDS:
        if label.startswith(prefix):
            return words
    return "the section"


def _citet(m: re.Match) -> str:
    first = m.group(1).split(",")[0].strip()
    parts = [p for p in first.split(".") if p and not p.isdigit()]
    name = (parts[0] if parts else first) or "the authors"
    return f"{name} et al." if len(parts) > 2 else name


def clean_inline(text: str) -> str:
    """Markdown inline markup of a paragraph reduced to its text; TeX math (``$...$``, ``$$...$$``) is left as
    written (its ``*`` and ``_`` are not emphasis)."""
    parts = _MATH.split(text)
    return "".join(part if i % 2 else _clean_prose(part) for i, part in enumerate(parts))


def _clean_prose(text: str) -> str:
    text = _NUMREF.sub(_numref, text)  # d2l roles first: they use backticks too
    text = _EQREF.sub("the equation", text)
    text = _CITE.sub("", text)
    text = _CITET.sub(_citet, text)
    text = _D2L_BOLD.sub(r"\1", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EM.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    return html.unescape(text)


def markdown_blocks(text: str, *, keep_code: bool = False, keep_tab: str = "pytorch") -> list[Block]:
    """Markdown (with d2l's markers) as blocks. ``keep_code``: keep fenced code as paragraphs (default: drop).
    ``keep_tab``: the d2l ``:begin_tab:`` framework whose blocks are kept (the others are dropped)."""
    text = _COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    blocks: list[Block] = []
    para: list[str] = []
    fence: str | None = None  # the opening fence while inside a code block
    code: list[str] = []
    skip_tab = False

    def flush() -> None:
        body = "\n".join(line.rstrip() for line in clean_inline("\n".join(para)).split("\n") if line.strip()).strip()
        if body:
            blocks.append(Block(body))
        para.clear()

    for raw in text.split("\n"):
        if fence is not None:
            m = _FENCE.match(raw)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not raw.strip()[len(m.group(1)) :].strip():
                fence = None
                if keep_code and not skip_tab and "\n".join(code).strip():
                    blocks.append(Block("\n".join(code).strip("\n")))
                code.clear()
            else:
                code.append(raw)
            continue
        m = _FENCE.match(raw)
        if m:
            flush()
            fence = m.group(1)
            continue
        m = _BEGIN_TAB.match(raw)
        if m:
            flush()
            tabs = {t.strip() for t in m.group(1).split(",")}
            skip_tab = keep_tab not in tabs and "all" not in tabs
            continue
        if _END_TAB.match(raw):
            flush()
            skip_tab = False
            continue
        if skip_tab or _DIRECTIVE_LINE.match(raw):
            continue
        m = _ATX.match(raw)
        if m:
            flush()
            title = clean_inline(m.group(2)).strip()
            if title:
                blocks.append(Block(title, len(m.group(1))))
            continue
        stripped = raw.strip()
        if stripped and len(para) == 1 and set(stripped) <= {"="} | {"-"} and len(set(stripped)) == 1 and len(stripped) >= 2:
            title = clean_inline(para[0]).strip()  # setext heading: one line underlined with === (h1) or --- (h2)
            para.clear()
            if title:
                blocks.append(Block(title, 1 if stripped[0] == "=" else 2))
            continue
        if not stripped:
            flush()
            continue
        para.append(raw)
    flush()
    return blocks


# --- HTML ----------------------------------------------------------------------------------------
_HTML_SKIP = {"script", "style", "head", "noscript", "template", "svg", "iframe", "object"}
_HTML_BLOCK = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "pre",
    "blockquote",
    "hr",
    "header",
    "footer",
    "nav",
    "main",
    "aside",
    "figure",
    "figcaption",
    "dl",
    "dt",
    "dd",
    "form",
    "body",
    "td",
    "th",
}
_HTML_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}


class _HTMLBlocks(HTMLParser):
    """Collects text between tags into blocks; headings become heading blocks, skipped tags drop their text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._parts: list[str] = []
        self._skip = 0  # depth inside skipped elements
        self._heading = 0  # level of the heading being read, 0 outside headings
        self._pre = 0

    def _flush(self) -> None:
        raw = "".join(self._parts)
        self._parts.clear()
        if self._pre:
            text = "\n".join(line.rstrip() for line in raw.strip("\n").split("\n"))
        else:
            text = re.sub(r"[ \t\n\r\f\v]+", " ", raw)  # source line breaks are spaces in HTML; <br> is \x00
            text = re.sub(r" ?\x00 ?", " " if self._heading else "\n", text).strip()
        if text.strip():
            self.blocks.append(Block(text.strip() if self._heading else text, self._heading))

    def handle_starttag(self, tag, attrs):
        if tag in _HTML_SKIP:
            if tag not in _HTML_VOID:
                self._skip += 1
            return
        if self._skip:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading = int(tag[1])
        elif tag in _HTML_BLOCK:
            self._flush()
            if tag == "pre":
                self._pre += 1
        elif tag == "br":
            self._parts.append("\n" if self._pre else "\x00")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._parts.append(f" {alt} ")

    def handle_startendtag(self, tag, attrs):
        if tag in _HTML_SKIP or self._skip:
            return
        if tag in _HTML_BLOCK:
            self._flush()
        elif tag in ("img", "br"):
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in _HTML_SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if re.fullmatch(r"h[1-6]", tag) and self._heading:
            self._flush()
            self._heading = 0
        elif tag in _HTML_BLOCK:
            self._flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data):
        if not self._skip:
            self._parts.append(data)

    def close(self):
        super().close()
        self._flush()


def html_blocks(text: str) -> list[Block]:
    """HTML as blocks: tags stripped, script/style/head dropped, h1-h6 kept as headings."""
    parser = _HTMLBlocks()
    parser.feed(text)
    parser.close()
    return parser.blocks


def text_blocks(text: str) -> list[Block]:
    """Plain text as paragraphs (split at blank lines), trailing spaces trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paras = re.split(r"\n[ \t]*\n", text)
    return [Block("\n".join(line.rstrip() for line in p.strip("\n").split("\n")).strip()) for p in paras if p.strip()]


# --- layout --------------------------------------------------------------------------------------
def assemble(source: str, blocks: list[Block]) -> CleanDocument:
    """Lay ``blocks`` out as one cleaned text (a blank line between blocks) and record each heading's section.

    A heading at level L closes every open heading at level >= L; its path is the open headings' titles."""
    parts: list[str] = []
    sections: list[Section] = []
    pages: list[tuple[int, int]] = []  # (offset, page) where a page begins, when the blocks have pages
    stack: list[tuple[int, str]] = []  # open headings (level, title)
    pos = 0
    heading = ""  # path of the section being filled
    body_start = body_end = None

    def close() -> None:
        if body_start is not None:
            sections.append(Section(heading, body_start, body_end))
        elif heading:
            sections.append(Section(heading, pos, pos))  # a heading with no body

    for block in blocks:
        if parts:
            parts.append("\n\n")
            pos += 2
        if block.level:
            close()
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text))
            heading = " > ".join(title for _, title in stack)
            body_start = body_end = None
        else:
            if body_start is None:
                body_start = pos
            body_end = pos + len(block.text)
        for offset, page in block.pages:
            if not pages or pages[-1][1] != page:
                pages.append((pos + offset, page))
        parts.append(block.text)
        pos += len(block.text)
    close()
    return CleanDocument(source, "".join(parts), sections, tuple(pages))


def read_document(path: str | Path, source: str | None = None, *, keep_code: bool = False) -> CleanDocument:
    """Read and clean one file (its kind from the suffix). Raises :class:`RagError` naming the file when it is not
    UTF-8 text (a PDF: encrypted or damaged) or its suffix is not one of :data:`SUFFIXES`."""
    path = Path(path)
    return decode_document(path.read_bytes(), path, source, keep_code=keep_code)


def decode_document(data: bytes, path: str | Path, source: str | None = None, *, keep_code: bool = False) -> CleanDocument:
    """Clean the bytes ``data`` of the file ``path`` (its kind from the suffix); see :func:`read_document`. A PDF
    that is encrypted or damaged is a RagError naming the file."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RagError(f"{path}: unsupported file type {path.suffix!r} (expected one of {', '.join(sorted(SUFFIXES))})")
    if kind == "pdf":
        from alignkit.rag.pdf import pdf_blocks

        found = pdf_blocks(data, str(path))
        doc = assemble(source or path.name, found.blocks)
        return dataclasses.replace(doc, no_text_pages=tuple(found.no_text_pages))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RagError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return clean_text(text, kind, source or path.name, keep_code=keep_code)


def clean_text(text: str, kind: str, source: str, *, keep_code: bool = False) -> CleanDocument:
    """Clean ``text`` of ``kind`` ("markdown" | "html" | "text") into a :class:`CleanDocument`."""
    if kind == "markdown":
        blocks = markdown_blocks(text, keep_code=keep_code)
    elif kind == "html":
        blocks = html_blocks(text)
    elif kind == "text":
        blocks = text_blocks(text)
    else:
        raise RagError(f"{source}: unknown document kind {kind!r} (expected markdown, html or text)")
    return assemble(source, blocks)


# --- chunking ------------------------------------------------------------------------------------
def word_counter(embedder) -> TokenCounter:
    """Counts tokens per word with the embedder's tokenizer (one batched call over unseen words) when it has one,
    else with ``embedder.count_tokens``; counts are memoised, so a corpus' repeated words are counted once."""
    tokenizer = getattr(embedder, "tokenizer", None)
    memo: dict[str, int] = {}

    def count(words: Sequence[str]) -> list[int]:
        new = [w for w in dict.fromkeys(words) if w not in memo]
        if new:
            if tokenizer is not None and callable(tokenizer):
                ids = tokenizer(new, add_special_tokens=False)["input_ids"]
                memo.update(zip(new, (len(i) for i in ids)))
            else:
                memo.update((w, int(embedder.count_tokens(w))) for w in new)
        return [memo[w] for w in words]

    return count


_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")


def _split_long_word(word: str, start: int, limit: int, count: TokenCounter) -> list[tuple[int, int, int]]:
    """A word of more than ``limit`` tokens (a URL, a base64 blob) as pieces of at most ``limit`` tokens each:
    (start, end, tokens), the longest prefix that fits each time (binary search on its character length)."""
    pieces = []
    i = 0
    while i < len(word):
        lo, hi = 1, len(word) - i  # the longest n with count(word[i:i+n]) <= limit; n = 1 always taken
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count([word[i : i + mid]])[0] <= limit:
                lo = mid
            else:
                hi = mid - 1
        pieces.append((start + i, start + i + lo, count([word[i : i + lo]])[0]))
        i += lo
    return pieces


def split_span(
    text: str,
    start: int,
    end: int,
    count: TokenCounter,
    chunk_tokens: int,
    overlap: int,
) -> list[tuple[int, int, int]]:
    """Split ``text[start:end]`` into (start, end, tokens) pieces of at most ``chunk_tokens`` tokens, cut at
    whitespace, each next piece starting up to ``overlap`` tokens before the previous one ended.

    A cut prefers a paragraph end, then a sentence end, in the last 40% of the window, so chunks end on whole
    sentences where the text allows."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    counts = count([text[s:e] for s, e in words])
    units: list[tuple[int, int, int]] = []  # (start, end, tokens) with tokens <= chunk_tokens
    for (s, e), n in zip(words, counts):
        units.extend(_split_long_word(text[s:e], s, chunk_tokens, count) if n > chunk_tokens else [(s, e, n)])
    out: list[tuple[int, int, int]] = []
    i, n_units = 0, len(units)
    while i < n_units:
        j, total = i, 0
        while j < n_units and total + units[j][2] <= chunk_tokens:
            total += units[j][2]
            j += 1
        if j < n_units:  # not the last piece: look back for a paragraph or sentence end to cut at
            floor, acc, best_para, best_sent = 0.6 * chunk_tokens, 0, None, None
            for k in range(i, j):
                acc += units[k][2]
                if acc < floor or k + 1 >= j:
                    continue
                gap = text[units[k][1] : units[k + 1][0]]
                if "\n\n" in gap:
                    best_para = k + 1
                elif _SENTENCE_END.search(text[units[k][0] : units[k][1]]):
                    best_sent = k + 1
            j = best_para or best_sent or j
        tokens = sum(u[2] for u in units[i:j])
        out.append((units[i][0], units[j - 1][1], tokens))
        if j >= n_units:
            break
        back, carried = j, 0  # the next piece starts up to `overlap` tokens back, always after this one's start
        while back - 1 > i and carried + units[back - 1][2] <= overlap:
            back -= 1
            carried += units[back][2]
        i = back
    return out


def chunk_document(doc: CleanDocument, count: TokenCounter, *, chunk_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """Chunks of every section of ``doc``, in order; a section's chunks never reach into another section."""
    if chunk_tokens < 1:
        raise RagError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise RagError(f"overlap must be >= 0 and below chunk_tokens ({chunk_tokens}), got {overlap}")
    chunks: list[Chunk] = []
    for section in doc.sections:
        for s, e, n in split_span(doc.text, section.body_start, section.body_end, count, chunk_tokens, overlap):
            chunks.append(Chunk(doc.source, section.heading, s, e, doc.text[s:e], n, len(chunks), doc.page_span(s, e)))
    return chunks
