"""Errors of the RAG, cache and serving layers that are the user's to fix (the CLI prints them as one line)."""


class RagError(Exception):
    """A bad document, index directory, cache directory or request: the message names the path and the field."""
