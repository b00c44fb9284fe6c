"""Keep library chatter (per-save progress bars, known-harmless warnings) out of alignkit's output."""

from __future__ import annotations

import logging


def quiet_libraries() -> None:
    """Silence transformers/accelerate info logs and hub progress bars; alignkit prints its own progress."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    # bitsandbytes 0.50 tries a hub kernel for its CPU 4-bit matmul on import and warns when offline; it falls
    # back to its own kernels, so the warning (and the kernels package's trust-check notice) is noise here
    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
