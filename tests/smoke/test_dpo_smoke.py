"""Tier (a)/(b) for the DPO stage: every loss learns the training pairs, the aliases, KTO on unpaired rows,
bad input, a non-finite loss, the outputs and the real-size example config."""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import REPO, write_dpo_config


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _pair_accuracy(model_dir, base_dir, pairs_file, loss_type):
    """Share of the pairs whose chosen side the model prefers, by the loss's own implicit reward
    (log-ratio to the base for reference losses, mean log-prob for SimPO/ORPO); ties count 1/2."""
    from alignkit.algorithms.dpo import Reference, collate_sequences, load_units, sequence_logps
    from alignkit.data.tokenize import ensure_chat_template
    from alignkit.models.loading import load_causal_lm, load_for_inference, load_tokenizer

    tok = load_tokenizer(str(base_dir))
    ensure_chat_template(tok)
    data, _, _ = load_units(
        str(pairs_file),
        tok,
        kto=False,
        seed=0,
        fmt="hh_rlhf",
        split="train",
        max_length=96,
        on_error="skip",
        max_rows=16,
        log=lambda *a: None,
    )
    model = load_for_inference(str(model_dir))[0]
    base = Reference(model=load_causal_lm(str(base_dir), finetune="none"))
    ids = data.first + data.second
    batch = collate_sequences(data, ids, pad_token_id=tok.pad_token_id, packed=False, max_row_tokens=96)
    with torch.no_grad():
        pol = sequence_logps(model, batch, len(ids))
        ref = base.logps(batch, ids)
    n = len(data)
    if loss_type in ("simpo", "orpo"):
        margin = pol.mean[:n] - pol.mean[n:]
    else:
        margin = (pol.sum[:n] - ref.sum[:n]) - (pol.sum[n:] - ref.sum[n:])
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()


LEARNING = {  # loss section, learning rate, steps
    "sigmoid": ({"type": "sigmoid", "beta": 0.1}, 2e-3, 30),
    "ipo": ({"type": "ipo", "beta": 0.1}, 5e-4, 30),
    "hinge": ({"type": "hinge", "beta": 0.1}, 2e-3, 30),
    "robust": ({"type": "robust", "beta": 0.1, "label_smoothing": 0.1}, 2e-3, 30),
    "cdpo": ({"type": "sigmoid", "beta": 0.1, "label_smoothing": 0.1}, 2e-3, 30),
    "orpo": ({"type": "orpo", "lambda": 1.0}, 2e-3, 30),
    "simpo": ({"type": "simpo", "beta": 2.0, "gamma": 0.5}, 2e-3, 30),
    "kto": ({"type": "kto", "beta": 0.1}, 2e-3, 30),
}


@pytest.mark.parametrize("name", list(LEARNING))
def test_each_loss_raises_training_pair_accuracy_well_above_chance(tiny_model_dir, tmp_path, name):
    loss, lr, steps = LEARNING[name]
    out = tmp_path / name
    cfg = write_dpo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        loss=loss,
        train={"max_steps": steps, "learning_rate": lr, "lr_scheduler": "constant"},
    )
    assert main(["dpo", str(cfg)]) == 0
    from tests.conftest import HH_RLHF

    before = _pair_accuracy(tiny_model_dir, tiny_model_dir, HH_RLHF, loss["type"])
    after = _pair_accuracy(out / "final", tiny_model_dir, HH_RLHF, loss["type"])
    assert after >= 0.8 and after >= before + 0.2, (before, after)
    last = [r for r in _rows(out) if "loss" in r][-1]
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracy",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in last, key
    if name == "kto":
        assert "kl" in last


def test_aliases_preset_the_loss_and_refuse_a_conflicting_one(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "orpo"
    cfg = write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, out)
    assert main(["orpo", str(cfg)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss"]["type"] == "orpo" and summary["loss"]["lambda"] == 0.1
    assert "none (reference-free loss)" in summary["reference"]
    last = [r for r in _rows(out) if "loss" in r][-1]
    assert "nll" in last and "log_odds_ratio" in last
    bad = write_dpo_config(tmp_path / "bad.yaml", tiny_model_dir, tmp_path / "bad", loss={"type": "ipo"})
    capsys.readouterr()
    assert main(["simpo", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'alignkit simpo' trains with loss simpo" in err[0] and "'ipo'" in err[0]


def test_loss_hyper_parameters_are_validated_per_loss(tiny_model_dir, tmp_path, capsys):
    cfg = write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "x", loss={"type": "ipo", "label_smoothing": 0.1})
    assert main(["dpo", str(cfg)]) == 2
    assert "unknown key 'loss.label_smoothing'" in capsys.readouterr().err
    cfg = write_dpo_config(tmp_path / "d.yaml", tiny_model_dir, tmp_path / "x", loss={"type": "sigmoid", "label_smoothing": 0.5})
    assert main(["dpo", str(cfg)]) == 2
    assert "loss.label_smoothing" in capsys.readouterr().err


def test_kto_on_unpaired_rows_and_lora_output_loads_with_peft(tiny_model_dir, tmp_path):
    rows = [
        {
            "prompt": f"What is {i} plus {i}?",
            "completion": f"It is {2 * i}." if i % 2 else "No idea, go away.",
            "label": bool(i % 2),
        }
        for i in range(12)
    ]
    src = tmp_path / "kto.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "kto"
    cfg = write_dpo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        data={"train": str(src), "format": "auto"},
        model={"finetune": "lora", "lora": {"r": 4}},
        train={"max_steps": 3},
    )
    assert main(["kto", str(cfg)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["rows"] == 12 and summary["data"]["desirable"] == 6 and summary["data"]["format"] == "unpaired"
    assert (out / "final" / "adapter_config.json").is_file()
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(str(out / "final"))
    assert model.peft_config["default"].r == 4


def test_unpaired_rows_for_a_pair_loss_are_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    src = tmp_path / "kto.jsonl"
    src.write_text(json.dumps({"prompt": "Q", "completion": "A", "label": True}) + "\n")
    cfg = write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "x", data={"train": str(src), "format": "auto"})
    assert main(["dpo", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kto.jsonl" in err[0] and "preference pairs" in err[0]


def test_non_finite_loss_stops_with_a_checkpoint_of_the_last_good_state(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import alignkit.algorithms.dpo as dpo

    real = dpo.unit_losses
    calls = {"n": 0}

    def nan_in_step_3(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan"), parts) if calls["n"] == 3 else (loss, parts)

    monkeypatch.setattr(dpo, "unit_losses", nan_in_step_3)
    out = tmp_path / "run"
    assert main(["dpo", str(write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"max_steps": 5}))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 3: the loss is nan" in err[0] and "step-2" in err[0]
    assert (out / "checkpoints" / "step-2" / "model" / "model.safetensors").is_file() and not (out / "final").exists()


def test_final_model_loads_with_plain_transformers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    assert main(["dpo", str(write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, out, ref={"precompute": True}))]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(out / "final"))
    assert model.config.model_type == "llama"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["data"]["pairs"] > 0 and "precomputed" in summary["reference"]


@pytest.mark.parametrize("path", ["configs/dpo/tiny.yaml", "configs/dpo/llama3-8b-qlora-orpo.yaml"])
def test_shipped_configs_validate(path, capsys):
    stage = "orpo" if "orpo" in path else "dpo"
    assert main(["config", "show", str(REPO / path), "--stage", stage]) == 0
    shown = capsys.readouterr().out
    assert "loss:" in shown
