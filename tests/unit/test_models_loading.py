"""load_causal_lm / save_model / load_for_inference / merge_adapter on a tiny random model, offline."""

from __future__ import annotations

import importlib.util
import json

import huggingface_hub.constants
import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from alignkit.models import (
    ModelError,
    load_causal_lm,
    load_for_inference,
    load_tokenizer,
    merge_adapter,
    save_model,
    trainable_parameters,
)
from alignkit.models.init_model import init_model

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "past",
    "happy",
    "birds",
    "singing",
    "over",
    "green",
    "hills",
    "and",
    "rivers",
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(10)) for i in range(100)))
    return str(init_model("llama", "tiny", [str(corpus)], str(root / "base"), vocab_size=512))


@pytest.fixture(scope="module")
def tokenizer(base_dir):
    return load_tokenizer(base_dir)


@pytest.fixture
def batch(tokenizer):
    return tokenizer(["the cat sat on a mat", "dogs ran"], padding=True, return_tensors="pt")


def _perturb_lora_b(model, seed=0):
    """LoRA B starts at zero (adapter = identity); randomise it so adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_load_tokenizer_sets_pad_and_right_padding(base_dir, tmp_path):
    tok = load_tokenizer(base_dir)
    assert tok.pad_token == "<|pad|>" and tok.padding_side == "right"
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    tok2 = load_tokenizer(str(tmp_path / "nopad"))
    assert tok2.pad_token == tok2.eos_token == "<|im_end|>"


def test_full_finetune_all_trainable(base_dir):
    model = load_causal_lm(base_dir)
    trainable, total = trainable_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    assert model.training and model.dtype == torch.float32


def test_frozen_model(base_dir):
    model = load_causal_lm(base_dir, finetune="none", dtype="bfloat16")
    assert trainable_parameters(model)[0] == 0
    assert not model.training and model.dtype == torch.bfloat16


def test_lora_only_adapters_trainable_and_all_linear_targeted(base_dir):
    model = load_causal_lm(base_dir, finetune="lora", lora_r=4, lora_alpha=8)
    assert isinstance(model, peft.PeftModel)
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable_names and all("lora_" in n for n in trainable_names)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total

    plain = AutoModelForCausalLM.from_pretrained(base_dir)
    linear = {n for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")}
    assert {n.split(".")[-1] for n in linear} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    wrapped = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert wrapped == linear
    assert model.peft_config["default"].r == 4


def test_lora_custom_targets(base_dir):
    model = load_causal_lm(base_dir, finetune="lora", lora_target_modules=["q_proj", "v_proj"])
    wrapped = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert wrapped == {"q_proj", "v_proj"}
    with pytest.raises(ModelError, match="cannot add LoRA"):
        load_causal_lm(base_dir, finetune="lora", lora_target_modules=["no_such_proj"])


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_gradient_checkpointing_trains(base_dir, batch, finetune):
    model = load_causal_lm(base_dir, finetune=finetune, gradient_checkpointing=True)
    base = model.get_base_model() if finetune == "lora" else model
    assert base.model.layers[0].gradient_checkpointing
    assert base.config.use_cache is False
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_full_save_and_load_round_trip(base_dir, tokenizer, batch, tmp_path):
    model = load_causal_lm(base_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(0.1)  # differ from the base
    expected = _logits(model, batch)
    out = save_model(model, tokenizer, str(tmp_path / "ckpt"))
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    loaded, tok = load_for_inference(str(out))
    assert not loaded.training and trainable_parameters(loaded)[0] == 0
    assert tok.pad_token_id == tokenizer.pad_token_id
    assert torch.equal(_logits(loaded, batch), expected)
    # Saving again replaces the dir atomically.
    save_model(model, tokenizer, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.fixture(scope="module")
def adapter(base_dir, tokenizer, tmp_path_factory):
    """A saved LoRA adapter with non-trivial (perturbed) B weights, and its logits on a fixed batch."""
    model = load_causal_lm(base_dir, finetune="lora", lora_r=4, lora_alpha=8)
    _perturb_lora_b(model)
    batch = tokenizer(["the cat sat on a mat", "dogs ran"], padding=True, return_tensors="pt")
    expected = _logits(model, batch)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(base_dir), batch)
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter really changes the output
    out = save_model(model, tokenizer, str(tmp_path_factory.mktemp("adapters") / "lora"))
    return out, batch, expected


def test_lora_save_writes_adapter_dir(adapter, base_dir):
    out, _, _ = adapter
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()
    assert (out / "tokenizer_config.json").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == base_dir


def test_lora_round_trip_load_for_inference(adapter):
    out, batch, expected = adapter
    model, tok = load_for_inference(str(out))
    assert isinstance(model, peft.PeftModel)
    assert torch.allclose(_logits(model, batch), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_plain_peft_loads_saved_adapter(adapter, base_dir):
    out, batch, expected = adapter
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(out))
    assert torch.allclose(_logits(model, batch), expected, atol=1e-6)


def test_load_causal_lm_on_adapter_dir(adapter):
    out, batch, expected = adapter
    lora = load_causal_lm(str(out), finetune="lora")  # continue training the same adapter
    assert isinstance(lora, peft.PeftModel)
    assert all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
    assert torch.allclose(_logits(lora, batch), expected, atol=1e-6)
    merged = load_causal_lm(str(out), finetune="none")  # merged into a plain model
    assert not isinstance(merged, peft.PeftModel)
    assert torch.allclose(_logits(merged, batch), expected, atol=1e-5)


def test_merge_adapter_matches_adapter_model(adapter, tmp_path):
    out, batch, expected = adapter
    merged_dir = merge_adapter(str(out), str(tmp_path / "merged"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    assert not (merged_dir / "adapter_config.json").exists()
    assert (merged_dir / "tokenizer_config.json").is_file()
    assert (merged_dir / "generation_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # plain transformers, no peft
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, batch), expected, atol=1e-5)
    with pytest.raises(ModelError, match="not empty"):
        merge_adapter(str(out), str(merged_dir))


def test_merge_adapter_rejects_full_model_dir(base_dir, tmp_path):
    with pytest.raises(ModelError, match="not an adapter directory"):
        merge_adapter(base_dir, str(tmp_path / "merged"))


def test_qlora_without_cuda_or_a_cpu_bitsandbytes_is_a_clear_error(base_dir, monkeypatch):
    import alignkit.models.loading as loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "_bnb_quantizes_on_cpu", lambda: False)
    with pytest.raises(ModelError) as err:
        load_causal_lm(base_dir, finetune="qlora")
    assert str(err.value) == loading.QLORA_HINT
    assert "pip install 'alignkit[qlora]'" in loading.QLORA_HINT
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ModelError, match="QLoRA needs bitsandbytes"):
        load_causal_lm(base_dir, finetune="qlora")


@pytest.mark.skipif(
    torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="the CPU path: needs bitsandbytes and no CUDA",
)
def test_qlora_on_cpu_when_bitsandbytes_quantizes_there(base_dir, tokenizer):
    import alignkit.models.loading as loading

    if not loading._bnb_quantizes_on_cpu():
        pytest.skip("this bitsandbytes build does not quantize on the CPU")
    model = load_causal_lm(base_dir, finetune="qlora", lora_r=4, lora_dropout=0.0)
    assert isinstance(model, peft.PeftModel)
    assert getattr(model.get_base_model(), "is_loaded_in_4bit", False)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    batch = tokenizer(["the cat sat on a mat"], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    # an eval pass in between (PPO's rollout, an eval step) leaves the training gradients as they were
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)  # so gradients flow back through every layer's 4-bit weights

    def grads():
        model.zero_grad(set_to_none=True)
        model(**batch, labels=batch["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    before = grads()
    model.eval()
    with torch.no_grad():
        model(**batch)
    model.train()
    after = grads()
    assert before.keys() == after.keys()
    for n in before:
        torch.testing.assert_close(after[n], before[n], msg=n)


@pytest.mark.parametrize(
    "path", ["/definitely/not/here", "./not-here", "runs/out/sft", "~/nope-alignkit-model", "alignkit-tests/no-such-model"]
)
def test_missing_local_path_is_a_clear_error(path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for call in (lambda: load_causal_lm(path), lambda: load_tokenizer(path), lambda: load_for_inference(path)):
        with pytest.raises(ModelError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and repr(path) in msg
        if path.startswith(("/", ".", "~")):
            assert msg == f"model path {path!r} does not exist"


def test_bad_options(base_dir):
    with pytest.raises(ModelError, match="unknown finetune"):
        load_causal_lm(base_dir, finetune="partial")
    with pytest.raises(ModelError, match="unknown dtype"):
        load_causal_lm(base_dir, dtype="float8")


def test_gemma2_sdpa_falls_back_to_eager(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(WORDS) * 20)
    out = init_model("gemma2", "tiny", [str(corpus)], str(tmp_path / "g"), vocab_size=512)
    model = load_causal_lm(str(out), finetune="lora", lora_r=2)  # attn_implementation="sdpa" by default
    assert model.config._attn_implementation == "eager"
    assert load_causal_lm(str(out), attn_implementation="eager").config._attn_implementation == "eager"


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="needs a CUDA GPU and bitsandbytes",
)
def test_qlora_on_gpu(base_dir, tokenizer):
    model = load_causal_lm(base_dir, finetune="qlora", lora_r=4, gradient_checkpointing=True)
    assert isinstance(model, peft.PeftModel)
    assert getattr(model.get_base_model(), "is_loaded_in_4bit", False)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    batch = tokenizer(["the cat sat on a mat"], return_tensors="pt").to("cuda")
    model(**batch, labels=batch["input_ids"]).loss.backward()


def test_directory_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(ModelError, match="no tokenizer files"):
        load_tokenizer(str(tmp_path))
