"""Typeset a few sections of the d2l textbook (data/d2l, markdown, CC BY-SA 4.0) as a small PDF book: the real
PDF that alignkit's PDF ingestion is tested and benchmarked on (data/README.md).

The d2l markdown is cleaned with alignkit's own markdown reader (code fences, ``:label:``/``:numref:`` markers
and the other frameworks' tabs dropped; TeX math kept as written), written out as plain markdown, and typeset
by pandoc with pdflatex as a ``book`` (two-sided ``headings`` page style: running headers with the chapter or
section title and the page number; chapter openings with the page number in the footer), sections numbered,
and hyperref bookmarks (the PDF outline). So the PDF has what real books have: ligatures (fi, fl, ff),
words hyphenated across line ends, running headers, page numbers and an outline.

Dev-only (CI never runs it; the PDF is committed). Needs pandoc and TeX Live:
    apt-get install -y pandoc texlive-latex-base texlive-latex-recommended texlive-fonts-recommended
    .venv/bin/python data/d2l_pdf/make_pdf.py
Made with pandoc 2.17.1.1 and pdfTeX 3.141592653-2.6-1.40.24 (TeX Live 2022/Debian), see VERSIONS below.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "src"))

from alignkit.rag.documents import markdown_blocks  # noqa: E402

CHAPTER = REPO / "data" / "d2l" / "chapter_multilayer-perceptrons"
SECTIONS = ["mlp.md", "backprop.md", "numerical-stability-and-init.md", "generalization-deep.md", "dropout.md"]
OUT = HERE / "d2l_mlp_chapter.pdf"
DROP_HEADINGS = {"Exercises"}  # numbered questions that read as noise out of their code context


def to_markdown(path: Path, shift: int) -> str:
    """One d2l section as plain markdown: headings shifted down by ``shift`` levels, paragraphs as cleaned."""
    out, skipping = [], 0
    for block in markdown_blocks(path.read_text()):
        if block.level:
            skipping = block.level if block.text in DROP_HEADINGS else (skipping if skipping and block.level > skipping else 0)
            if skipping:
                continue
            out.append("#" * min(block.level + shift, 6) + " " + block.text)
        elif not skipping:
            text = re.sub(r"\s*\n\s*", " ", block.text) if "$$" not in block.text else block.text
            out.append(text)
    return "\n\n".join(out) + "\n"


def main() -> int:
    index = markdown_blocks((CHAPTER / "index.md").read_text())
    parts = ["# " + index[0].text, "\n\n".join(b.text for b in index[1:] if not b.level)]
    parts += [to_markdown(CHAPTER / name, shift=1) for name in SECTIONS]
    source = "\n\n".join(parts)
    header = r"""
\usepackage{amsmath,amssymb}
\hypersetup{bookmarksnumbered=true}
"""
    with tempfile.TemporaryDirectory() as tmp:
        md, hdr = Path(tmp) / "book.md", Path(tmp) / "header.tex"
        md.write_text(source)
        hdr.write_text(header)
        cmd = [
            "pandoc", str(md), "-o", str(OUT), "--pdf-engine=pdflatex", "--top-level-division=chapter", "-N",
            "-V", "documentclass=book", "-V", "classoption=twoside", "-V", "papersize=a4", "-V", "fontsize=11pt",
            "-V", "geometry:margin=2.5cm", "-V", "title=Multilayer Perceptrons",
            "-V", "author=Aston Zhang, Zachary C. Lipton, Mu Li, Alexander J. Smola (Dive into Deep Learning, CC BY-SA 4.0)",
            "-H", str(hdr),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
