"""Tier (c): the DPO stage on two data-parallel processes (torchrun + accelerate, gloo on CPU) = one process
accumulating the same two micro-batches: pair counts and ORPO/KTO step quantities all-reduced, the reference
precompute sharded and gathered back in order, eval sharded."""

import json

import pytest

from alignkit.cli import main
from tests.conftest import torchrun, write_dpo_config


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss,ref", [({"type": "sigmoid"}, {"precompute": True}), ({"type": "kto"}, {"precompute": False})])
def test_two_processes_equal_one_process_accumulating(tiny_model_dir, tmp_path, loss, ref):
    train = {"max_steps": 3, "batch_size": 2, "eval_every": 2}
    kw = dict(loss=loss, ref=ref, data={"eval_fraction": 0.25})
    one = write_dpo_config(tmp_path / "one.yaml", tiny_model_dir, tmp_path / "one", train={**train, "grad_accum": 2}, **kw)
    two = write_dpo_config(tmp_path / "two.yaml", tiny_model_dir, tmp_path / "two", train={**train, "grad_accum": 1}, **kw)
    assert main(["dpo", str(one)]) == 0
    proc = torchrun("dpo", two)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    keys = ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen") + (("kl",) if loss["type"] == "kto" else ())
    ta = [[r["step"], *(r[k] for k in keys)] for r in a if "loss" in r]
    tb = [[r["step"], *(r[k] for k in keys)] for r in b if "loss" in r]
    assert [r[0] for r in ta] == [r[0] for r in tb] == [1, 2, 3]
    for x, y in zip(ta, tb):  # logps/chosen sums ~500 token log-probs: float32 resolves it to ~3e-5, hence rel
        assert x == pytest.approx(y, abs=1e-5, rel=1e-6)
    ea = [r for r in a if "eval_loss" in r]
    eb = [r for r in b if "eval_loss" in r]
    assert len(ea) == len(eb) == 2
    for x, y in zip(ea, eb):
        assert x["eval_loss"] == pytest.approx(y["eval_loss"], abs=1e-5) and x["eval_n"] == y["eval_n"]
