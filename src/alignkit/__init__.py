"""alignkit: the human-feedback pipeline for language models.

``from alignkit import RewardModel`` is resolved lazily, so ``import alignkit`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RewardModel", "__version__"]

if TYPE_CHECKING:
    from alignkit.models.reward import RewardModel


def __getattr__(name: str) -> Any:
    if name == "RewardModel":
        from alignkit.models.reward import RewardModel

        return RewardModel
    raise AttributeError(f"module 'alignkit' has no attribute {name!r}")
