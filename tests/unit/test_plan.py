"""alignkit plan: closed-form parts against hand-computed values, the model-state parts against the bytes one real
optimizer step holds on this CPU (tiny / small / medium, full / LoRA / QLoRA, AdamW / 8-bit AdamW), and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import plan_vs_measured as bench

from alignkit.cli import main
from alignkit.plan import (
    NF4_BYTES_PER_WEIGHT,
    ModelShape,
    PlanError,
    activation_bytes,
    kv_cache_bytes,
    lora_tensors,
    optimizer_bytes,
    parse_size,
    resolve_shape,
    shape_of_init,
    weight_bytes,
)
from alignkit.plan_models import KNOWN_CONFIGS

REPO = Path(__file__).resolve().parents[2]


def test_parameter_counts_match_the_published_models():
    # published totals: Meta-Llama-3-8B 8,030,261,248; gemma-2-9b 9,241,705,984; Llama-3.2-3B 3,212,749,824
    assert resolve_shape("meta-llama/Meta-Llama-3-8B").num_params() == 8_030_261_248
    assert resolve_shape("google/gemma-2-9b").num_params() == 9_241_705_984
    assert resolve_shape("meta-llama/Llama-3.2-3B").num_params() == 3_212_749_824
    assert resolve_shape("Qwen/Qwen2.5-1.5B-Instruct").num_params() == 1_543_714_304


def _toy() -> ModelShape:
    # h 8, 1 layer, 2 heads of 4, 1 kv head, I 16, V 10, untied
    return ModelShape("toy", "llama", 10, 8, 1, 2, 1, 4, 16, tie_word_embeddings=False)


def test_weights_qlora_and_lora_by_hand():
    s = _toy()
    linear = 8 * 8 + 8 * 4 + 8 * 4 + 8 * 8 + 3 * 8 * 16  # q k v o + gate up down = 576
    other = 10 * 8 * 2 + 2 * 8 + 8  # embedding + head + 2 norms + final norm = 184
    assert s.linear_params() == linear and s.other_params() == other
    assert weight_bytes(s, finetune="full", dtype="bfloat16") == (linear + other) * 2
    assert weight_bytes(s, finetune="qlora", dtype="bfloat16") == round(linear * NF4_BYTES_PER_WEIGHT) + other * 4
    assert abs(NF4_BYTES_PER_WEIGHT - (0.5 + 1 / 64 + 4 / 16384)) < 1e-12
    # r 2 on q and v: A (2x8) B (8x2) for q, A (2x8) B (4x2) for v
    assert lora_tensors(s, 2, ["q_proj", "v_proj"]) == [16, 16, 16, 8]


def test_optimizer_bytes_by_hand():
    assert optimizer_bytes([10, 20], 4, "adamw") == 30 * 8
    assert optimizer_bytes([10, 20], 2, "adamw") == 30 * 4  # torch keeps states in the parameter's dtype
    assert optimizer_bytes([10], 2, "paged_adamw") == 80  # bitsandbytes' 32-bit states are fp32
    # 8-bit: 5000 values -> 2 x 5000 bytes + 2 x ceil(5000/256)=20 absmax x 4 bytes; 100 values stay fp32; + 2 qmaps
    assert optimizer_bytes([5000, 100], 4, "adamw_8bit") == 10000 + 160 + 800 + 2048


def test_activations_and_kv_by_hand():
    s = _toy()
    # per token and layer: norms 2*2*8*4 = 128, (5*8 + 4*16) * 2 = 208 -> 336; B=2, S=3 -> 6 tokens
    base = 6 * 336 + 6 * 8 * 4  # one layer + the final norm
    assert activation_bytes(s, batch=2, seq_len=3, act_bytes=2, checkpointing=False, loss_tokens=0) == base
    assert activation_bytes(s, batch=2, seq_len=3, act_bytes=2, checkpointing=False, loss_tokens=4) == base + 4 * 10 * 10
    eager = activation_bytes(s, batch=2, seq_len=3, act_bytes=2, checkpointing=False, loss_tokens=0, eager=True)
    assert eager - base == 2 * 2 * 9 * 6
    ckpt = activation_bytes(s, batch=2, seq_len=3, act_bytes=2, checkpointing=True, loss_tokens=0)
    assert ckpt == 6 * 8 * 2 + 6 * 336 + 6 * 8 * 4
    assert kv_cache_bytes(s, sequences=3, seq_len=5, act_bytes=2) == 2 * 1 * 4 * 3 * 5 * 2


def test_parse_size():
    assert parse_size("24GB") == 24 * 10**9 and parse_size("80 GiB") == 80 * 2**30 and parse_size("40") == 40 * 10**9
    with pytest.raises(PlanError, match="--gpu-memory"):
        parse_size("lots")


def test_init_spec_shape_equals_the_built_model(tiny_model_dir):
    built = resolve_shape(str(tiny_model_dir))
    spec = shape_of_init("x", "llama", "tiny", None)
    assert spec.num_params() == built.num_params()
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == built.num_params()


CASES = [
    ("tiny", "full", "adamw"),
    ("tiny", "lora", "adamw"),
    ("tiny", "qlora", "adamw_8bit"),
    ("small", "full", "adamw_8bit"),
    ("small", "lora", "adamw_8bit"),
    ("small", "qlora", "adamw"),
    ("medium", "full", "adamw"),
    ("medium", "lora", "adamw"),
]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-models")
    return {size: bench.make_model(size, str(root)) for size in ("tiny", "small", "medium")}


@pytest.mark.parametrize(("size", "finetune", "optimizer"), CASES)
def test_model_state_within_25_percent_of_one_real_step(model_dirs, size, finetune, optimizer):
    if finetune == "qlora" or optimizer != "adamw":
        pytest.importorskip("bitsandbytes")
    got = bench.measure_step(model_dirs[size], finetune, optimizer)
    plan = bench.planned(model_dirs[size], finetune, optimizer)
    for part in ("weights", "gradients", "optimizer"):
        assert got[part] > 0
        assert plan[part] == pytest.approx(got[part], rel=0.25), (part, got, plan)


def _plan_json(capsys, *argv) -> dict:
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_json_shape_and_table(capsys, tmp_path):
    out = _plan_json(capsys, str(REPO / "configs/sft/llama3-8b-qlora.yaml"), "--gpu-memory", "24GB")
    assert set(out) == {"total_bytes", "fits", "breakdown"} and out["fits"] is True
    assert out["total_bytes"] == sum(out["breakdown"].values())
    assert {"weights/policy", "optimizer/policy", "activations/policy"} <= set(out["breakdown"])
    assert _plan_json(capsys, str(REPO / "configs/sft/llama3-8b-qlora.yaml"))["fits"] is None
    # the 8-bit states are 4x smaller than AdamW's fp32 ones for the same LoRA parameters
    full = _plan_json(capsys, str(REPO / "configs/sft/llama3-8b-qlora.yaml"), "train.optimizer=adamw")
    assert full["breakdown"]["optimizer/policy"] > 3.5 * out["breakdown"]["optimizer/policy"]
    assert main(["plan", str(REPO / "configs/sft/llama3-8b-qlora.yaml"), "--gpu-memory", "8GB"]) == 0
    text = capsys.readouterr().out
    assert "weights/policy" in text and "does NOT fit in 8.0 GB" in text


def test_unknown_model_offline_is_one_line(capsys):
    rc = main(["plan", str(REPO / "configs/sft/llama3-8b-qlora.yaml"), "model.name_or_path=nobody/no-such-model"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "'nobody/no-such-model'" in err


def test_pipeline_reports_each_stage_and_the_max(capsys):
    out = _plan_json(capsys, str(REPO / "configs/pipeline/llama32-3b-rm-static.yaml"), "--gpu-memory", "24GB")
    stages = {k.split(":")[0] for k in out["breakdown"]}
    assert stages == {"sft", "rm", "ppo"}
    per_stage = {s: sum(v for k, v in out["breakdown"].items() if k.startswith(s + ":")) for s in stages}
    assert out["total_bytes"] == max(per_stage.values()) == per_stage["ppo"]
    # shared-base PPO from the SFT adapter: one 4-bit base, the value and reference adapters, a bf16 reward model
    b = out["breakdown"]
    assert "ppo:weights/reference" not in b and b["ppo:weights/reference_adapter"] == b["ppo:weights/policy_lora"]
    assert b["ppo:weights/reward"] == (resolve_shape("meta-llama/Llama-3.2-3B").num_params()) * 2  # reward.dtype


def test_separate_layout_holds_more_than_shared(capsys, tiny_model_dir):
    cfg = str(REPO / "configs/ppo/tiny.yaml")
    common = [f"model.name_or_path={tiny_model_dir}", "model.init=null", "model.finetune=lora"]
    sep = _plan_json(capsys, cfg, *common, "memory=separate")["breakdown"]
    shared = _plan_json(capsys, cfg, *common, "memory=shared-base")["breakdown"]
    assert sep["weights/reference"] == sep["weights/policy"] == sep["weights/value"]
    assert "weights/reference" not in shared and "weights/value" not in shared and "weights/value_lora" in shared


@pytest.mark.gpu
def test_plan_against_cuda_peak_for_a_qlora_sft_step(model_dirs):
    """On CUDA: the plan's total for a QLoRA SFT step of the medium model against torch.cuda.max_memory_allocated
    (within 25% + 64 MiB, the CUDA allocator's block rounding at this size)."""
    import torch

    from alignkit.models.loading import load_causal_lm
    from alignkit.plan import Plan, Trainee, add_activations, add_trained_model
    from alignkit.training.optim import build_optimizer

    assert torch.cuda.is_available()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model = load_causal_lm(model_dirs["medium"], finetune="qlora", lora_r=16, lora_dropout=0.0, gradient_checkpointing=True)
    opt = build_optimizer(model, learning_rate=1e-4, weight_decay=0.0, optimizer="paged_adamw_8bit")
    b, s = 4, 256
    ids = torch.randint(0, 8192, (b, s), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    peak = torch.cuda.max_memory_allocated() - before
    t = Trainee(
        resolve_shape(model_dirs["medium"]), "qlora", "float32", lora_r=16, optimizer="paged_adamw_8bit", mixed_precision="bf16"
    )
    plan = Plan()
    add_trained_model(plan, t, "policy")
    add_activations(plan, t, "policy", batch=b, seq_len=s, loss_tokens=b * s, checkpointing=True)
    assert plan.total == pytest.approx(peak, rel=0.25, abs=64 * 2**20), (plan.parts, peak)


def test_table_covers_every_recipe_model():
    for name in ("meta-llama/Llama-3.2-3B", "meta-llama/Meta-Llama-3-8B-Instruct", "google/gemma-2-9b-it"):
        assert name in KNOWN_CONFIGS


def test_a_vllm_rollout_engine_adds_its_weights_and_kv_cache():
    """generation.backend vllm: the engine's own 2-byte copy of the weights and its KV cache replace
    transformers' KV cache, with a note on vLLM's reservation."""
    from alignkit.config.grpo import GRPOConfig
    from alignkit.plan import kv_cache_bytes, plan_stage, resolve_shape

    base = {
        "output_dir": "runs/x",
        "model": {"name_or_path": "meta-llama/Llama-3.2-3B-Instruct", "finetune": "lora"},
        "data": {"train": "data/gsm8k/train.jsonl", "max_length": 256},
        "rewards": {"functions": [{"function": "alignkit.rl.verifiable:gsm8k"}]},
        "generation": {"max_new_tokens": 256},
        "grpo": {"group_size": 8, "prompts_per_step": 4},
    }
    plain = plan_stage("grpo", GRPOConfig.model_validate(base))
    with_vllm = plan_stage("grpo", GRPOConfig.model_validate({**base, "generation": {"max_new_tokens": 256, "backend": "vllm"}}))
    shape = resolve_shape("meta-llama/Llama-3.2-3B-Instruct")
    assert "kv_cache/rollout" in plain.parts and "kv_cache/rollout" not in with_vllm.parts
    assert with_vllm.parts["weights/vllm_engine"] == shape.num_params() * 2
    assert with_vllm.parts["kv_cache/vllm"] == kv_cache_bytes(shape, sequences=32, seq_len=512, act_bytes=2)
    assert any("gpu_memory_utilization 0.3" in n for n in with_vllm.notes)
