"""Tier (c): a reward model on two data-parallel processes (torchrun + accelerate, gloo on CPU) = one
process accumulating the same two micro-batches: pair counts all-reduced, eval and reward statistics
sharded and gathered back in order."""

import json

import pytest

from alignkit.cli import main
from tests.conftest import torchrun, write_rm_config


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one_process_accumulating(tiny_model_dir, tmp_path):
    train = {"max_steps": 3, "batch_size": 2, "eval_every": 2}
    data = {"eval_fraction": 0.25}
    one = write_rm_config(tmp_path / "one.yaml", tiny_model_dir, tmp_path / "one", train={**train, "grad_accum": 2}, data=data)
    two = write_rm_config(tmp_path / "two.yaml", tiny_model_dir, tmp_path / "two", train={**train, "grad_accum": 1}, data=data)
    assert main(["rm", str(one)]) == 0
    proc = torchrun("rm", two)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    train_a = [(r["step"], r["loss"], r["accuracy"]) for r in a if "loss" in r]
    train_b = [(r["step"], r["loss"], r["accuracy"]) for r in b if "loss" in r]
    assert [s for s, _, _ in train_a] == [s for s, _, _ in train_b] == [1, 2, 3]
    for (_, la, aa), (_, lb, ab) in zip(train_a, train_b):
        assert la == pytest.approx(lb, abs=1e-5) and aa == ab
    eval_a = [r for r in a if "eval_accuracy" in r]
    eval_b = [r for r in b if "eval_accuracy" in r]
    assert len(eval_a) == len(eval_b) == 2 and eval_b[-1]["eval_n"] == 8
    for x, y in zip(eval_a, eval_b):
        assert x["eval_accuracy"] == y["eval_accuracy"] and x["eval_loss"] == pytest.approx(y["eval_loss"], abs=1e-5)
    sa = json.loads((tmp_path / "one" / "summary.json").read_text())
    sb = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert sa["reward_mean"] == pytest.approx(sb["reward_mean"], abs=1e-5)
