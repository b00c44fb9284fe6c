"""Atomic checkpoints: write ``checkpoints/.tmp-step-N`` completely, then rename to ``step-N``.

A directory named ``step-N`` is therefore always complete; a run killed mid-write leaves only a
``.tmp-*`` directory, which the next run removes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1][1] if dirs else None


def remove_partial(root: str | Path) -> list[Path]:
    """Delete ``.tmp-*`` leftovers of an interrupted save; returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def save_checkpoint(accelerator: Any, root: str | Path, step: int, state: dict, keep: int, extra=None) -> Path:
    """Save accelerate state (model, optimizer, scheduler, RNG) + ``state`` atomically as ``root/step-N``.

    ``extra(path)`` may write more files (e.g. a loadable ``model/`` dir) before the rename.
    Keeps the newest ``keep`` checkpoints.
    """
    root = Path(root)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        if extra is not None:
            extra(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> dict:
    """Restore accelerate state from ``path`` and return its trainer state."""
    path = Path(path)
    accelerator.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text())
