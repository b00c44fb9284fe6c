"""Errors a training stage raises for the user to act on."""

from alignkit.errors import UserError


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what was saved and what to do."""


def stop_if_not_finite(loss: float, step: int, save) -> None:
    """Before the optimizer step of 0-based ``step``: if ``loss`` is nan/inf, ``save(step)`` (the state after the
    previous step; it returns where) and raise a one-line ``TrainingError`` saying so."""
    import math

    if math.isfinite(loss):
        return
    where = save(step)
    raise TrainingError(
        f"step {step + 1}: the loss is {loss} (not finite); the last good state (after step {step}) "
        f"is saved in {where}. Lower train.learning_rate or check the data, then run again to resume."
    )
