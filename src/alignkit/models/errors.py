"""The one error type the models layer raises for user mistakes."""

from __future__ import annotations

from alignkit.errors import UserError


class ModelError(UserError, ValueError):
    """A user-facing problem with a model, adapter or output path; ``str(err)`` is one line."""
