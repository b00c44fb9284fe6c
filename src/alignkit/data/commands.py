"""``alignkit data inspect``: its options schema (pydantic only at import) and entry point (the heavy imports
inside). Registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed


class InspectOptions(Closed):
    """``alignkit data inspect PATH``: what a data file holds, as the trainers will read it."""

    path: Annotated[str, Opt(positional=True)] = Field(description="data file, datasets directory or hub dataset name")
    format: str = Field("auto", description="row format (default: detect)")
    tokenizer: str | None = Field(None, description="model/tokenizer dir (default: a small tokenizer trained on the data)")
    split: str = Field("train", description="split of a datasets directory or hub dataset")
    max_length: int = Field(1024, description="token length counted as too long in the report")


def inspect(opts: InspectOptions) -> int:
    from alignkit.data.inspect import inspect_data, print_report

    tokenizer = None
    if opts.tokenizer:
        from alignkit.models.loading import load_tokenizer

        tokenizer = load_tokenizer(opts.tokenizer)
    report = inspect_data(opts.path, tokenizer=tokenizer, fmt=opts.format, split=opts.split, max_length=opts.max_length)
    print_report(report)
    return 0
