"""The GPU checks of the road to real sizes (opt-in: ``pytest --rungpu``; scripts/gpu_check.sh runs them with the
benchmarks and writes one JSON). Each needs CUDA; the vLLM ones need vLLM, the ZeRO-3 one DeepSpeed, and say so
when skipped.

- rollouts from a real colocated vLLM engine for GRPO and PPO, full and shared-base LoRA (and QLoRA): every
  weight push verified, the trainer-vs-vLLM log-prob gap within tolerance; a push that does nothing is caught;
- compare through vLLM gives the same greedy answers as transformers on the same model (bf16 noise aside);
- bf16 SFT on CUDA trains;
- FSDP2 and ZeRO-3 (offload) on one GPU: the distributed type is really active and the peak memory is lower than
  plain DDP's for the same model and batch.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from alignkit.cli import main
from tests.conftest import HH_RLHF, REPO, write_grpo_config, write_ppo_config, write_sft_config

pytestmark = pytest.mark.gpu

LETTERS = {"functions": [{"function": "alignkit.rl.rule_rewards:letter_share", "kwargs": {"letter": "e"}}]}
LORA = {"finetune": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}}


def _cuda():
    if not torch.cuda.is_available():
        pytest.fail("--rungpu needs a CUDA GPU")


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """A small random Llama (head dim 32, which vLLM's attention kernels take; the tiny one's 16 they do not)."""
    from alignkit.models.init_model import init_model

    out = tmp_path_factory.mktemp("small") / "model"
    return init_model("llama", "small", [str(HH_RLHF)], str(out), seed=0)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


VLLM = {"backend": "vllm", "max_new_tokens": 24, "vllm": {"gpu_memory_utilization": 0.25, "max_model_len": 512}}


SHARED = {"memory": "shared-base", "model": LORA}
SHARED_Q = {"memory": "shared-base", "model": {**LORA, "finetune": "qlora"}}


@pytest.mark.parametrize(
    "stage, sections",
    [("grpo", {}), ("grpo", SHARED), ("grpo", SHARED_Q), ("ppo", SHARED)],
    ids=["grpo-full", "grpo-shared-base-lora", "grpo-shared-base-qlora", "ppo-shared-base-lora"],
)
def test_rollouts_from_vllm_are_pushed_and_verified(small_dir, tmp_path, stage, sections):
    _cuda()
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: weights reachable
    out = tmp_path / "run"
    write = write_grpo_config if stage == "grpo" else write_ppo_config
    extra = {"rewards": LETTERS} if stage == "grpo" else {"reward": {"function": "alignkit.rl.rule_rewards:letter_share"}}
    cfg = write(
        tmp_path / "c.yaml",
        small_dir,
        out,
        generation={**VLLM, "tis_cap": 2.0},
        train={"max_steps": 3, "learning_rate": 1e-3 if "model" not in sections else 5e-3},
        **extra,
        **sections,
    )
    assert main([stage, str(cfg)]) == 0
    rows = [r for r in _rows(out) if "reward" in r]
    for r in rows:
        assert r["sync/gap"] < 0.05, r  # the default tolerance held, or the run would have stopped
        assert r["sync/engine_moved"] > 0.5 * r["sync/trainer_moved"] or r["sync/trainer_moved"] < 1e-3, r
        assert r["rollout/logprob_gap_mean_abs"] < 0.1, r  # vLLM bf16 kernels vs the trainer's
        assert 0.5 < r["rollout/tis_weight_mean"] <= 2.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weight_pushes"] == 4 and summary["generation_backend"] == "vllm"


def test_a_push_that_does_nothing_to_vllm_is_caught(small_dir, tmp_path, monkeypatch, capsys):
    _cuda()
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from alignkit.models import rollout_engine

    real = rollout_engine.VLLMEngine.load_weights
    calls = []

    def load_once(self, weights):  # the first push lands, every later one is silently dropped
        calls.append(1)
        if len(calls) == 1:
            return real(self, weights)
        for _ in weights:
            pass

    monkeypatch.setattr(rollout_engine.VLLMEngine, "load_weights", load_once)
    cfg = write_grpo_config(
        tmp_path / "c.yaml", small_dir, tmp_path / "run", generation=VLLM, rewards=LETTERS, train={"learning_rate": 1e-3}
    )
    assert main(["grpo", str(cfg)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight sync 2 to the rollout engine failed" in err[0], err


def test_compare_through_vllm_matches_transformers_greedy(small_dir):
    _cuda()
    pytest.importorskip("vllm")
    from alignkit.eval.compare import compare_models

    prompts = ["What is the capital of France?", "Name a colour.", "Count to three.", "Say hello."]
    kw = dict(max_new_tokens=8, temperature=0.0, dtype="float32", device="cuda", log=lambda _: None)
    a = compare_models({"m": str(small_dir)}, prompts, backend="vllm", **kw)
    b = compare_models({"m": str(small_dir)}, prompts, **kw)
    same = sum(x == y for x, y in zip(a.column("m", "response"), b.column("m", "response")))
    assert same >= 3, (a.column("m", "response"), b.column("m", "response"))  # fp32 on both sides


def test_bf16_sft_on_cuda_trains(small_dir, tmp_path):
    _cuda()
    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", small_dir, out, train={"max_steps": 30, "mixed_precision": "bf16"})
    assert main(["sft", str(cfg)]) == 0
    losses = [r["loss"] for r in _rows(out) if "loss" in r]
    assert losses[-1] < losses[0] * 0.9, losses
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and summary["peak_cuda_memory_mib"] > 0


def _launch(config: str, cfg, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate" / config),
        "--num_processes", "1", "-m", "alignkit", "sft", str(cfg),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("config, kind", [("fsdp2.yaml", "FSDP"), ("zero3-offload.yaml", "DEEPSPEED")])
def test_sharded_engines_on_one_gpu_are_active_and_use_less_memory_than_ddp(tmp_path, config, kind):
    """The medium model, full fine-tuning: FSDP2 (with CPU-RAM-efficient loading and a sharded state dict) and
    ZeRO-3 with offload, each launched on one GPU, report their distributed type and a lower peak than DDP; their
    final/ directory loads with plain transformers, and a resumed run continues from the sharded checkpoint."""
    _cuda()
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM

    from alignkit.models.init_model import init_model

    model = init_model("llama", "medium", [str(HH_RLHF)], str(tmp_path / "medium"), seed=0)
    peaks = {}
    for name in ("ddp.yaml", config):
        out = tmp_path / name
        cfg = write_sft_config(tmp_path / f"{name}.c.yaml", model, out, train={"max_steps": 4, "batch_size": 4, "save_every": 2})
        _launch(name, cfg, tmp_path)
        summary = json.loads((out / "summary.json").read_text())
        peaks[name] = summary["peak_cuda_memory_mib"]
        if name == config:
            import shutil

            from safetensors.torch import load_file

            assert summary["distributed_type"] == kind, summary
            AutoModelForCausalLM.from_pretrained(out / "final")  # a plain transformers directory
            first = {k: v for f in sorted((out / "final").glob("*.safetensors")) for k, v in load_file(f).items()}
            # resume: without its final/ the run restarts from its last (sharded) checkpoint, step 2, and ends
            # with the same weights
            shutil.rmtree(out / "final")
            (out / "summary.json").unlink()
            _launch(name, cfg, tmp_path)
            again = json.loads((out / "summary.json").read_text())
            assert again["resumed_from_step"] == 2, again
            second = {k: v for f in sorted((out / "final").glob("*.safetensors")) for k, v in load_file(f).items()}
            for k in first:
                torch.testing.assert_close(second[k], first[k], rtol=1e-3, atol=1e-4, msg=k)
    assert peaks[config] < peaks["ddp.yaml"], peaks
