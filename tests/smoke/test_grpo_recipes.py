"""The shipped GRPO configs run as written: the tiny one whole, the GSM8K recipe for one step with a tiny local
model standing in for the 1B one (its data, verifier with references, LoRA shared-base layout, dynamic sampling
and overlong settings are the recipe's own)."""

import json

from alignkit.cli import main
from alignkit.config.base import load_config
from alignkit.config.grpo import GRPOConfig
from tests.conftest import REPO


def test_tiny_config_runs(tmp_path, tiny_model_dir):
    out = tmp_path / "tiny"
    overrides = [f"output_dir={out}", f"model.name_or_path={tiny_model_dir}", "model.init=null", "train.max_steps=2"]
    assert main(["grpo", str(REPO / "configs/grpo/tiny.yaml"), *overrides]) == 0
    assert (out / "final" / "model.safetensors").exists()


def test_gsm8k_recipe_runs_one_step_with_a_tiny_stand_in(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe's data paths are relative to the repo
    recipe = REPO / "configs/grpo/gsm8k-1b-lora.yaml"
    cfg = load_config(GRPOConfig, str(recipe), [])
    assert cfg.model.finetune == "lora" and cfg.memory == "shared-base" and cfg.rewards.functions[0].function.endswith(":gsm8k")
    out = tmp_path / "gsm8k"
    overrides = [
        f"output_dir={out}",
        f"model.name_or_path={tiny_model_dir}",
        "model.dtype=float32",
        "model.gradient_checkpointing=false",
        "model.lora.r=8",
        "train.mixed_precision='no'",
        "train.max_steps=1",
        "data.max_rows=16",
        "data.eval_rows=4",
        "grpo.prompts_per_step=2",
        "grpo.group_size=2",
        "grpo.generation_batch_size=4",
        "generation.max_new_tokens=16",
        "rewards.overlong_buffer=4",
        "dynamic_sampling.max_rounds=1",
    ]
    assert main(["grpo", str(recipe), *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval"]["eval_n"] == 4 and "eval_reward/gsm8k" in summary["eval"]
    assert (out / "final" / "adapter_config.json").exists()
    held = [json.loads(line) for line in (out / "heldout_prompts.jsonl").read_text().splitlines()]
    assert "####" in held[0]["completion"]  # the reference the verifier is given
