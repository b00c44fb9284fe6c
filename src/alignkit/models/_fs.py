"""Atomic directory writes: build the output in a temp dir beside the target, then rename it in."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignkit.models.errors import ModelError


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ModelError(f"{out} exists and is not a directory")
        if not overwrite and any(out.iterdir()):
            raise ModelError(f"{out} exists and is not empty (pass --overwrite, or overwrite=True, to replace it)")


@contextmanager
def atomic_dir(out_dir: str | os.PathLike, *, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh temp dir next to ``out_dir``; on clean exit it replaces ``out_dir``.

    Readers never see a half-written ``out_dir``: they see the old one or the new one. On an
    exception the temp dir is removed and ``out_dir`` is left untouched. A non-empty existing
    ``out_dir`` is an error unless ``overwrite`` (checked before the work starts and again at the end).
    """
    out = Path(out_dir).expanduser().absolute()
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()  # plain mkdir, so the final dir gets normal (umask) permissions
    try:
        yield tmp
        _check_target(out, overwrite)
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
