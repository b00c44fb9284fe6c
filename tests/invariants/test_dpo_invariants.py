"""Tier (b) for the DPO stage: the three reference sources give the same losses; one batch of 4 = 2x2
accumulated = padded; an interrupted run resumes to the same result (with the reference cache reused)."""

import json

import pytest

from alignkit.cli import main
from tests.conftest import interrupt_on_call, write_dpo_config


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train(out, keys=("loss", "rewards/chosen", "rewards/rejected", "logps/chosen")):
    return [(r["step"], *[r[k] for k in keys]) for r in _rows(out) if "loss" in r]


def _same(a, b, tol=1e-5):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        assert x[0] == y[0] and list(x[1:]) == pytest.approx(list(y[1:]), abs=tol, rel=tol)


def _run(tmp_path, model_dir, name, stage="dpo", **sections):
    out = tmp_path / name
    cfg = write_dpo_config(tmp_path / f"{name}.yaml", model_dir, out, **sections)
    assert main([stage, str(cfg)]) == 0
    return out


@pytest.mark.parametrize("loss", ["sigmoid", "kto"])
def test_reference_copy_adapter_off_and_precomputed_give_the_same_losses(tiny_model_dir, tmp_path, loss):
    train = {"max_steps": 3, "learning_rate": 5e-3}
    lora = {"finetune": "lora", "lora": {"r": 4, "dropout": 0.0}}
    runs = {
        "full-copy": dict(model={}, ref={"precompute": False}),
        "full-pre": dict(model={}, ref={"precompute": True}),
        "lora-adapter": dict(model=lora, ref={"precompute": False}),
        "lora-pre": dict(model=lora, ref={"precompute": True}),
        "lora-copy": dict(model=lora, ref={"model": str(tiny_model_dir)}),  # an explicit frozen copy of the base
    }
    got = {
        name: _train(_run(tmp_path, tiny_model_dir, name, loss={"type": loss}, train=train, **kw)) for name, kw in runs.items()
    }
    _same(got["full-copy"], got["full-pre"])
    _same(got["lora-adapter"], got["lora-pre"])
    _same(got["lora-adapter"], got["lora-copy"])
    assert got["full-copy"][-1][1] != pytest.approx(got["lora-adapter"][-1][1], abs=1e-6)  # the runs did differ
    summary = json.loads((tmp_path / "lora-adapter" / "summary.json").read_text())
    assert "adapter disabled" in summary["reference"]
    assert (tmp_path / "full-pre" / "ref_logps" / "train.safetensors").is_file()


@pytest.mark.parametrize(
    "loss", [{"type": "sigmoid"}, {"type": "orpo", "nll": "token"}, {"type": "orpo"}, {"type": "simpo"}, {"type": "kto"}]
)
def test_batch_of_4_equals_2x2_accumulated_equals_padded(tiny_model_dir, tmp_path, loss):
    variants = {
        "bs4": ({"batch_size": 4}, {"packing": True}),
        "bs2x2": ({"batch_size": 2, "grad_accum": 2}, {"packing": True}),
        "padded": ({"batch_size": 4}, {"packing": False}),
    }
    got = {}
    for name, (train, data) in variants.items():
        out = _run(tmp_path, tiny_model_dir, name, loss=loss, train={"max_steps": 3, **train}, data=data)
        got[name] = _train(out)
    _same(got["bs4"], got["bs2x2"])
    _same(got["bs4"], got["padded"])


def test_interrupted_run_resumes_to_the_same_result(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import alignkit.algorithms.dpo as dpo

    kw = dict(train={"max_steps": 6, "save_every": 2}, ref={"precompute": True}, data={"eval_fraction": 0.25})
    ref = _run(tmp_path, tiny_model_dir, "ref", **kw)

    out = tmp_path / "interrupted"
    cfg = write_dpo_config(tmp_path / "int.yaml", tiny_model_dir, out, **kw)
    real = dpo.unit_losses
    interrupt_in_step_5 = interrupt_on_call(5, real)

    monkeypatch.setattr(dpo, "unit_losses", interrupt_in_step_5)
    assert main(["dpo", str(cfg)]) == 130
    assert (out / "checkpoints" / "step-4").exists() and not (out / "final").exists()
    monkeypatch.setattr(dpo, "unit_losses", real)
    capsys.readouterr()
    assert main(["dpo", str(cfg)]) == 0
    assert _train(out) == _train(ref)
    ev = [r for r in _rows(out) if "eval_loss" in r][-1]
    ev_ref = [r for r in _rows(ref) if "eval_loss" in r][-1]
    assert ev["eval_loss"] == pytest.approx(ev_ref["eval_loss"], abs=1e-6)
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 4


def test_the_reference_cache_is_reused_and_refreshed_when_the_data_changes(tiny_model_dir, tmp_path, capsys):
    kw = dict(train={"max_steps": 1}, ref={"precompute": True}, resume="never")
    _run(tmp_path, tiny_model_dir, "run", **kw)
    assert "sequences computed" in capsys.readouterr().out
    _run(tmp_path, tiny_model_dir, "run", **kw)
    assert "sequences from" in capsys.readouterr().out
    _run(tmp_path, tiny_model_dir, "run", **kw, data={"max_rows": 12})
    assert "sequences computed" in capsys.readouterr().out
