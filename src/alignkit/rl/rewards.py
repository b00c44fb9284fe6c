"""Where RL stages get scores from: a reward model directory, or a Python function.

Both are seen through one call, ``source(prompts, responses) -> list[float]`` (an ``alignkit.scoring.Scorer``
that never returns a missing score: a non-finite one is a ``RewardError``), where ``prompts`` are chat
prompts (message lists) and ``responses`` decoded text. A reward model scores them with its own tokenizer
(``RewardModel.score``), so it may differ from the policy's. A function ``fn(prompts: list[str],
responses: list[str]) -> list[float]`` gets each prompt as plain text: the user message for a one-turn
prompt, ``"User: …\\n\\nAssistant: …\\n\\nUser: …"`` for longer ones; a function with a ``references``
parameter also gets each prompt's reference answer (the data row's completion, None where there is none).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from alignkit.data.examples import prompt_text
from alignkit.errors import UserError
from alignkit.scoring import Scorer


class RewardError(UserError, ValueError):
    """A reward source that cannot be loaded or returned unusable scores (one line for the user)."""


def load_reward_function(spec: str) -> Callable:
    """``"path/to/file.py:fn"`` or ``"package.module:fn"`` -> the function."""
    if ":" not in spec:
        raise RewardError(f"reward.function {spec!r}: expected 'file.py:function' or 'module:function'")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise RewardError(f"reward.function {spec!r}: file {path} not found")
        mod_name = f"alignkit_reward_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:  # the user's file: report it in one line
            raise RewardError(f"reward.function {spec!r}: importing {path} failed: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise RewardError(f"reward.function {spec!r}: cannot import module {target!r}: {err}") from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RewardError(f"reward.function {spec!r}: {target} has no function {name!r}")
    return fn


def takes_references(fn: Callable) -> bool:
    """Whether reward function ``fn`` has a ``references`` parameter (then it gets each prompt's reference answer)."""
    try:
        return "references" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class RewardSource(Scorer):
    """A ``Scorer``: finite scores for (prompt, response) pairs; ``stats`` are the reward model's stored (mean, std) when it has them."""

    def __init__(
        self,
        *,
        model_dir: str | None = None,
        function: str | None = None,
        kwargs: dict | None = None,
        device="cpu",
        batch_size: int = 16,
        dtype: str = "float32",
    ):
        """``model_dir`` (loaded on ``device`` with weights in ``dtype``, e.g. "bfloat16") or ``function`` (with
        ``kwargs``); ``batch_size`` responses per reward-model forward."""
        self.batch_size = batch_size
        self.model = self.fn = None
        self.stats: tuple[float, float] | None = None
        if model_dir is not None:
            from alignkit.models.reward import RewardModel

            self.model = RewardModel.load(model_dir, device=device, dtype=dtype)
            spec = getattr(self.model, "spec", None)
            mean, std = getattr(spec, "reward_mean", None), getattr(spec, "reward_std", None)
            if mean is not None and std:
                self.stats = (float(mean), float(std))
            self.name = str(model_dir)
        else:
            self.fn = load_reward_function(function)
            self.kwargs = dict(kwargs or {})
            self.takes_references = takes_references(self.fn)
            self.name = function + (f" {self.kwargs}" if self.kwargs else "")

    def __call__(
        self, prompts: Sequence, responses: Sequence[str], references: Sequence[str | None] | None = None
    ) -> list[float]:
        """One finite score per response. ``references`` (one per response, e.g. the data row's answer) go to a
        function that has a ``references`` parameter; others, and reward models, do not see them."""
        if self.model is not None:
            scores = list(self.model.score(list(prompts), list(responses), batch_size=self.batch_size))
        else:
            kw = dict(self.kwargs)
            if self.takes_references:
                kw["references"] = list(references) if references is not None else [None] * len(responses)
            try:
                scores = self.fn([prompt_text(p) for p in prompts], list(responses), **kw)
            except UserError:
                raise
            except Exception as err:  # the user's function: one line naming it
                raise RewardError(f"reward function {self.name}: raised {type(err).__name__}: {err}") from err
            try:
                scores = [float(s) for s in scores]
            except (TypeError, ValueError) as err:
                raise RewardError(f"reward function {self.name}: returned a non-number ({err})") from None
        if len(scores) != len(responses):
            raise RewardError(f"reward source {self.name}: {len(scores)} scores for {len(responses)} responses")
        bad = [s for s in scores if not math.isfinite(s)]
        if bad:
            raise RewardError(f"reward source {self.name}: returned non-finite scores ({bad[:3]})")
        return scores
