"""Atomic, checksummed checkpoints: write ``checkpoints/.tmp-step-N`` completely, then rename to ``step-N``.

A directory named ``step-N`` is therefore always complete; a run killed mid-write leaves only a
``.tmp-*`` directory, which the next run removes. Each checkpoint also holds

- ``config.yaml``: the run's resolved config as it was when the checkpoint was written (a copy of
  ``output_dir/config.yaml``), which a resume compares with the new config;
- ``manifest.json``: the size and sha256 of every other file, written last, before the rename.

A resume verifies the manifest (:func:`usable_checkpoint`) and falls back to the newest checkpoint that
verifies. A checkpoint without a manifest (written before manifests existed) is accepted with a warning.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(root: str | Path) -> list[tuple[int, Path]]:
    """Checkpoints under ``root`` as (step, path), oldest first (complete ones, or damaged ones that still
    have their state file or manifest)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and ((p / STATE_FILE).is_file() or (p / MANIFEST_FILE).is_file()):
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(path: Path) -> list[Path]:
    """Every file under ``path`` but the manifest, in a stable order."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() != MANIFEST_FILE)


def write_manifest(path: Path) -> None:
    """Record the size and sha256 of every file under ``path`` in ``path/manifest.json``."""
    files = {p.relative_to(path).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(path)}
    (path / MANIFEST_FILE).write_text(json.dumps({"version": 1, "files": files}, indent=1))


def save_checkpoint(accelerator: Any, root: str | Path, step: int, state: dict, keep: int, extra=None) -> Path:
    """Save accelerate state (model, optimizer, scheduler, RNG) + ``state`` atomically as ``root/step-N``.

    ``extra(path)`` may write more files (e.g. a loadable ``model/`` dir) before the rename. The run's
    ``root/../config.yaml`` is copied in, and ``manifest.json`` (checksums of every file) is written last.
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
        run_config = root.parent / CONFIG_FILE
        if run_config.is_file():
            shutil.copyfile(run_config, tmp / CONFIG_FILE)
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


_verified: dict[Path, tuple] = {}  # checkpoint -> (name, size, mtime) of its files when it last verified


def _signature(path: Path) -> tuple:
    return tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(path))


def verify_checkpoint(path: str | Path) -> str | None:
    """What is wrong with the checkpoint at ``path`` (one phrase), or None when every file matches its manifest.

    Without a manifest (an older checkpoint) only its state file is checked; the caller warns."""
    path = Path(path)
    signature = _signature(path)
    if _verified.get(path) == signature:  # checked already in this process and unchanged since
        return None
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        try:
            json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            return f"{STATE_FILE} unreadable ({type(e).__name__})"
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST_FILE} unreadable ({type(e).__name__})"
    for name, entry in files.items():
        p = path / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != entry["size"]:
            return f"{name} has {p.stat().st_size} bytes, {entry['size']} when saved"
        if _sha256(p) != entry["sha256"]:
            return f"{name} does not match its checksum"
    _verified[path] = signature
    return None


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from (None: start from scratch) and what was passed over on the way."""

    path: Path | None
    skipped: list[str] = field(default_factory=list)  # "step-N: what is wrong" of each newer, damaged checkpoint
    unverified: bool = False  # the checkpoint has no manifest (written by an older alignkit)


def usable_checkpoint(root: str | Path) -> ResumePoint:
    """The newest checkpoint under ``root`` that verifies; a one-line ``TrainingError`` when there are
    checkpoints but none verifies."""
    from alignkit.training.errors import TrainingError

    dirs = checkpoint_dirs(root)
    skipped = []
    for _, path in reversed(dirs):
        problem = verify_checkpoint(path)
        if problem is None:
            return ResumePoint(path, skipped, unverified=not (path / MANIFEST_FILE).is_file())
        skipped.append(f"{path.name}: {problem}")
    if skipped:
        raise TrainingError(
            f"no checkpoint in {root} can be resumed from ({'; '.join(skipped)}); move them away or set resume: never "
            "to start over"
        )
    return ResumePoint(None)


def load_checkpoint(accelerator: Any, path: str | Path) -> dict:
    """Restore accelerate state from ``path`` and return its trainer state (a one-line ``TrainingError`` when it
    cannot be loaded)."""
    from alignkit.training.errors import TrainingError

    path = Path(path)
    try:
        accelerator.load_state(str(path))
        return json.loads((path / STATE_FILE).read_text())
    except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint is reported the same way
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise TrainingError(
            f"cannot load checkpoint {path} ({type(e).__name__}: {first}); move it away to resume from an older one, "
            "or set resume: never to start over"
        ) from e
