"""split_digits: the tokenizer never merges digits (build_tokenizer, init_model, the CLI and model.init)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from alignkit.models.init_model import init_model
from alignkit.models.tokenizer import build_tokenizer

# Numbers repeat often enough that plain BPE learns merges like "12" and "123".
CORPUS = [f"What is {a} + {b}? {a + b}" for a in range(10, 60) for b in (12, 123, 45, 1234)] * 3


def _digit_tokens(tokenizer, text):
    return [t for t in tokenizer.tokenize(text) if any(c.isdigit() for c in t)]


def test_plain_bpe_merges_digits_and_split_digits_does_not():
    plain = build_tokenizer(CORPUS, vocab_size=400)
    split = build_tokenizer(CORPUS, vocab_size=400, split_digits=True)
    assert any(len(t.lstrip("Ġ")) > 1 for t in _digit_tokens(plain, "What is 12 + 1234? 1246"))
    assert split.tokenize("12 + 1234") == ["1", "2", "Ġ+", "Ġ", "1", "2", "3", "4"]
    assert all(len(t) == 1 for t in _digit_tokens(split, "x 98765, -4.5 and 1234"))
    for text in ("What is 12 + 1234? 1246", "a 3,000.5 b"):  # still lossless
        assert split.decode(split(text)["input_ids"]) == text


def test_init_model_saves_a_digit_splitting_tokenizer(tmp_path):
    corpus = tmp_path / "numbers.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    out = init_model("llama", "tiny", [str(corpus)], str(tmp_path / "m"), vocab_size=400, split_digits=True)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.tokenize("1234") == ["1", "2", "3", "4"]
    assert "every digit a token of its own" in (out / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv, expected", [([], False), (["--split-digits"], True)])
def test_cli_flag(argv, expected):
    from alignkit.cli import build_parser

    args = build_parser().parse_args(["init-model", "--tokenizer-from", "f.txt", "--out", "o", *argv])
    assert args.split_digits is expected


def test_model_init_config_field():
    from alignkit.config.common import InitModelConfig

    assert InitModelConfig(tokenizer_from=["f"]).split_digits is False
    assert InitModelConfig(tokenizer_from=["f"], split_digits=True).split_digits is True


def test_model_init_in_a_config_passes_split_digits(tmp_path):
    from alignkit.config.common import InitModelConfig
    from alignkit.training.setup import ensure_init_model

    class _Main:
        is_main_process = True

        def print(self, *a):
            pass

        def wait_for_everyone(self):
            pass

    corpus = tmp_path / "numbers.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    spec = InitModelConfig(tokenizer_from=[str(corpus)], vocab_size=400, split_digits=True)
    ensure_init_model(str(tmp_path / "m"), spec, _Main())
    assert AutoTokenizer.from_pretrained(tmp_path / "m").tokenize("1234") == ["1", "2", "3", "4"]
