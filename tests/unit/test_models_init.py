"""init_model: tiny models for every arch load back with plain transformers; writes are atomic."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit.models.errors import ModelError
from alignkit.models.init_model import ARCHS, init_model

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


def _corpus(path):
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + "." for i in range(120)]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


def _forward(model, tok):
    batch = tok.apply_chat_template(
        [{"role": "user", "content": "the cat sat"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_arch_loads_with_plain_transformers(arch, corpus, tmp_path):
    out = init_model(arch, "tiny", [str(corpus)], str(tmp_path / "m"))
    assert out == (tmp_path / "m").absolute()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == arch
    assert model.config.vocab_size == 2048
    assert model.get_input_embeddings().weight.shape[0] == 2048
    assert len(tok) <= 2048
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.num_attention_heads == 4 and model.config.num_key_value_heads == 2
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.config.pad_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|pad|>")
    assert model.config.bos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    logits = _forward(model, tok)
    assert logits.shape[-1] == 2048
    assert torch.isfinite(logits).all()
    card = (out / "README.md").read_text()
    assert arch in card and "corpus.txt" in card and "seed=0" in card


def test_small_size_and_vocab_override(corpus, tmp_path):
    out = init_model("qwen2", "small", [str(corpus)], str(tmp_path / "m"), vocab_size=1024)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 1024
    assert model.config.hidden_size == 256 and model.config.num_hidden_layers == 4
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n < 20_000_000
    assert torch.isfinite(_forward(model, AutoTokenizer.from_pretrained(out))).all()


def test_seed_makes_weights_reproducible(corpus, tmp_path):
    a = AutoModelForCausalLM.from_pretrained(init_model("llama", "tiny", [str(corpus)], str(tmp_path / "a"), seed=3))
    b = AutoModelForCausalLM.from_pretrained(init_model("llama", "tiny", [str(corpus)], str(tmp_path / "b"), seed=3))
    c = AutoModelForCausalLM.from_pretrained(init_model("llama", "tiny", [str(corpus)], str(tmp_path / "c"), seed=4))
    wa, wb, wc = (m.model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_atomic_write_and_overwrite(corpus, tmp_path):
    out = tmp_path / "m"
    init_model("llama", "tiny", [str(corpus)], str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp dirs left behind
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ModelError, match="not empty"):
        init_model("llama", "tiny", [str(corpus)], str(out), seed=1)
    assert (out / "model.safetensors").read_bytes() == before
    init_model("llama", "tiny", [str(corpus)], str(out), seed=1, overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # An existing empty dir is fine without overwrite.
    (tmp_path / "empty").mkdir()
    init_model("llama", "tiny", [str(corpus)], str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "config.json").is_file()


def test_failure_leaves_nothing_behind(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    with pytest.raises(ModelError, match="no text"):
        init_model("llama", "tiny", [str(empty)], str(tmp_path / "m"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_text_gathered_from_data_files(tmp_path):
    pytest.importorskip("alignkit.data.sources")
    rows = [
        {"messages": [{"role": "user", "content": "zebrafish quokka " * 20}], "meta": {"note": "axolotl " * 20}},
        {"chosen": "narwhal " * 30, "rejected": "pangolin " * 30, "score": 3},
    ]
    data = tmp_path / "rows.jsonl.gz"
    with gzip.open(data, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    out = init_model("gemma2", "tiny", [str(data)], str(tmp_path / "m"), vocab_size=512)
    tok = AutoTokenizer.from_pretrained(out)
    vocab = tok.get_vocab()
    for word in ("zebrafish", "quokka", "axolotl", "narwhal", "pangolin"):  # frequent words become one token
        assert any(word in t for t in vocab), word


def test_bad_arguments(corpus, tmp_path):
    with pytest.raises(ModelError, match="unknown arch"):
        init_model("gpt5", "tiny", [str(corpus)], str(tmp_path / "m"))
    with pytest.raises(ModelError, match="unknown size"):
        init_model("llama", "huge", [str(corpus)], str(tmp_path / "m"))
    with pytest.raises(ModelError, match="does not exist"):
        init_model("llama", "tiny", [str(tmp_path / "missing.txt")], str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_importing_models_package_is_light():
    code = (
        "import sys, alignkit.models as m; "
        "assert 'transformers' not in sys.modules and 'peft' not in sys.modules, 'heavy import'; "
        "assert callable(m.load_causal_lm) and callable(m.generate)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
