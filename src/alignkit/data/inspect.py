"""``alignkit data inspect``: what a data source looks like after alignkit has read and tokenized it.

``inspect_data`` reads every row (bad rows are counted and the first error kept, never fatal),
tokenizes the examples and measures their lengths; ``print_report`` shows the detected format, the
row counts, the token-length percentiles and the first example as the model sees it, with the part
that carries no loss marked ``[no loss]`` and dimmed/struck through (visible without colour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alignkit.data.errors import DataError
from alignkit.data.examples import Example
from alignkit.data.formats import FORMATS, convert_rows
from alignkit.data.tokenize import _render

NO_LOSS_MARK = "[no loss]"
LOSS_MARK = "[loss]"
TOKENIZER_TRAIN_ROWS = 2000


@dataclass
class InspectReport:
    source: str
    format: str | None  # None when no row's format could be detected
    rows: int  # rows read
    examples: int  # rows converted and tokenized
    skipped: int  # rows with an error (conversion or tokenization)
    first_error: str | None  # the first such error, one line
    max_length: int
    over_max_length: int  # examples longer than max_length (they would be truncated or dropped)
    p50: int  # token-length percentiles (prompt + completion, before truncation)
    p90: int
    p99: int
    max: int
    first_example: str  # the first example rendered as the model sees it
    first_example_segments: list[tuple[str, bool]] = field(default_factory=list)  # (text, learned) runs
    tokenizer_trained: bool = False  # True when no tokenizer was given and a small one was trained here


def _texts(ex: Example) -> list[str]:
    return [m.content for m in ex.prompt] + [ex.completion] + ([ex.rejected] if ex.rejected else [])


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _segments(tokenizer, ids: list[int], mask: list[int]) -> list[tuple[str, bool]]:
    """Decode runs of tokens that share a mask value: ``[(text, learned), ...]``."""
    out: list[tuple[str, bool]] = []
    start = 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or mask[t] != mask[start]:
            out.append((tokenizer.decode(ids[start:t], skip_special_tokens=False), bool(mask[start])))
            start = t
    return out


def inspect_data(
    source: str,
    *,
    tokenizer=None,
    fmt: str = "auto",
    split: str = "train",
    max_length: int = 1024,
    console=None,
    max_rows: int | None = None,
) -> InspectReport:
    """Read, convert and tokenize ``source`` and describe it; print the report if ``console`` is given.

    Args:
        tokenizer: the tokenizer to measure with (it needs a chat template for chat data); None
            trains a small byte-level BPE one (``build_tokenizer``) on the first 2000 rows' texts.
        fmt: a format name or "auto" (detected from the first row that parses).
        max_rows: read at most this many rows (all by default).

    Raises:
        DataError: only for the source as a whole (not found, unsupported kind, no rows).
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(source, f"unknown format {fmt!r}; expected one of auto, {', '.join(FORMATS)}", field="format")
    loaded = convert_rows(source, fmt=fmt, split=split, max_rows=max_rows, stop_on_error=False)
    used, examples, errors, rows = loaded.format, loaded.examples, list(loaded.skipped), loaded.rows_read

    trained = tokenizer is None and bool(examples)
    if trained:
        from alignkit.models.tokenizer import build_tokenizer

        texts = [t for ex in examples[:TOKENIZER_TRAIN_ROWS] for t in _texts(ex)]
        tokenizer = build_tokenizer(texts)

    lengths: list[int] = []
    first: tuple[list[int], list[int]] | None = None
    for ex in examples:
        try:
            ids, mask = _render(ex, tokenizer, train_on_prompt=False)
        except (DataError, ValueError) as err:
            errors.append(err if isinstance(err, DataError) else DataError(ex.ref, str(err)))
            continue
        lengths.append(len(ids))
        if first is None:
            first = (ids, mask)

    lengths.sort()
    segments = _segments(tokenizer, *first) if first else []
    report = InspectReport(
        source=source,
        format=used,
        rows=rows,
        examples=len(lengths),
        skipped=len(errors),
        first_error=str(errors[0]) if errors else None,
        max_length=max_length,
        over_max_length=sum(n > max_length for n in lengths),
        p50=_percentile(lengths, 50) if lengths else 0,
        p90=_percentile(lengths, 90) if lengths else 0,
        p99=_percentile(lengths, 99) if lengths else 0,
        max=lengths[-1] if lengths else 0,
        first_example="".join(text for text, _ in segments),
        first_example_segments=segments,
        tokenizer_trained=trained,
    )
    if console is not None:
        print_report(report, console)
    return report


def print_report(report: InspectReport, console=None) -> None:
    """Print ``report`` with rich: format, counts, token-length percentiles, the first example."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=f"data: {report.source}", show_header=False)
    table.add_row("format", report.format or "undetected")
    table.add_row("rows read", str(report.rows))
    table.add_row("examples", str(report.examples))
    table.add_row("skipped (errors)", str(report.skipped))
    table.add_row("tokens p50 / p90 / p99 / max", f"{report.p50} / {report.p90} / {report.p99} / {report.max}")
    table.add_row(f"longer than max_length={report.max_length}", str(report.over_max_length))
    if report.tokenizer_trained:
        table.add_row("tokenizer", "none given: lengths use a small BPE tokenizer trained on these rows")
    console.print(table)
    if report.first_error:
        console.print(Text(f"first error: {report.first_error}", style="red"))
    if not report.first_example_segments:
        return
    console.print(Text(f"first example ({NO_LOSS_MARK} = no loss, {LOSS_MARK} = learned):", style="bold"))
    text = Text()
    for chunk, learned in report.first_example_segments:
        if learned:
            text.append(LOSS_MARK, style="bold green")
            text.append(chunk, style="green")
        else:
            text.append(NO_LOSS_MARK, style="bold")
            text.append(chunk, style="dim strike")
    console.print(text)
