"""A rich progress bar for training loops: loss, learning rate, tokens/s, ETA."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def training_progress(enabled: bool = True) -> Progress:
    """A Progress whose task takes a ``stats`` field (a short string of the latest metrics)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        refresh_per_second=4,
    )
