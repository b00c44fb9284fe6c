"""alignkit: the human-feedback pipeline for language models."""

__version__ = "0.1.0"
