"""Read a PDF into :class:`~alignkit.rag.documents.Block` s that remember their pages (pdfminer.six, the ``rag``
extra; docs/rag.md says why it and not pypdf).

pdfminer's layout analysis gives each page's text lines with their boxes, grouped into text boxes (paragraphs)
in reading order (two columns read column by column). On top of it, what real PDFs need:

- ligature glyphs (ﬁ, ﬂ, ﬀ, ﬃ, ﬄ, ﬅ, ﬆ) become their letters; unmapped glyphs (``(cid:N)``) are dropped;
- a word hyphenated at a line end is joined (``compu-`` + ``tation``), unless the hyphen is a real one: the part
  before it already holds a hyphen (``state-of-the-`` + ``art``), the next line starts with a capital or a
  digit, or the document writes the hyphenated form elsewhere and never the joined one (:func:`join_lines`);
- running headers, footers and page numbers are dropped (:func:`margin_lines`): in the top or bottom 15% of a
  page, the line group nearest the edge goes when one of its lines is a bare page number, or a line's text
  (digits ignored) is also at the edge of another page, and its whole group then goes with it;
- a paragraph cut by a page or column break (no sentence end, the next starts in lower case) is one paragraph;
- the PDF outline (bookmarks) gives the headings: each entry's title line on its page becomes a heading block
  (inserted at the bookmark's height when no line matches); no outline, no headings.

Pages are numbered from 1 in file order (what a viewer's "go to page" counts without page labels). A page with
no text but an image (a scan) is listed in :attr:`PdfText.no_text_pages` (a blank page is not). An encrypted PDF (a user password) or one
that cannot be parsed is a :class:`~alignkit.rag.errors.RagError` naming the file.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field

from alignkit.rag.errors import RagError

LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"}
)
_CID = re.compile(r"\(cid:\d+\)")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?(?:\d{1,4}|[ivx]{1,6})(?:\s*(?:/|of)\s*\d{1,4})?$", re.I)
_SENTENCE_END = re.compile(r"[.!?:;][\"'’”)\]]*$")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
MARGIN = 0.15  # share of the page height at the top and the bottom where headers and footers are looked for


@dataclass(frozen=True)
class Line:
    """One text line of a page: its box in PDF points (origin bottom left) and its text, cleaned of ligatures."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    box: int = 0  # the text box (paragraph) it belongs to, in the page's reading order


@dataclass
class Page:
    """A page's lines in reading order, its height, and the outline entries that point into it."""

    number: int  # from 1
    height: float
    lines: list[Line]
    headings: list[tuple[int, str, float | None]] = field(default_factory=list)  # (level from 1, title, top y)
    has_image: bool = False  # draws an image (a page with an image and no text is a scan)


@dataclass(frozen=True)
class PdfText:
    """What :func:`pdf_blocks` returns: the blocks, each with the pages it covers, and the pages with no text."""

    blocks: list  # list[Block]
    no_text_pages: list[int]  # pages with an image and no text layer (scans), from 1
    n_pages: int


def clean_line(text: str) -> str:
    """A line as extracted: ligatures expanded, unmapped glyphs dropped, soft hyphens kept only at the end (as
    ``-``, a line-end hyphen), whitespace collapsed."""
    text = _CID.sub("", text.translate(LIGATURES))
    text = re.sub(r"\s+", " ", text).strip()
    if text.endswith("\xad"):
        text = text[:-1] + "-"
    return text.replace("\xad", "")


def _norm(text: str) -> str:
    """A margin line compared across pages: lower case, digits and roman page numbers ignored, spaces collapsed."""
    text = re.sub(r"\d+", "#", text.lower())
    text = re.sub(r"(?:^|(?<=\s))[ivxlcdm]+$", "#", text)
    return re.sub(r"\s+", " ", text).strip()


def _edge_groups(page: Page) -> list[list[int]]:
    """The indices of the line group nearest the top and of the one nearest the bottom of ``page`` (lines whose
    vertical middles are within 3 points of the outermost line's), each only when it lies in the outer 15%."""
    if not page.lines or page.height <= 0:
        return []
    groups = []
    mids = [(ln.y0 + ln.y1) / 2 for ln in page.lines]
    top, bottom = max(mids), min(mids)
    if top >= page.height * (1 - MARGIN):
        groups.append([i for i, m in enumerate(mids) if abs(m - top) <= 3])
    if bottom <= page.height * MARGIN and bottom != top:
        groups.append([i for i, m in enumerate(mids) if abs(m - bottom) <= 3])
    return groups


def margin_lines(pages: list[Page]) -> list[set[int]]:
    """Per page, the indices of its running header, footer and page-number lines: the edge group (see
    :func:`_edge_groups`) goes when one of its lines is a bare page number, or is, digits ignored, at the edge
    of another page too (4 letters or more: not a stray ``dx`` of a formula), or starts or ends with the page's
    printed number (``1.2 GRAPHS 7``: the printed number minus the page's position is the same as on two
    pages whose bare page numbers were found)."""
    edges = [_edge_groups(p) for p in pages]
    seen: dict[str, set[int]] = {}  # normalised edge line -> the pages it is on
    shifts: Counter = Counter()  # printed page number - page position, from bare page-number lines
    for p, groups in zip(pages, edges):
        for g in groups:
            for i in g:
                text = p.lines[i].text
                seen.setdefault(_norm(text), set()).add(p.number)
                if text.isdigit():
                    shifts[int(text) - p.number] += 1
    shift = {s for s, n in shifts.items() if n >= 2}

    def is_margin(text: str, number: int) -> bool:
        if _PAGE_NUMBER.match(text):
            return True
        if len(seen[_norm(text)]) >= 2 and len(re.sub(r"[\W\d_]+", "", text)) >= 4:
            return True
        ends = [m.group(1) for m in (re.match(r"^(\d+)\D", text), re.search(r"\D(\d+)$", text)) if m]
        return any(int(n) - number in shift for n in ends)

    drop: list[set[int]] = []
    for p, groups in zip(pages, edges):
        gone: set[int] = set()
        for g in groups:
            if any(is_margin(p.lines[i].text, p.number) for i in g):
                gone.update(g)
        drop.append(gone)
    return drop


def join_lines(lines: list[str], hyphenated: set[str], joined: set[str]) -> tuple[str, list[int]]:
    """Lines of one paragraph as one string, and where each line starts in it: a space between lines, and a
    line-end hyphen after a letter either removed (a word broken by hyphenation) or kept without the space (a
    real hyphen): see the module doc. ``hyphenated`` / ``joined``: the lower-cased hyphenated words and plain
    words found in the document."""
    out, starts = "", []
    for line in lines:
        if not out:
            starts.append(0)
            out = line
            continue
        m = re.search(r"([^\W\d_][\w-]*)-$", out[-200:])
        if m:
            left = m.group(1)
            right = re.match(r"[\w-]*", line).group(0)
            whole_h, whole_j = f"{left}-{right}".lower(), f"{left}{right}".lower()
            real = "-" in left or not right[:1].islower() or (whole_h in hyphenated and whole_j not in joined)
            out = out if real else out[:-1]
            starts.append(len(out))
            out += line
        else:
            starts.append(len(out) + 1)
            out = f"{out} {line}"
    return out, starts


def _open(data: bytes, name: str):
    """(document, pages) of pdfminer; a RagError naming ``name`` when the PDF is encrypted or cannot be parsed.
    The caller has checked that pdfminer is installed (:func:`read_pages`)."""
    from pdfminer.pdfdocument import PDFDocument, PDFPasswordIncorrect
    from pdfminer.pdfpage import PDFPage
    from pdfminer.pdfparser import PDFParser

    from alignkit.errors import first_line

    try:
        doc = PDFDocument(PDFParser(io.BytesIO(data)))  # the empty user password: owner-only protection opens
        pages = list(PDFPage.create_pages(doc))
    except PDFPasswordIncorrect:
        raise RagError(f"{name}: encrypted PDF (it needs a password): decrypt it first, e.g. qpdf --decrypt") from None
    except Exception as err:  # noqa: BLE001 - any parser failure on a damaged file: one line, never a traceback
        raise RagError(f"{name}: damaged PDF, cannot be read ({type(err).__name__}: {first_line(err)})") from None
    return doc, pages


def _outline(doc, pages) -> dict[int, list[tuple[int, str, float | None]]]:
    """Outline entries by page index (from 0): (level from 1, title, top y or None), in outline order."""
    from pdfminer.pdfdocument import PDFNoOutlines
    from pdfminer.pdftypes import resolve1
    from pdfminer.psparser import PSLiteral
    from pdfminer.utils import decode_text

    by_id = {p.pageid: i for i, p in enumerate(pages)}
    out: dict[int, list[tuple[int, str, float | None]]] = {}
    try:
        entries = list(doc.get_outlines())
    except PDFNoOutlines:
        return out
    except Exception:  # noqa: BLE001 - a broken outline: no headings, the text is still read
        return out
    for level, title, dest, action, _ in entries:
        try:
            if dest is None and action is not None:
                action = resolve1(action)
                dest = action.get("D") if isinstance(action, dict) else None
            dest = resolve1(dest)
            if isinstance(dest, (bytes, str, PSLiteral)):
                name = dest.name if isinstance(dest, PSLiteral) else dest
                dest = resolve1(doc.get_dest(name))
            if isinstance(dest, dict):
                dest = resolve1(dest.get("D"))
            if not isinstance(dest, list) or not dest:
                continue
            page = by_id.get(getattr(dest[0], "objid", None))
            kind = getattr(resolve1(dest[1]), "name", "") if len(dest) > 1 else ""
            top = resolve1(dest[3]) if kind == "XYZ" and len(dest) > 3 else None
            text = decode_text(title) if isinstance(title, bytes) else str(title or "")
        except Exception:  # noqa: BLE001 - one unreadable entry is skipped
            continue
        text = clean_line(text)
        if page is not None and text:
            out.setdefault(page, []).append((int(level), text, float(top) if isinstance(top, (int, float)) else None))
    return out


def read_pages(data: bytes, name: str) -> list[Page]:
    """The pages of the PDF ``data`` with their lines in reading order and the outline entries pointing at them;
    a one-line :class:`~alignkit.errors.MissingExtra` (``alignkit[rag]``) when pdfminer is not installed."""
    from alignkit.errors import require

    require("pdfminer", "reading PDF files")  # before any pdfminer import: a one-line error, not a traceback
    from pdfminer.converter import PDFPageAggregator
    from pdfminer.layout import LAParams, LTFigure, LTImage, LTTextBox, LTTextLine
    from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager

    from alignkit.errors import first_line

    doc, pdf_pages = _open(data, name)
    outline = _outline(doc, pdf_pages)
    manager = PDFResourceManager()
    device = PDFPageAggregator(manager, laparams=LAParams())
    interpreter = PDFPageInterpreter(manager, device)
    pages = []
    for i, pdf_page in enumerate(pdf_pages):
        try:
            interpreter.process_page(pdf_page)
            layout = device.get_result()
        except Exception as err:  # noqa: BLE001 - a damaged page stream
            raise RagError(
                f"{name}: damaged PDF, page {i + 1} cannot be read ({type(err).__name__}: {first_line(err)})"
            ) from None
        lines: list[Line] = []
        box = 0
        has_image = False
        for item in layout:
            has_image = has_image or isinstance(item, (LTFigure, LTImage))
            if not isinstance(item, LTTextBox):
                continue
            for ln in item:
                if isinstance(ln, LTTextLine):
                    text = clean_line(ln.get_text())
                    if text:
                        lines.append(Line(ln.x0, ln.y0, ln.x1, ln.y1, text, box))
            box += 1
        pages.append(Page(i + 1, float(layout.height), lines, outline.get(i, []), has_image))
    return pages


def _match_heading(lines: list[Line], used: set[int], title: str, top: float | None) -> list[int]:
    """Indices of the consecutive lines (1 to 3) of a page, at or below the bookmark's ``top``, that spell
    ``title`` (letters and digits compared; a leading "Chapter 1" or section number may differ); [] when none do."""
    want = re.sub(r"[\W_]+", "", title.lower())
    want_bare = re.sub(r"^\d+", "", want)
    if not want:
        return []
    for i, ln in enumerate(lines):
        if i in used or (top is not None and ln.y1 > top + 2):
            continue
        got = ""
        for j in range(i, min(i + 3, len(lines))):
            got += re.sub(r"[\W_]+", "", lines[j].text.lower())
            bare = re.sub(r"^(?:chapter|section|part|appendix)?\d*", "", got)
            if got == want or bare == want or (bare and bare == want_bare):
                return list(range(i, j + 1))
            if not (want.startswith(got) or want.startswith(bare) or want_bare.startswith(bare)):
                break
    return []


def pdf_blocks(data: bytes, name: str) -> PdfText:
    """The PDF ``data`` (file ``name``, for errors) as blocks: headings from the outline, paragraphs cleaned
    (module doc), each block's ``pages`` holding (offset in its text, page number) where a page begins."""
    from alignkit.rag.blocks import Block

    pages = read_pages(data, name)
    drop = margin_lines(pages)
    hyphenated, joined = set(), set()
    for p in pages:
        for ln in p.lines:
            for w in _WORD.findall(ln.text.rstrip("-")):
                (hyphenated if "-" in w else joined).add(w.lower())
    # items in reading order: ("h", level, title, page) or ("p", [lines], page of each line)
    items: list[tuple] = []
    no_text = []
    for p, gone in zip(pages, drop):
        if not p.lines and p.has_image:  # a blank page (no text, no image) is not worth a report
            no_text.append(p.number)
        used: set[int] = set(gone)
        heads: dict[int, list[tuple[int, str]]] = {}  # line index -> headings placed before it
        tail: list[tuple[int, str]] = []  # headings after every line of the page
        for level, title, top in p.headings:
            hit = _match_heading(p.lines, used, title, top)
            if hit:
                used.update(hit)
                heads.setdefault(hit[0], []).append((level, title))
                continue
            below = [i for i, ln in enumerate(p.lines) if i not in used and (top is None or ln.y1 <= top + 1)]
            if below:
                heads.setdefault(below[0], []).append((level, title))
            else:
                tail.append((level, title))
        box = None
        for i, ln in enumerate(p.lines):
            for level, title in heads.get(i, []):
                items.append(("h", level, title, p.number))
                box = None
            if i in used:
                continue
            if box != ln.box or not items or items[-1][0] != "p":
                items.append(("p", [], []))
                box = ln.box
            items[-1][1].append(ln.text)
            items[-1][2].append(p.number)
        for level, title in tail:
            items.append(("h", level, title, p.number))
    # a paragraph cut by a page or column break continues in the next one (no sentence end, lower case next)
    merged: list[tuple] = []
    for item in items:
        prev = merged[-1] if merged else None
        if item[0] == "p" and prev and prev[0] == "p":
            last, first = prev[1][-1], item[1][0]
            if not _SENTENCE_END.search(last) and first[:1].islower():
                prev[1].extend(item[1])
                prev[2].extend(item[2])
                continue
        merged.append(item)
    blocks = []
    for item in merged:
        if item[0] == "h":
            blocks.append(Block(item[2], item[1], ((0, item[3]),)))
            continue
        text, starts = join_lines(item[1], hyphenated, joined)
        marks: list[tuple[int, int]] = []
        for start, page in zip(starts, item[2]):
            if not marks or marks[-1][1] != page:
                marks.append((start, page))
        blocks.append(Block(text, 0, tuple(marks)))
    return PdfText(blocks, no_text, len(pages))
