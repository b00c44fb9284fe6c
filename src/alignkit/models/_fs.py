"""Atomic directory writes for the models layer: ``alignkit.io_atomic.atomic_dir`` raising ``ModelError``."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from alignkit.io_atomic import atomic_dir as _atomic_dir
from alignkit.models.errors import ModelError


def atomic_dir(out_dir: str | os.PathLike, *, overwrite: bool) -> AbstractContextManager[Path]:
    """``alignkit.io_atomic.atomic_dir`` whose target-path errors (not a directory, not empty) are ``ModelError``."""
    return _atomic_dir(out_dir, overwrite=overwrite, error=ModelError)
