"""Keep library chatter (per-save progress bars, known-harmless warnings) out of alignkit's output."""

from __future__ import annotations

import logging


def quiet_import_notices() -> None:
    """Before anything imports bitsandbytes: version 0.50 asks the Hub for a CPU 4-bit kernel on import and logs
    two lines when it cannot have it (offline), then uses its own kernels; those lines are noise for alignkit."""
    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """Silence transformers/accelerate info logs and hub progress bars; alignkit prints its own progress."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    quiet_import_notices()
