"""Errors of the RAG, cache and serving layers that are the user's to fix (the CLI prints them as one line)."""

from alignkit.errors import UserError


class RagError(UserError):
    """A bad document, index directory, cache directory or request: the message names the path and the field."""
