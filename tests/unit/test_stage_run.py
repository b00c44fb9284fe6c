"""The run bookkeeping every training stage shares (``StageRun``) and the policy loaded from a ``model`` section."""

import json

from alignkit.algorithms.common import load_policy, lora_options, model_options
from alignkit.config.common import ModelConfig
from alignkit.training.setup import start_run


def _start(tmp_path, resume="auto"):
    return start_run(
        output_dir=str(tmp_path / "run"),
        resume=resume,
        config_text="seed: 0\n",
        mixed_precision="no",
        seed=0,
        model_path=str(tmp_path / "model"),
    )


def test_stage_run_writes_config_metrics_and_summary(tmp_path):
    run = _start(tmp_path)
    assert run.out == tmp_path / "run" and run.ckpt_root == tmp_path / "run" / "checkpoints"
    assert (run.out / "config.yaml").read_text() == "seed: 0\n"
    assert run.resume_state(10) == {}  # no checkpoint: from scratch
    metrics = run.open_metrics(tensorboard=False, resume_step=0)
    metrics.log({"step": 1, "loss": 2.5})
    path = run.write_summary({"stage": "sft", "steps": 1})
    run.close()
    summary = json.loads(path.read_text())
    assert summary["stage"] == "sft" and summary["steps"] == 1
    assert summary["device"] == "cpu" and summary["world_size"] == 1  # where it ran (run_facts)
    assert summary["resumes"] == []  # resumes.jsonl: none
    assert [json.loads(line)["loss"] for line in (run.out / "metrics.jsonl").read_text().splitlines()] == [2.5]
    assert [p.name for p in run.out.iterdir() if p.name.startswith(".")] == []  # written atomically, no leftovers


def test_model_section_options_and_policy(tiny_model_dir):
    m = ModelConfig(
        name_or_path=str(tiny_model_dir),
        finetune="lora",
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    assert model_options(m) == {"dtype": "float32", "attn_implementation": "sdpa", "trust_remote_code": False, "revision": None}
    assert lora_options(m) == {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    policy = load_policy(m)
    peft_cfg = policy.peft_config["default"]
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (4, 8, 0.0)
    assert set(peft_cfg.target_modules) == {"q_proj", "v_proj"}
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
