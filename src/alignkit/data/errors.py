"""Data errors that name the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.errors import UserError


@dataclass(frozen=True)
class RowRef:
    """Where a row came from: a file (or dataset name) and its 1-based line / row number."""

    source: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


class DataError(UserError, ValueError):
    """One bad row or file: ``str(err)`` is a single line ``file:line: field 'x': problem``."""

    def __init__(self, ref: RowRef | str, message: str, field: str | None = None):
        self.ref = ref
        self.field = field
        self.message = message
        where = str(ref)
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


def report_skipped(skipped: list, log, *, show: int = 5) -> None:
    """``log`` the first ``show`` skipped-row errors, then how many more there were."""
    for err in skipped[:show]:
        log(f"  skipped: {err}")
    if len(skipped) > show:
        log(f"  ... and {len(skipped) - show} more skipped rows")
