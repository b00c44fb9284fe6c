"""Layered imports: losses, RL maths and configs must not pull in transformers; the CLI starts light."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "alignkit.losses.sft",
        "alignkit.losses.reward",
        "alignkit.losses.preference",
        "alignkit.losses.ppo",
        "alignkit.rl",
        "alignkit.rl.kl",
        "alignkit.rl.advantages",
        "alignkit.rl.stats",
        "alignkit.rl.aggregate",
        "alignkit.rl.rollout",
        "alignkit.config.sft",
        "alignkit.config.reward",
        "alignkit.training.batching",
        "alignkit.eval.reward_metrics",
        "alignkit.cli",
        "alignkit",
    ],
)
def test_light_modules_do_not_import_transformers(module):
    code = f"import sys, {module}; heavy = [m for m in ('transformers', 'peft', 'accelerate', 'datasets') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{module} imports {out}"
