"""alignkit tokenizer report: fertility and the other coverage numbers against hand counts on tiny texts."""

import json

import pytest

from alignkit.cli import main
from alignkit.vocab.coverage import VocabError, lost_share, measure, text_lines


def _toy_tokenizer(byte_fallback: bool = False):
    """A hand-made BPE: a, b, c, ab (merge a+b), [UNK]; words split on whitespace; no normaliser."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "[UNK]": 4}
    if byte_fallback:
        vocab.update({"<0xC3>": 5, "<0xA9>": 6})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="[UNK]", byte_fallback=byte_fallback))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_hand_counted_fertility_and_rates():
    # words: ab | abc | cab | x | abcabc -> tokens: [ab] [ab c] [c ab] [UNK] [ab c ab c] = 1+2+2+1+4 = 10
    lines = ["ab abc", "   ", "cab x", "abcabc"]
    cov = measure(_toy_tokenizer(), lines, tokenizer_name="toy", text_name="t.txt")
    assert (cov.lines, cov.words, cov.tokens) == (3, 5, 10)
    assert cov.fertility == pytest.approx(10 / 5)
    assert cov.chars_per_token == pytest.approx((6 + 5 + 6) / 10)
    assert cov.bytes_per_token == pytest.approx(17 / 10)
    assert cov.split_4plus == pytest.approx(1 / 5)  # abcabc: 4 tokens
    assert cov.unk_rate == pytest.approx(1 / 10)
    assert cov.byte_fallback_rate is None  # this BPE has no byte fallback: not 0
    assert cov.vocab_used == 3  # ab, c, [UNK]
    assert cov.vocab_size == 5
    assert cov.chars_lost == pytest.approx(1 / 15)  # "x" became [UNK]; 15 non-space characters


def test_byte_fallback_rate():
    # "aé": a, then é (not in the vocab) as its two UTF-8 bytes <0xC3> <0xA9>
    cov = measure(_toy_tokenizer(byte_fallback=True), ["aé"])
    assert (cov.words, cov.tokens) == (1, 3)
    assert cov.byte_fallback_rate == pytest.approx(2 / 3)
    assert cov.unk_rate == 0.0
    assert cov.bytes_per_token == pytest.approx(3 / 3)


def test_byte_level_bpe_counts_every_byte_of_an_unseen_script():
    from alignkit.models.tokenizer import build_tokenizer

    tok = build_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300)
    # "தமிழ்" is 5 code points of 3 UTF-8 bytes; the English-trained byte-level BPE has no merge for them: 15 tokens.
    # " x" is two bytes, "Ġ" and "x", not merged in this corpus: 2 more tokens, both belonging to the word "x"
    cov = measure(tok, ["தமிழ் x"])
    assert (cov.words, cov.tokens) == (2, 17)
    assert cov.split_4plus == pytest.approx(1 / 2)  # தமிழ் in 15 tokens, x in 2 (space + x)
    assert cov.bytes_per_token == pytest.approx(17 / 17)
    assert cov.unk_rate is None and cov.byte_fallback_rate is None
    assert cov.chars_lost == 0.0


def test_lost_share_counts_deleted_marks_not_case():
    assert lost_share(["Tamil தமிழ்"], ["tamil தமழ"]) == pytest.approx(2 / 10)  # ி and ் deleted
    assert lost_share(["abc"], ["abc"]) == 0.0


def test_minilm_strips_tamil_vowel_signs():
    from alignkit.models.loading import load_tokenizer

    tok = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")  # bundled, offline
    cov = measure(tok, ["தமிழ் மொழி"])
    assert cov.chars_lost > 0.3  # the vowel signs (category Mn) go with strip_accents
    assert measure(tok, ["The Tamil language"]).chars_lost == 0.0


def test_report_json_via_cli(tmp_path, capsys):
    from alignkit.models.tokenizer import build_tokenizer

    tok_dir = tmp_path / "tok"
    build_tokenizer(["the cat sat on the mat"] * 20, vocab_size=300).save_pretrained(tok_dir)
    text = tmp_path / "t.txt"
    text.write_text("the cat\n\nsat on the mat\n", encoding="utf-8")
    html = tmp_path / "r" / "report.html"
    assert main(["tokenizer", "report", "--tokenizer", str(tok_dir), "--text", str(text), "--json", "--html", str(html)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["tokenizer"] == str(tok_dir) and row["text"] == str(text)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    want = sum(len(tok(line, add_special_tokens=False)["input_ids"]) for line in ("the cat", "sat on the mat"))
    assert row["words"] == 6 and row["tokens"] == want and row["fertility"] == want / 6  # each line on its own
    assert {"tokens", "fertility", "chars_per_token", "bytes_per_token", "split_4plus", "unk_rate"} <= row.keys()
    assert "<svg" in html.read_text()

    assert main(["tokenizer", "report", "--tokenizer", str(tok_dir), "--text", str(text)]) == 0
    table = capsys.readouterr().out
    assert "tok/word" in table and str(text) in table


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: ["--text", str(p / "missing.txt")], "missing.txt: text file not found"),
        (lambda p: ["--text", str(p / "empty.txt")], "empty.txt: no text"),
        (lambda p: ["--text", str(p / "t.txt"), "--tokenizer", str(p / "nope")], "nope"),
    ],
)
def test_bad_inputs_are_one_line(tmp_path, capsys, make, needle):
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("hello\n", encoding="utf-8")
    args = make(tmp_path)
    if "--tokenizer" not in args:
        args += ["--tokenizer", "sentence-transformers/all-MiniLM-L6-v2"]
    assert main(["tokenizer", "report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkit: error:") and needle in err and "\n" not in err


def test_text_lines_errors(tmp_path):
    with pytest.raises(VocabError, match="is a directory"):
        text_lines(str(tmp_path))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(VocabError, match="not UTF-8"):
        text_lines(str(bad))
