"""QLoRA (4-bit NF4 base + LoRA) through the training stages on this CPU, where bitsandbytes quantizes there: the
loss falls, final/ is a peft adapter that plain peft loads onto its base, and `alignkit merge` turns it into a
plain transformers model; a QLoRA reward model is saved merged into its full-precision base. (PPO and GRPO with
QLoRA: tests/invariants/test_ppo_reference.py.)"""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import write_dpo_config, write_rm_config, write_sft_config


def _qlora_here() -> bool:
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import _check_qlora_available

    try:
        _check_qlora_available()
    except ModelError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _qlora_here(), reason="QLoRA needs bitsandbytes that quantizes on this device")

QLORA = {"finetune": "qlora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
TRAIN = {"max_steps": 16, "learning_rate": 1e-2, "lr_scheduler": "constant", "log_every": 1}


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _check_adapter(final, base_dir, tmp_path):
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    assert (final / "adapter_config.json").exists() and PeftConfig.from_pretrained(str(final)).peft_type == "LORA"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir)), str(final))  # plain peft loads it
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(final), "--out", str(merged)]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(merged))  # a plain transformers model
    assert not any("lora_" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_qlora_sft_and_dpo_learn_and_save_a_loadable_adapter(tiny_model_dir, tmp_path, stage):
    out = tmp_path / stage
    write = write_sft_config if stage == "sft" else write_dpo_config
    cfg = write(tmp_path / f"{stage}.yaml", tiny_model_dir, out, model=QLORA, train=TRAIN)
    assert main([stage, str(cfg)]) == 0
    losses = _losses(out)
    assert len(losses) == 16 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses  # the loss falls
    summary = json.loads((out / "summary.json").read_text())
    assert summary.get("trainable_parameters", 1) < summary.get("total_parameters", 2)
    _check_adapter(out / "final", tiny_model_dir, tmp_path)


def test_qlora_decoder_reward_model_learns_and_is_saved_full_precision(tiny_model_dir, tmp_path):
    from alignkit.models.reward import RewardModel

    out = tmp_path / "rm"
    train = {**TRAIN, "max_steps": 32, "learning_rate": 3e-3}  # 4 epochs of the 32 pairs
    cfg = write_rm_config(tmp_path / "rm.yaml", tiny_model_dir, out, model=QLORA, train=train)
    assert main(["rm", str(cfg)]) == 0
    losses = _losses(out)
    assert len(losses) == 32 and sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.05, losses  # last epoch vs first
    config = json.loads((out / "final" / "config.json").read_text())
    assert "quantization_config" not in config  # merged into the full-precision base: loads without bitsandbytes
    rm = RewardModel.load(str(out / "final"))
    scores = rm.score(["Hi", "Hi"], ["Hello! How can I help?", "Go away."])
    assert len(scores) == 2 and all(torch.isfinite(torch.tensor(scores))) and scores[0] != scores[1]
