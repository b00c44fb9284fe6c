"""Read raw rows, each with where it came from, from local files, ``datasets`` folders or the hub.

``read_rows`` is the only place that knows about file kinds; everything downstream sees
``(row: dict, ref: RowRef)`` pairs.

| source                                   | ``RowRef.line`` is                         |
| ---------------------------------------- | ------------------------------------------ |
| ``.jsonl``, ``.jsonl.gz``                | 1-based line in the (decompressed) file    |
| ``.json``, ``.json.gz`` holding a list   | 1-based index in the list                  |
| ``.json``, ``.json.gz`` holding lines    | 1-based line (treated as JSON lines)       |
| ``.parquet``, ``.csv``                   | 1-based data row (the CSV header excluded) |
| ``datasets`` folder (``save_to_disk``)   | 1-based row of the split                   |
| hub dataset name                         | 1-based row of the split                   |

A source that looks like a local path (it has a known suffix, starts with ``/``, ``.`` or ``~``,
contains a backslash, or has more than one ``/``) and does not exist is a "not found" ``DataError``;
only a bare ``name`` or ``owner/name`` is passed to ``datasets.load_dataset``.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
from collections.abc import Iterator
from typing import IO

from alignkit.data.errors import DataError, RowRef

_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet", ".csv")
_LOOKS_LOCAL_SUFFIXES = _SUFFIXES + (".gz", ".txt", ".arrow", ".tsv")


def read_rows(source: str, *, split: str = "train") -> Iterator[tuple[dict, RowRef]]:
    """Yield ``(row, ref)`` for every row of ``source``, lazily (JSONL is streamed line by line).

    Args:
        source: a local file (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.json.gz``, ``.parquet``,
            ``.csv``), a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or a
            ``DatasetDict``), or a hub dataset name (``owner/name``).
        split: the split to read from a ``DatasetDict`` folder or a hub dataset.

    Raises:
        DataError: the source is not found, its kind is unsupported, a line is not valid JSON or not
            UTF-8 (``file:line: not UTF-8 (byte N: 0xXX) of the line``), a row is not a JSON object, or
            ``split`` is not in a ``DatasetDict``. "Not found" and
            "unsupported" are raised by the call itself; the others while iterating.
    """
    rows = read_rows_or_errors(source, split=split)

    def checked() -> Iterator[tuple[dict, RowRef]]:
        for row, ref in rows:
            if isinstance(row, DataError):
                raise row
            yield row, ref

    return checked()


def read_rows_or_errors(source: str, *, split: str = "train") -> Iterator[tuple[dict | DataError, RowRef]]:
    """Like ``read_rows``, but a bad row (malformed JSON line, not UTF-8, not an object) is yielded as its
    ``DataError`` in place of the row, so that a caller can skip it and go on reading.

    Errors that concern the whole source (not found, unsupported kind, a ``.json`` list that does not
    parse, a missing split) are still raised.
    """
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return _read_datasets_dir(path, split)
    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith(".jsonl") or lower.endswith(".jsonl.gz"):
            return _read_jsonl(path)
        if lower.endswith(".json") or lower.endswith(".json.gz"):
            return _read_json(path)
        if lower.endswith(".parquet"):
            return _read_parquet(path)
        if lower.endswith(".csv"):
            return _read_csv(path)
        raise DataError(source, f"unsupported file kind; expected one of {', '.join(_SUFFIXES)} or a datasets folder")
    if _looks_local(source):
        raise DataError(source, "not found (no such file or directory)")
    return _read_hub(source, split)


def _looks_local(source: str) -> bool:
    lower = source.lower()
    return (
        lower.endswith(_LOOKS_LOCAL_SUFFIXES)
        or source.startswith(("/", ".", "~"))
        or "\\" in source
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
    )


def _open_text(path: str, newline: str | None = None) -> IO[str]:
    """The file as text; a byte that is not UTF-8 is read as a lone surrogate (``surrogateescape``) so that it can be
    reported with its line (``not_utf8``) instead of failing the whole read."""
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline=newline)
    return open(path, encoding="utf-8", errors="surrogateescape", newline=newline)


_ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def not_utf8(text: str, of: str = "") -> str | None:
    """``"not UTF-8 (byte N{of}: 0xXX) ..."`` for the first undecodable byte of ``text`` (N: its 1-based byte offset in
    ``text``), None when it is all UTF-8."""
    m = _ESCAPED.search(text)
    if m is None:
        return None
    n = len(text[: m.start()].encode("utf-8", "surrogateescape")) + 1
    return f"not UTF-8 (byte {n}{of}: 0x{ord(m.group()) - 0xDC00:02x}); re-save the file as UTF-8"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _check_object(row: object, ref: RowRef) -> dict | DataError:
    if not isinstance(row, dict):
        return DataError(ref, f"row is a JSON {type(row).__name__}, expected a JSON object")
    return row


def _read_jsonl(path: str, hint: str = "") -> Iterator[tuple[dict | DataError, RowRef]]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            ref = RowRef(path, lineno)
            bad = not_utf8(line, " of the line")
            if bad:
                yield DataError(ref, bad), ref
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield DataError(ref, f"malformed JSON: {e.msg} (column {e.colno}){hint}"), ref
                continue
            yield _check_object(row, ref), ref


def _first_char(path: str) -> str:
    with _open_text(path) as f:
        while True:
            chunk = f.read(256)
            if not chunk:
                return ""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]


def _read_json(path: str) -> Iterator[tuple[dict | DataError, RowRef]]:
    if _first_char(path) != "[":
        # Not a list: a JSON-lines file that happens to be named .json.
        yield from _read_jsonl(path, hint="; a .json file must hold a list of objects or one object per line")
        return
    with _open_text(path) as f:
        text = f.read()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(RowRef(path, e.lineno), f"malformed JSON: {e.msg} (column {e.colno})") from None
    escaped = _ESCAPED.search(text) is not None
    for i, row in enumerate(rows, start=1):
        ref = RowRef(path, i)
        bad = next((b for x in _strings(row) for b in [not_utf8(x, " of a string in this item")] if b), None) if escaped else None
        yield (DataError(ref, bad) if bad else _check_object(row, ref)), ref


def _read_parquet(path: str) -> Iterator[tuple[dict, RowRef]]:
    import pyarrow.parquet as pq

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            i += 1
            yield row, RowRef(path, i)


def _read_csv(path: str) -> Iterator[tuple[dict | DataError, RowRef]]:
    with _open_text(path, newline="") as f:
        reader = csv.DictReader(f)
        bad = not_utf8(",".join(reader.fieldnames or []), " of the header")
        if bad:
            raise DataError(RowRef(path, 1), f"the header is {bad}")
        for i, row in enumerate(reader, start=1):
            ref = RowRef(path, i)
            bad = next(((k, b) for k, v in row.items() if isinstance(v, str) for b in [not_utf8(v, " of the value")] if b), None)
            yield (DataError(ref, bad[1], field=bad[0]) if bad else dict(row)), ref


def _read_datasets_dir(path: str, split: str) -> Iterator[tuple[dict, RowRef]]:
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DataError(path, f"not a datasets folder (save_to_disk): {e}") from None
    source = path
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(path, f"split {split!r} not found; available: {', '.join(ds.keys())}", field="split")
        ds = ds[split]
        source = f"{path}[{split}]"
    for i, row in enumerate(ds, start=1):
        yield row, RowRef(source, i)


def _read_hub(name: str, split: str) -> Iterator[tuple[dict, RowRef]]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # network, auth, missing dataset or split: one line for the user
        from alignkit.errors import first_line

        raise DataError(
            name, f"not a local file or directory, and loading it from the hub failed: {type(err).__name__}: {first_line(err)}"
        ) from None
    source = f"{name}[{split}]"
    for i, row in enumerate(ds, start=1):
        yield row, RowRef(source, i)
