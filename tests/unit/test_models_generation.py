"""generate(): chat-templated, left-padded batched generation of new text only."""

from __future__ import annotations

import pytest
import torch

from alignkit.data.examples import Message
from alignkit.models import ModelError, generate, load_causal_lm, load_tokenizer
from alignkit.models.generation import render_prompt
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
PROMPTS = ["the cat", "dogs ran past happy birds singing over green hills", "a mat"]


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(10)) for i in range(100)))
    out = init_model("qwen2", "tiny", [str(corpus)], str(root / "m"), vocab_size=512)
    return load_causal_lm(str(out), finetune="none"), load_tokenizer(str(out))


class _Spy:
    """Wraps ``model.generate`` to record (input_ids, output ids) of every call."""

    def __init__(self, model):
        self.inner, self.calls = model.generate, []

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        ids = kwargs["input_ids"]
        self.calls.append((ids, out))
        return out


def test_returns_one_string_per_prompt_and_respects_max_new_tokens(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    spy = _Spy(model)
    monkeypatch.setattr(model, "generate", spy)
    out = generate(model, tok, PROMPTS, max_new_tokens=3, temperature=0, batch_size=2)
    assert isinstance(out, list) and len(out) == 3 and all(isinstance(s, str) for s in out)
    assert len(spy.calls) == 2  # batches of 2 and 1
    for ids, full in spy.calls:
        assert 1 <= full.shape[1] - ids.shape[1] <= 3
        assert torch.equal(full[:, : ids.shape[1]], ids)  # the prompt is echoed, then new tokens
    for s in out:
        assert "<|im_end|>" not in s and "<|im_start|>" not in s and "<|pad|>" not in s


def test_left_padding(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    spy = _Spy(model)
    monkeypatch.setattr(model, "generate", spy)
    generate(model, tok, PROMPTS[:2], max_new_tokens=1, temperature=0)
    ((ids, _),) = spy.calls
    assert (ids[:, -1] != tok.pad_token_id).all()  # every row ends with its last prompt token
    assert (ids[:, 0] == tok.pad_token_id).any()


def test_greedy_is_deterministic_and_keeps_order(model_and_tok):
    model, tok = model_and_tok
    a = generate(model, tok, PROMPTS, max_new_tokens=4, temperature=0)
    b = generate(model, tok, PROMPTS, max_new_tokens=4, temperature=0, seed=123)
    assert a == b
    assert generate(model, tok, PROMPTS[::-1], max_new_tokens=4, temperature=0) == a[::-1]


def test_sampling_is_seeded_and_leaves_global_rng_alone(model_and_tok):
    model, tok = model_and_tok
    state = torch.get_rng_state()
    a = generate(model, tok, PROMPTS, max_new_tokens=6, temperature=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, tok, PROMPTS, max_new_tokens=6, temperature=1.0, seed=7) == a
    assert generate(model, tok, PROMPTS, max_new_tokens=6, temperature=1.0, seed=8) != a


def test_message_prompts_match_string_prompts(model_and_tok):
    model, tok = model_and_tok
    as_str = generate(model, tok, ["the cat"], max_new_tokens=3, temperature=0)
    as_msgs = generate(model, tok, [[Message("user", "the cat")]], max_new_tokens=3, temperature=0)
    assert as_str == as_msgs
    text = render_prompt(tok, [Message("system", "be brief"), Message("user", "hi")])
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system\nbe brief<|im_end|>" in text


def test_restores_training_mode_and_works_with_lora(model_and_tok):
    model, tok = model_and_tok
    lora = load_causal_lm(model.name_or_path, finetune="lora", lora_r=2)
    assert lora.training
    out = generate(lora, tok, PROMPTS[:1], max_new_tokens=2, temperature=0)
    assert len(out) == 1 and lora.training


def test_bad_arguments(model_and_tok):
    model, tok = model_and_tok
    assert generate(model, tok, [], max_new_tokens=2) == []
    with pytest.raises(ModelError, match="max_new_tokens"):
        generate(model, tok, PROMPTS, max_new_tokens=0)
    with pytest.raises(ModelError, match="temperature"):
        generate(model, tok, PROMPTS, temperature=-1)
