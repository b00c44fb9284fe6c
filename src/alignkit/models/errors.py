"""The one error type the models layer raises for user mistakes."""

from __future__ import annotations


class ModelError(ValueError):
    """A user-facing problem with a model, adapter or output path; ``str(err)`` is one line."""
