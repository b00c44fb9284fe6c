"""Atomic writes: build the output beside its target under a temporary name, then rename it in.

Readers never see a half-written file or directory: they see the old one or the new one. Two context
managers, one for a file and one for a directory; both yield the temporary path to write into and, on an
exception, remove it and leave the target untouched. Nothing is fsynced (a rename is atomic against readers
and against a killed writer, not against a power cut). Standard library only: every layer may import this.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path`` (``.NAME.TAG.tmp``, not yet created); on a clean exit it replaces ``path``.

    Write the whole file to the yielded path (``tmp.write_text``, ``save_file(str(tmp))``...). ``mode``, if
    given, is set on it before the rename (otherwise it keeps the permissions it was created with). The
    parent directory must exist. On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_target(out: Path, overwrite: bool, error: Callable[[str], Exception]) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise error(f"{out} exists and is not a directory")
        if not overwrite and any(out.iterdir()):
            raise error(f"{out} exists and is not empty (pass --overwrite, or overwrite=True, to replace it)")


@contextmanager
def atomic_dir(
    out_dir: str | os.PathLike, *, overwrite: bool, error: Callable[[str], Exception] = FileExistsError
) -> Iterator[Path]:
    """Yield a fresh temp dir next to ``out_dir`` (``.NAME.tmp-TAG``); on a clean exit it replaces ``out_dir``.

    On an exception the temp dir is removed and ``out_dir`` is left untouched. A non-empty existing
    ``out_dir`` is an error unless ``overwrite`` (checked before the work starts and again at the end), and
    so is an existing non-directory; ``error`` builds the exception from its one-line message (each layer
    passes its own ``UserError`` subclass). An existing ``out_dir`` is first renamed to ``.NAME.old-TAG``, then
    the new one is renamed in and the old one removed (put back if the second rename fails).
    """
    out = Path(out_dir).expanduser().absolute()
    _check_target(out, overwrite, error)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()  # plain mkdir, so the final dir gets normal (umask) permissions
    try:
        yield tmp
        _check_target(out, overwrite, error)
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its parent directory; returns the path. ``mode``,
    if given, is the file's permissions (see :func:`atomic_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, mode=mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """``rows`` as JSON lines (UTF-8 kept as is), written atomically; returns the path."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
