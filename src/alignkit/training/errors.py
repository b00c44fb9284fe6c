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


def stop_if_update_not_finite(loss: float, step: int, updates_done: int, save, last_saved) -> None:
    """RL stages, before each optimizer update of 0-based ``step`` (``updates_done`` of its updates applied): a
    nan/inf ``loss`` stops the run. Before the step's first update the weights are the state after ``step`` steps,
    saved with ``save(step)`` (``stop_if_not_finite``); after some updates they are between steps, so nothing is
    saved and the one-line ``TrainingError`` names the last checkpoint instead (``last_saved()``: its path or None)."""
    import math

    if updates_done == 0:
        stop_if_not_finite(loss, step, save)
        return
    if math.isfinite(loss):
        return
    where = last_saved()
    raise TrainingError(
        f"step {step + 1}: the loss is {loss} (not finite) at update {updates_done + 1} of the step, after "
        f"{updates_done} of its updates were applied, so the weights are not saved; "
        + (f"the last saved state is {where}." if where else "no checkpoint was saved (train.save_every).")
        + " Lower train.learning_rate or check the data, then run again to resume."
    )
