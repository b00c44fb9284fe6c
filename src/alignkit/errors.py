"""The one base of every error the CLI reports as a single line, and what those errors share.

``UserError`` marks a mistake the user can fix (a config key, a data row, a model path, a reward function...):
``alignkit`` prints ``alignkit: error: <message>`` and exits with code 2. Anything else is a bug and keeps its
traceback. Each layer keeps its own subclass, so a caller can still catch one kind:

- ``alignkit.config.base.ConfigError`` (also a ``ValueError``), ``alignkit.data.errors.DataError`` (``ValueError``),
  ``alignkit.models.errors.ModelError`` (``ValueError``), ``alignkit.training.errors.TrainingError``
  (``RuntimeError``), ``alignkit.rl.rewards.RewardError`` (``ValueError``), ``alignkit.judge.judges.JudgeError``
  (``ValueError``), ``alignkit.rag.errors.RagError``, ``alignkit.scoring.ScoreError`` (``ValueError``).

This module imports nothing but the standard library: every layer may import it. It also holds
:func:`require`, the one way an optional dependency is imported (a missing one is a one-line error naming the
extra that installs it).
"""

from __future__ import annotations

import importlib

# optional dependency (the module imported) -> the pyproject extra that installs it
EXTRAS = {
    "faiss": "rag",
    "sentence_transformers": "rag",
    "onnxruntime": "rag",
    "onnx": "rag",
    "pdfminer": "rag",
    "fastapi": "serve",
    "uvicorn": "serve",
    "bitsandbytes": "qlora",
    "vllm": "vllm",
    "psycopg": "postgres",
    "pgvector": "postgres",
    "tensorboard": "tensorboard",
}


class UserError(Exception):
    """A mistake the user can fix; ``str(err)`` is one line saying what and where. The CLI prints it and exits 2."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (a library's multi-line error, cut for a one-line report), or its
    type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class MissingExtra(UserError, ImportError):
    """An optional dependency is not installed; the message names the extra (``pip install 'alignkit[rag]'``)."""


def require(module: str, feature: str):
    """Import and return ``module`` (a dotted name), or raise :class:`MissingExtra`: one line saying that
    ``feature`` needs it and which alignkit extra installs it (from :data:`EXTRAS`, by the top-level package)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = f"pip install 'alignkit[{extra}]'" if extra else f"pip install {top}"
        raise MissingExtra(f"{feature} needs {top}, which is not installed ({first_line(err)}): {how}") from None
