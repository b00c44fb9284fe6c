"""What a document reader produces: :class:`Block`. Its own module so that the readers (documents.py's markdown,
HTML and text readers; pdf.py) and the assembler share it without importing each other."""

from __future__ import annotations

from typing import NamedTuple


class Block(NamedTuple):
    """One unit a reader produces: a heading (``level`` 1-6) or a paragraph of text (``level`` 0). ``pages``: for
    a PDF, (offset in ``text``, page number from 1) where each of its pages begins, the first at offset 0;
    empty for the other formats."""

    text: str
    level: int = 0
    pages: tuple[tuple[int, int], ...] = ()
