"""PPO's reference is the starting policy in every memory layout: started from a LoRA adapter (a LoRA SFT output),
policy and reference are the same model before the first update, so the step-1 KL is 0 — in the separate layout
(a frozen merged copy) and in shared-base (a frozen second copy of the adapter on the one base)."""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import write_ppo_config


@pytest.fixture(scope="module")
def sft_adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny Llama with its B matrices drawn at random (as if trained by a LoRA SFT run), so the
    adapted model differs clearly from its base."""
    from alignkit.models.loading import load_causal_lm, load_tokenizer, save_model

    model = load_causal_lm(str(tiny_model_dir), finetune="lora", lora_r=8, lora_alpha=16, lora_dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    out = tmp_path_factory.mktemp("sft-lora") / "adapter"
    save_model(model, load_tokenizer(str(tiny_model_dir)), str(out))
    return out


def _qlora_on_this_machine() -> bool:
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import _check_qlora_available

    try:
        _check_qlora_available()
    except ModelError:
        return False
    return True


def _step1_kl(tmp_path, adapter, memory: str, finetune: str) -> float:
    out = tmp_path / f"{memory}-{finetune}"
    cfg = write_ppo_config(
        tmp_path / f"{memory}-{finetune}.yaml",
        adapter,
        out,
        memory=memory,
        model={"finetune": finetune},
        train={"max_steps": 1},
        ppo={"rollout_size": 4, "mini_batch_size": 4, "ppo_epochs": 1},
        data={"max_rows": 8},
    )
    assert main(["ppo", str(cfg)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["step"] == 1 and "kl" in r)["kl"]


@pytest.mark.parametrize("memory", ["separate", "shared-base"])
def test_step1_kl_is_zero_from_a_lora_adapter(sft_adapter_dir, tmp_path, memory):
    assert abs(_step1_kl(tmp_path, sft_adapter_dir, memory, "lora")) < 1e-4


@pytest.mark.parametrize("memory", ["separate", "shared-base"])
def test_step1_kl_is_zero_from_a_lora_adapter_with_qlora(sft_adapter_dir, tmp_path, memory):
    if not _qlora_on_this_machine():
        pytest.skip("QLoRA needs bitsandbytes (and CUDA, or a bitsandbytes build that quantizes on the CPU)")
    assert abs(_step1_kl(tmp_path, sft_adapter_dir, memory, "qlora")) < 1e-4


def test_the_adapter_is_the_reference_and_only_the_policy_adapter_trains_and_is_saved(sft_adapter_dir, tiny_model_dir, tmp_path):
    """Shared-base from an adapter: the reference adapter is frozen and gives the starting policy's log-probs; the
    saved ``final/`` is a standard peft adapter on the original base that loads as the trained policy."""
    from peft import PeftModel

    from alignkit.models.actor_critic import build_actor_critic
    from alignkit.models.loading import load_for_inference

    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    ac = build_actor_critic(str(sft_adapter_dir), memory="shared-base", finetune="lora", lora=lora, model_kw={})
    assert set(ac.policy.peft_config) == {"default", "value", "reference"}
    trainable = {n for n, p in ac.named_parameters() if p.requires_grad}
    assert trainable and not any(".reference." in n for n in trainable)
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    start, _ = load_for_inference(str(sft_adapter_dir))
    with torch.no_grad():
        expected = torch.log_softmax(start(input_ids=ids).logits, -1)
        with ac.adapter("reference"):
            got = torch.log_softmax(ac.policy(input_ids=ids).logits, -1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not any(".reference." in n for n, p in ac.named_parameters() if p.requires_grad)  # still frozen after use

    out = tmp_path / "run"
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        sft_adapter_dir,
        out,
        memory="shared-base",
        model={"finetune": "lora"},
        train={"max_steps": 2, "learning_rate": 1e-2},
        ppo={"rollout_size": 4, "mini_batch_size": 4, "ppo_epochs": 1},
        data={"max_rows": 8},
    )
    assert main(["ppo", str(cfg)]) == 0
    final = out / "final"
    adapter_cfg = json.loads((final / "adapter_config.json").read_text())
    assert (
        adapter_cfg["base_model_name_or_path"]
        == json.loads((sft_adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    )
    trained, _ = load_for_inference(str(final))
    assert isinstance(trained, PeftModel) and list(trained.peft_config) == ["default"]
    with torch.no_grad():
        moved = torch.log_softmax(trained(input_ids=ids).logits, -1)
    assert not torch.allclose(moved, expected, atol=1e-4)  # the trained policy, not the starting one
    # the SFT adapter trained further, not a fresh adapter on the base: every LoRA B matrix (zero in a fresh
    # adapter) is still nearer the SFT adapter's than zero
    from safetensors.torch import load_file

    sft_w = load_file(str(sft_adapter_dir / "adapter_model.safetensors"))
    got_w = load_file(str(final / "adapter_model.safetensors"))
    b_keys = [k for k in sft_w if "lora_B" in k]
    assert b_keys and set(b_keys) <= set(got_w)
    for k in b_keys:
        assert (got_w[k] - sft_w[k]).norm() < 0.5 * sft_w[k].norm(), k
    assert any(not torch.equal(got_w[k], sft_w[k]) for k in sft_w)  # and it did train


def _grpo_step1_kl(tmp_path, adapter, memory: str, finetune: str) -> float:
    from tests.conftest import write_grpo_config

    out = tmp_path / f"grpo-{memory}-{finetune}"
    cfg = write_grpo_config(
        tmp_path / f"grpo-{memory}-{finetune}.yaml",
        adapter,
        out,
        memory=memory,
        model={"finetune": finetune},
        train={"max_steps": 2},
        kl={"coef": 0.1, "estimator": "k3"},
        grpo={"group_size": 2, "prompts_per_step": 2},
        data={"max_rows": 8},
        rewards={"functions": [{"function": "alignkit.rl.rule_rewards:letter_share"}]},  # dense: every group moves
    )
    assert main(["grpo", str(cfg)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r["step"] == 2)["kl"] > 0  # the policy did move: the KL measures something
    return next(r for r in rows if r["step"] == 1)["kl"]


@pytest.mark.parametrize("finetune", ["lora", "qlora"])
@pytest.mark.parametrize("memory", ["separate", "shared-base"])
def test_grpo_reference_is_the_starting_adapter(sft_adapter_dir, tmp_path, memory, finetune):
    """GRPO's reference (kl.coef > 0) is the starting policy too, with LoRA and QLoRA, in both layouts."""
    if finetune == "qlora" and not _qlora_on_this_machine():
        pytest.skip("QLoRA needs bitsandbytes (and CUDA, or a bitsandbytes build that quantizes on the CPU)")
    assert abs(_grpo_step1_kl(tmp_path, sft_adapter_dir, memory, finetune)) < 1e-4
