"""Tier (c) for PPO: an update's micro-batching does not change it, and an interrupted run resumes to the same
result (sampling seeded per step, KL controller and reward statistics restored from the checkpoint)."""

import json

import pytest

from alignkit.cli import main
from tests.conftest import interrupt_on_call, write_ppo_config

KEYS = ("reward", "kl", "kl_coef", "policy_loss", "value_loss", "entropy", "clipfrac", "response_length")


def _rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [[r["step"], *(r[k] for k in KEYS)] for r in rows if "policy_loss" in r]


@pytest.mark.parametrize(
    "memory,model", [("separate", {}), ("shared-base", {"finetune": "lora", "lora": {"r": 8, "dropout": 0.0}})]
)
def test_micro_batches_of_an_update_equal_one_batch(tiny_sft_dir, tmp_path, memory, model):
    got = {}
    for name, micro in (("one", 4), ("two", 2)):
        out = tmp_path / name
        cfg = write_ppo_config(
            tmp_path / f"{name}.yaml", tiny_sft_dir, out, memory=memory, model=model, train={"max_steps": 3, "batch_size": micro}
        )
        assert main(["ppo", str(cfg)]) == 0
        got[name] = _rows(out)
    assert len(got["one"]) == 3
    for a, b in zip(got["one"], got["two"]):
        assert a == pytest.approx(b, abs=2e-5, rel=2e-5)


def test_interrupted_run_resumes_to_the_same_result(tiny_sft_dir, tmp_path, monkeypatch):
    import alignkit.algorithms.ppo as ppo

    kw = dict(
        train={"max_steps": 4, "save_every": 2},
        ppo={"rollout_size": 8, "mini_batch_size": 4, "ppo_epochs": 2, "kl_target": 1.0, "kl_horizon": 100},
    )  # adaptive KL: its state must come back too
    ref = tmp_path / "ref"
    assert main(["ppo", str(write_ppo_config(tmp_path / "ref.yaml", tiny_sft_dir, ref, **kw))]) == 0

    out = tmp_path / "interrupted"
    cfg = write_ppo_config(tmp_path / "int.yaml", tiny_sft_dir, out, **kw)
    real = ppo.gae
    interrupt_in_step_3 = interrupt_on_call(3, real)

    monkeypatch.setattr(ppo, "gae", interrupt_in_step_3)
    assert main(["ppo", str(cfg)]) == 130
    assert (out / "checkpoints" / "step-2").exists() and not (out / "final").exists()
    monkeypatch.setattr(ppo, "gae", real)
    assert main(["ppo", str(cfg)]) == 0
    a, b = _rows(out), _rows(ref)
    assert [r[0] for r in a] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-6)
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 2
    assert len({r[3] for r in b}) > 1  # the adaptive coefficient did move
