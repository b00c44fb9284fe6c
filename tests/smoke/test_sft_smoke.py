"""Tier (b): two-step SFT runs on a tiny model: finite loss, trainable weights moved, outputs loadable."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from alignkit.cli import main
from tests.conftest import HH_RLHF, write_sft_config

REQUIRED_METRICS = {"step", "loss", "learning_rate", "tokens_per_second"}


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_full_sft_two_steps(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, out, data={"val_size": 8}, train={"eval_every": 1})
    assert main(["sft", str(cfg)]) == 0
    rows = [r for r in _metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r.keys() >= REQUIRED_METRICS and torch.isfinite(torch.tensor(r["loss"]))
    assert any("eval_loss" in r for r in _metrics(out))
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "final" / "model.safetensors"))
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before), f"weights that did not move: {set(before) - set(moved)}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["data"]["skipped"] == 0
    assert (out / "config.yaml").read_text().count("max_steps: 2") == 1

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")


def test_lora_sft_two_steps_moves_only_adapters(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_sft_config(
        tmp_path / "c.yaml", tiny_model_dir, out, model={"finetune": "lora", "lora": {"r": 4}}, data={"packing": True}
    )
    assert main(["sft", str(cfg)]) == 0
    adapter = load_file(str(out / "final" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: nonzero means it trained

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    PeftModel.from_pretrained(base, out / "final")


def test_bad_data_is_one_line_exit_2(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": "", "rejected": "same"}\n')
    cfg = write_sft_config(
        tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run", data={"train": str(bad), "format": "auto", "on_error": "raise"}
    )
    proc = subprocess.run([sys.executable, "-m", "alignkit", "sft", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.startswith("alignkit: error")]
    assert err and "Traceback" not in proc.stderr
    assert "bad.jsonl:2" in err[0] and "chosen" in err[0]


def test_skip_reports_counted_rows(tiny_model_dir, tmp_path):
    bad = tmp_path / "mixed.jsonl"
    bad.write_text('{"text": "hello there"}\nnot json\n{"text": ""}\n{"text": "general kenobi"}\n')
    out = tmp_path / "run"
    cfg = write_sft_config(
        tmp_path / "c.yaml", tiny_model_dir, out, data={"train": str(bad), "format": "auto"}, train={"max_steps": 1}
    )
    assert main(["sft", str(cfg)]) == 0
    data = json.loads((out / "summary.json").read_text())["data"]
    assert data["rows_read"] == 4 and data["skipped"] == 2 and data["examples"] == 2


def test_unknown_key_on_the_command_line(tiny_model_dir, tmp_path, capsys):
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run")
    assert main(["sft", str(cfg), "train.max_stepz=3"]) == 2
    assert "did you mean 'max_steps'" in capsys.readouterr().err


def test_shipped_tiny_config_runs(tmp_path, monkeypatch):
    """configs/sft/tiny.yaml, as the acceptance checks use it, shortened to 2 steps."""
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    model = tmp_path / "model"
    rc = main(
        [
            "sft",
            "configs/sft/tiny.yaml",
            f"output_dir={out}",
            f"model.name_or_path={model}",
            "train.max_steps=2",
            "data.max_rows=40",
            "data.val_size=4",
        ]
    )
    assert rc == 0 and (model / "config.json").exists() and (out / "final" / "model.safetensors").exists()
    assert str(HH_RLHF.name) in (out / "config.yaml").read_text()


def test_non_finite_loss_stops_with_a_checkpoint_of_the_last_good_state(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import alignkit.algorithms.sft as sft

    real = sft.micro_batch_loss
    calls = {"n": 0}

    def nan_in_step_2(*args, **kwargs):
        calls["n"] += 1
        loss, raw = real(*args, **kwargs)
        return (loss, raw * float("nan")) if calls["n"] == 2 else (loss, raw)

    monkeypatch.setattr(sft, "micro_batch_loss", nan_in_step_2)
    out = tmp_path / "sft"
    assert main(["sft", str(write_sft_config(tmp_path / "s.yaml", tiny_model_dir, out, train={"max_steps": 3}))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 2: the loss is nan" in err[0] and "step-1" in err[0]
    assert (out / "checkpoints" / "step-1").is_dir() and not (out / "final").exists()
