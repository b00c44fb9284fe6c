"""Tier (c): two data-parallel processes (torchrun + accelerate, gloo on CPU) = one process accumulating 2 micro-batches.

Checks the distributed reduction: token counts all-reduced into the global normaliser, DDP's gradient
averaging undone, each rank taking its own micro-batches of the step.
"""

import json
from pathlib import Path

from alignkit.cli import main
from tests.conftest import torchrun, write_sft_config


def _losses(out: Path):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_two_processes_equal_one_process_accumulating(tiny_model_dir, tmp_path):
    train = {"max_steps": 3, "batch_size": 2}
    one = write_sft_config(tmp_path / "one.yaml", tiny_model_dir, tmp_path / "one", train={**train, "grad_accum": 2})
    two = write_sft_config(tmp_path / "two.yaml", tiny_model_dir, tmp_path / "two", train={**train, "grad_accum": 1})
    assert main(["sft", str(one)]) == 0
    # torchrun sets RANK/WORLD_SIZE; accelerate's Accelerator picks them up (MULTI_CPU, gloo).
    proc = torchrun("sft", two)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3]
    for (_, x), (_, y) in zip(a, b):
        assert abs(x - y) < 1e-5, (a, b)
