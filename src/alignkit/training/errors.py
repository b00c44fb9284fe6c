"""Errors a training stage raises for the user to act on."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what was saved and what to do."""
