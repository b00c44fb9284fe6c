"""The pieces every self-contained HTML report is built from (``eval.report``, ``orchestrate.report``).

A report is one file: inline CSS, no scripts, fonts or links; plots are drawn with matplotlib's Agg canvas
(``figure``: no pyplot, no global backend switch) and embedded as base64 PNG data URIs (``png``); every text
goes through ``e`` (HTML escaping). ``page`` wraps a body in the shared skeleton and style, ``table`` draws a
header and rows (first column text, the others right-aligned numbers), ``warning_box`` a red box that a reader
cannot miss. This module imports only the standard library (matplotlib inside ``figure``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sxs td { max-width: 40em; }
pre { white-space: pre-wrap; word-wrap: break-word; margin: 0; font-family: ui-monospace, monospace; font-size: 0.9em; }
.reward { font-size: 0.85em; color: #555; margin-bottom: 0.3em; }
td.best { background: #eef8ee; }
.note { color: #666; font-size: 0.9em; }
.warning { border: 2px solid #c44e52; background: #fdecea; color: #7a1f22; padding: 0.6em 1em; margin: 1em 0; }
.warning h2 { margin: 0 0 0.4em 0; border: none; font-size: 1.1em; }
.warning ul { margin: 0; padding-left: 1.4em; }
img { max-width: 100%; }
"""


def e(x: object) -> str:
    """``x`` as text, HTML-escaped (quotes too, so it is safe inside attributes)."""
    return html.escape(str(x), quote=True)


def number(v: object) -> float | None:
    """``v`` as a float when it is a finite int or float (not a bool), else None: what a report can plot or print."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def figure(width: float, height: float):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot state), sized in inches, constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png(fig, alt: str) -> str:
    """The figure as an ``<img>`` with a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, cls: str | None = None) -> str:
    """A ``<table>``: a header row, then one row per entry of ``rows``; the first cell of a row is text, the
    others are right-aligned numbers (``td.num``). Every cell is escaped."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + f"<td>{e(cells[0])}</td>" + "".join(f'<td class="num">{e(c)}</td>' for c in cells[1:]) + "</tr>"
        for cells in rows
    )
    klass = f' class="{e(cls)}"' if cls else ""
    return f"<table{klass}><tr>{head}</tr>{body}</table>"


def warning_box(title: str, lines: Sequence[str]) -> str:
    """A red box headed ``title`` listing ``lines``; empty when there are none."""
    if not lines:
        return ""
    items = "".join(f"<li>{e(line)}</li>" for line in lines)
    return f'<div class="warning" role="alert"><h2>{e(title)}</h2><ul>{items}</ul></div>'


def page(title: str, body: str, *, extra_css: str = "") -> str:
    """A whole HTML document: ``title`` (escaped here) as the window title and ``<h1>``, then ``body`` (HTML)."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>{CSS}{extra_css}</style>
</head>
<body>
<h1>{e(title)}</h1>
{body}
</body>
</html>
"""
