"""Several training sources in one run: ``data.train: [a.jsonl, {path: b.jsonl, repeat: 3, name: helpful}]``.

- ``load_examples`` reads a list of ``DataSource`` one after the other and concatenates the examples; each
  example keeps its own ``file:line`` (errors and skips name the row's file), and its ``meta["subset"]``
  is the source's name unless the row carries a subset of its own, so held-out metrics are reported per
  source (``eval_subsets`` of the reward model).
- ``repeat_by_source`` applies each source's ``repeat`` (upsampling a small source) AFTER a stage has held
  out its eval rows, so a held-out row is never also trained on. Every stage that reads ``data.train``
  calls it (SFT, reward model, DPO, PPO prompts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSource:
    path: str  # file, datasets folder or hub name (as for a single source)
    name: str  # label in logs and per-source metrics
    repeat: int = 1  # each training row is used this many times per epoch
    max_rows: int | None = None  # read at most this many rows of this source


def default_name(path: str) -> str:
    """``data/hh-rlhf-helpful/helpful-sample.jsonl.gz`` -> ``helpful-sample``."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv"):
        name = name.removesuffix(suffix)
    return name or path


def as_sources(train: str | Sequence) -> list[DataSource]:
    """A config's ``data.train`` (one path, or a list of paths / ``{path, name, repeat, max_rows}``) as sources."""
    if isinstance(train, str):
        return [DataSource(train, default_name(train))]
    out = []
    for item in train:
        if isinstance(item, str):
            out.append(DataSource(item, default_name(item)))
        else:  # a dict: {path, name, repeat, max_rows} (config.common.TrainSource dumped)
            path = item["path"]
            out.append(DataSource(path, item.get("name") or default_name(path), item.get("repeat") or 1, item.get("max_rows")))
    paths = [s.path for s in out]
    names = [s.name for s in out]
    for label, values in (("path", paths), ("name", names)):
        dup = next((v for v in values if values.count(v) > 1), None)
        if dup is not None:
            from alignkit.data.errors import DataError

            raise DataError(dup, f"data.train lists the {label} {dup!r} twice; give each source once (use repeat: N)")
    return out


def describe(source: str | Sequence[DataSource]) -> str:
    """One line for logs: the path, or ``a (x1) + b (x3)``."""
    if isinstance(source, str):
        return source
    return " + ".join(f"{s.path}" + (f" (x{s.repeat})" if s.repeat != 1 else "") for s in source)


def repeat_by_source(items: list, sources: str | Sequence[DataSource], source_of: Callable[[object], str]) -> list:
    """``items`` with each one from a source of ``repeat: k`` present k times (in place, order kept);
    ``source_of(item)`` is the item's source path (its ``RowRef.source``)."""
    if isinstance(sources, str):
        return items
    k = {s.path: s.repeat for s in sources}
    if all(v == 1 for v in k.values()):
        return items
    return [x for x in items for _ in range(k.get(source_of(x), 1))]
