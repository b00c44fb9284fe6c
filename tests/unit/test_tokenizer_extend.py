"""alignkit tokenizer extend: new tokens lower a new language's fertility, leave English tokenized exactly as before,
and new embedding rows are the mean of the old pieces' rows."""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import REPO

TAMIL = REPO / "data" / "tamil" / "tamil-prose.txt"
ENGLISH = [
    "Deep learning is a subset of machine learning that uses neural networks with many layers.",
    "def loss(x, y):\n    return ((x - y) ** 2).mean()  # mean squared error",
    "Café, naïve and résumé keep their accents; 12,345 apples cost $6.78.",
]


@pytest.fixture(scope="module")
def tamil_lines():
    return [line for line in TAMIL.read_text(encoding="utf-8").splitlines() if line.strip()][:150]


@pytest.fixture(scope="module")
def old_tok():
    from alignkit.models.tokenizer import build_tokenizer

    return build_tokenizer(ENGLISH * 10 + ["the cat sat on the mat, and the dog sat on the log"] * 10, vocab_size=400)


def _fast(spec_json: str, like):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(spec_json), eos_token=like.eos_token)


def test_extension_lowers_tamil_fertility_and_keeps_english(old_tok, tamil_lines):
    from alignkit.vocab.coverage import measure
    from alignkit.vocab.extend import extend_bpe

    ext = extend_bpe(old_tok.backend_tokenizer.to_str(), tamil_lines, 60)
    new = _fast(ext.tokenizer_json, old_tok)
    assert len(ext.added) == 60 and len(new) == len(old_tok) + 60
    assert ext.ids == list(range(len(old_tok), len(old_tok) + 60))
    assert [new.convert_tokens_to_ids(t) for t in ext.added] == ext.ids

    english = ENGLISH + [line for line in (REPO / "README.md").read_text().splitlines() if line.strip()][:50]
    for line in english:
        assert new(line, add_special_tokens=False)["input_ids"] == old_tok(line, add_special_tokens=False)["input_ids"]
    before, after = measure(old_tok, tamil_lines), measure(new, tamil_lines)
    assert after.fertility < 0.8 * before.fertility
    assert measure(new, english).fertility == measure(old_tok, english).fertility
    # a mixed line never gets more tokens, and decodes to itself
    mixed = "Café தமிழ் naïve மொழி 42"
    assert len(new(mixed)["input_ids"]) <= len(old_tok(mixed)["input_ids"])
    assert new.decode(new(mixed)["input_ids"]) == mixed
    # new merges are at the end of the merge list: the old merges keep their ranks
    old_merges = json.loads(old_tok.backend_tokenizer.to_str())["model"]["merges"]
    new_merges = json.loads(ext.tokenizer_json)["model"]["merges"]
    assert new_merges[: len(old_merges)] == old_merges and len(new_merges) == len(old_merges) + 60


def test_bpe_split_by_hand():
    from alignkit.vocab.extend import bpe_split

    ranks = {("a", "b"): 0, ("b", "c"): 1, ("ab", "c"): 2}
    assert bpe_split("abc", ranks) == ["abc"]  # a+b first (rank 0), then ab+c
    assert bpe_split("bca", ranks) == ["bc", "a"]
    assert bpe_split("xyz", ranks) == ["x", "y", "z"]


def test_new_rows_are_the_mean_of_the_old_pieces(old_tok, tamil_lines):
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignkit.vocab.extend import bytes_to_unicode, extend_bpe, resize_and_init

    ext = extend_bpe(old_tok.backend_tokenizer.to_str(), tamil_lines, 20)
    byte_char = set(bytes_to_unicode().values())
    for tie in (True, False):
        cfg = LlamaConfig(
            vocab_size=len(old_tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=tie,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
        emb0 = model.get_input_embeddings().weight.detach().clone()
        head0 = model.get_output_embeddings().weight.detach().clone()
        info = resize_and_init(model, old_tok, ext)
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        assert info == {"rows": len(old_tok) + 20, "tied": tie} and emb.shape[0] == len(old_tok) + 20
        assert (head is emb) == tie
        assert torch.equal(emb[: len(old_tok)], emb0)  # old rows untouched
        # by hand: the English-trained tokenizer has no Tamil merges, so the old pieces of a Tamil token are its bytes
        token = next(t for t in ext.added if not t.startswith("Ġ"))
        i = ext.ids[ext.added.index(token)]
        assert all(c in byte_char for c in token)
        pieces = [old_tok.convert_tokens_to_ids(c) for c in token]
        assert len(pieces) >= 2
        torch.testing.assert_close(emb[i], emb0[pieces].mean(dim=0))
        if not tie:
            torch.testing.assert_close(head[i], head0[pieces].mean(dim=0))


def test_extend_cli_writes_a_tokenizer_and_refuses_bad_inputs(old_tok, tamil_lines, tmp_path, capsys):
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"
    old_tok.save_pretrained(tok_dir)
    ta = tmp_path / "ta.txt"
    ta.write_text("\n".join(tamil_lines), encoding="utf-8")
    en = tmp_path / "en.txt"
    en.write_text("\n".join(ENGLISH), encoding="utf-8")
    out = tmp_path / "out"
    args = ["tokenizer", "extend", "--tokenizer", str(tok_dir), "--text", str(ta), "--keep-text", str(en)]
    assert main([*args, "--add", "30", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 30 and summary["vocab_size"] == len(old_tok) + 30 and summary["model"] is None
    rows = {(r["tokenizer"].split(":")[0], r["text"]): r for r in summary["rows"]}
    assert rows[("after", str(ta))]["fertility"] < rows[("before", str(ta))]["fertility"]
    assert rows[("after", str(en))]["tokens"] == rows[("before", str(en))]["tokens"]
    assert len(AutoTokenizer.from_pretrained(out)) == len(old_tok) + 30

    for extra, needle in [
        (["--add", "0", "--out", str(tmp_path / "o0")], "--add must be at least 1"),
        (["--add", "5", "--out", str(out)], "not empty"),
    ]:
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    minilm = ["--tokenizer", "sentence-transformers/all-MiniLM-L6-v2", "--text", str(ta), "--add", "5"]
    assert main(["tokenizer", "extend", *minilm, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "WordPiece" in err and "byte-level BPE" in err and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_join_marks_keeps_tamil_words_whole_and_english_unchanged(old_tok, tamil_lines):
    from alignkit.vocab.coverage import measure
    from alignkit.vocab.extend import extend_bpe

    plain = _fast(extend_bpe(old_tok.backend_tokenizer.to_str(), tamil_lines, 60).tokenizer_json, old_tok)
    joined = _fast(extend_bpe(old_tok.backend_tokenizer.to_str(), tamil_lines, 60, marks_in_words=True).tokenizer_json, old_tok)
    pre = joined.backend_tokenizer.pre_tokenizer
    assert [w for w, _ in pre.pre_tokenize_str("தமிழ் மொழி")] == ["à®¤à®®à®¿à®´à¯į", "Ġà®®à¯Ĭà®´à®¿"]  # 2 words, 2 pre-tokens
    for line in ENGLISH:
        assert joined(line, add_special_tokens=False)["input_ids"] == old_tok(line, add_special_tokens=False)["input_ids"]
    assert measure(joined, tamil_lines).fertility < measure(plain, tamil_lines).fertility


def test_join_marks_refuses_other_pre_tokenizers():
    from alignkit.vocab.coverage import VocabError
    from alignkit.vocab.extend import join_marks

    with pytest.raises(VocabError, match="GPT-2 ByteLevel pre-tokenizer only"):
        join_marks({"pre_tokenizer": {"type": "Sequence", "pretokenizers": []}, "model": {"type": "BPE"}})


def test_llama3_style_split_regex_and_trailing_special_tokens(tamil_lines):
    """A Llama 3-shaped tokenizer: a Split regex then ByteLevel without its own regex, merges ignored for whole
    words in the vocabulary, special tokens after the BPE vocabulary. New ids come after the special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from alignkit.vocab.extend import extend_bpe

    pattern = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
        r"|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(ENGLISH * 10, trainer=trainer)
    old = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot|>")
    old.add_special_tokens({"additional_special_tokens": ["<|begin|>"]})
    first_free = len(old)
    ext = extend_bpe(old.backend_tokenizer.to_str(), tamil_lines, 40)
    new = _fast(ext.tokenizer_json, old)
    assert ext.ids[0] == first_free and len(ext.added) == 40
    for line in ENGLISH:
        assert new(line, add_special_tokens=False)["input_ids"] == old(line, add_special_tokens=False)["input_ids"]
    tamil = " ".join(tamil_lines[:5])
    assert len(new(tamil)["input_ids"]) < len(old(tamil)["input_ids"])
    assert new.decode(new(tamil)["input_ids"]) == tamil
