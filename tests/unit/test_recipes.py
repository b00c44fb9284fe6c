"""The real-size recipes: each parses with its stage's schema, names its hub ids in its header, and the memory plan
(offline table) says it fits the GPU it claims; with a tiny local model in place of the hub one, each resolves and
plans, and the Llama 3 8B QLoRA SFT recipe trains two steps on this CPU (8-bit AdamW: paged needs CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.cli import main
from tests.conftest import HH_RLHF

REPO = Path(__file__).resolve().parents[2]

# recipe, its stage, the models it names, the GPU memory it claims to fit
RECIPES = [
    ("configs/pipeline/llama32-3b-rm-static.yaml", "pipeline", ["meta-llama/Llama-3.2-3B", "Dahoas/rm-static"], "24GB"),
    ("configs/sft/llama3-8b-qlora.yaml", "sft", ["meta-llama/Meta-Llama-3-8B", "HuggingFaceH4/ultrachat_200k"], "24GB"),
    ("configs/sft/gemma2-9b-qlora.yaml", "sft", ["google/gemma-2-9b", "mlabonne/FineTome-100k"], "24GB"),
    ("configs/dpo/llama3-8b-qlora-orpo.yaml", "orpo", ["meta-llama/Meta-Llama-3-8B", "mlabonne/orpo-dpo-mix-40k"], "24GB"),
    ("configs/self_reward/llama3-8b-self.yaml", "self-reward", ["meta-llama/Meta-Llama-3-8B-Instruct"], "80GB"),
    ("configs/grpo/gsm8k-1b-lora.yaml", "grpo", ["Qwen/Qwen2.5-1.5B-Instruct"], "24GB"),
]


NEW = {"configs/pipeline/llama32-3b-rm-static.yaml", "configs/sft/llama3-8b-qlora.yaml", "configs/sft/gemma2-9b-qlora.yaml"}


def _header(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))


@pytest.mark.parametrize(("recipe", "stage", "names", "gpu"), RECIPES)
def test_recipe_parses_names_its_sources_and_fits(recipe, stage, names, gpu, capsys):
    path = REPO / recipe
    assert main(["config", "show", str(path), "--stage", stage]) == 0 or stage == "pipeline"
    if stage == "pipeline":
        from alignkit.config.base import load_config
        from alignkit.config.pipeline import PipelineConfig
        from alignkit.orchestrate.pipeline import stage_configs

        configs, compare = stage_configs(load_config(PipelineConfig, path))
        assert set(configs) == {"sft", "rm", "ppo"} and compare is not None
        assert configs["ppo"].memory == "shared-base" and configs["ppo"].model.finetune == "qlora"
    capsys.readouterr()
    for name in names:  # the new recipes name their hub ids in the header; the older ones in their keys
        assert name in (_header(path) if recipe in NEW else path.read_text()), f"{recipe}: should name {name}"
    assert main(["plan", str(path), "--stage", stage, "--gpu-memory", gpu, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is True, (recipe, plan["total_bytes"] / 1e9)
    assert plan["total_bytes"] > 3e9  # a real-size model, not a table miss


def test_the_8b_sft_recipe_keeps_the_seed_settings():
    from alignkit.config.base import load_config
    from alignkit.config.sft import SFTConfig

    c = load_config(SFTConfig, REPO / "configs/sft/llama3-8b-qlora.yaml")
    assert (c.model.finetune, c.model.lora.r, c.model.lora.alpha) == ("qlora", 64, 16.0)
    assert (c.train.learning_rate, c.train.lr_scheduler, c.train.optimizer) == (2e-4, "cosine", "paged_adamw_8bit")


TINY = {
    "configs/sft/llama3-8b-qlora.yaml": ("sft", []),
    "configs/sft/gemma2-9b-qlora.yaml": ("sft", []),
    "configs/dpo/llama3-8b-qlora-orpo.yaml": ("orpo", []),
    "configs/self_reward/llama3-8b-self.yaml": ("self-reward", []),
    "configs/grpo/gsm8k-1b-lora.yaml": ("grpo", []),
}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_recipe_with_a_tiny_model_resolves_and_plans(recipe, tiny_model_dir, capsys):
    stage, extra = TINY[recipe]
    overrides = [f"model.name_or_path={tiny_model_dir}", *extra]
    assert main(["config", "show", str(REPO / recipe), *overrides, "--stage", stage]) == 0
    assert str(tiny_model_dir) in capsys.readouterr().out
    assert main(["plan", str(REPO / recipe), *overrides, "--stage", stage, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert 0 < plan["total_bytes"] < 2e9


def test_pipeline_recipe_with_a_tiny_base_resolves_and_plans(tiny_model_dir, capsys):
    assert main(["plan", str(REPO / "configs/pipeline/llama32-3b-rm-static.yaml"), f"base={tiny_model_dir}", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {k.split(":")[0] for k in plan["breakdown"]} == {"sft", "rm", "ppo"} and plan["total_bytes"] < 2e9


def test_8b_sft_recipe_trains_two_steps_with_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "run"
    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={out}",
        f"data.train={HH_RLHF}",
        "data.format=hh_rlhf",
        "data.eval=null",
        "data.max_rows=32",
        "data.max_length=128",
        "train.max_steps=2",
        "train.log_every=1",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.mixed_precision='no'",
        "train.eval_every=null",
        "train.save_every=null",
        "tensorboard=false",
    ]
    recipe = str(REPO / "configs/sft/llama3-8b-qlora.yaml")
    assert main(["sft", recipe, *overrides]) == 2  # paged 8-bit AdamW needs CUDA: refused, with what to use instead
    assert "train.optimizer=adamw_8bit" in capsys.readouterr().err
    assert main(["sft", recipe, *overrides, "train.optimizer=adamw_8bit"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert (out / "final" / "adapter_config.json").is_file()
