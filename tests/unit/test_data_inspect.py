"""inspect_data / print_report: counts, percentiles, the masked first example, bad rows survive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from alignkit.data.formats import load_examples
from alignkit.data.inspect import InspectReport, inspect_data, print_report
from alignkit.data.tokenize import tokenize_examples
from alignkit.models.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests/fixtures/data"
HH = REPO / "data/hh-rlhf-harmless/harmless-base.jsonl.gz"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(["hello there, how are you?", "What is 2+2? It is 4.", "Be brief. Blue. Seven."] * 10, vocab_size=300)


def _printed(report: InspectReport) -> str:
    console = Console(record=True, no_color=True, width=200)
    print_report(report, console)
    return console.export_text()


def test_report_on_fixture_with_given_tokenizer(tok):
    path = str(FIX / "messages.jsonl")
    report = inspect_data(path, tokenizer=tok, max_length=30)
    lengths = sorted(len(t.input_ids) for t in tokenize_examples(load_examples(path).examples, tok, max_length=10_000).examples)
    assert report.format == "messages" and report.rows == 2 and report.examples == 2 and report.skipped == 0
    assert report.first_error is None and not report.tokenizer_trained
    assert (report.p50, report.p90, report.p99, report.max) == (lengths[0], lengths[1], lengths[1], lengths[1])
    assert report.over_max_length == sum(n > 30 for n in lengths)
    assert report.first_example == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there!<|im_end|>\n"
    assert report.first_example_segments == [
        ("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hi there!<|im_end|>", True),
        ("\n", False),
    ]
    out = _printed(report)
    assert "messages" in out and "rows read" in out and "2" in out
    assert f"{report.p50} / {report.p90} / {report.p99} / {report.max}" in out
    assert "[no loss]<|im_start|>user" in out and "[loss]Hi there!<|im_end|>" in out


def test_no_tokenizer_trains_one_and_says_so():
    report = inspect_data(str(FIX / "preference.jsonl"))
    assert report.tokenizer_trained and report.format == "preference" and report.examples == 2
    assert "[loss]4<|im_end|>" in _printed(report)
    assert "none given" in _printed(report)


def test_bad_rows_are_counted_not_fatal(tmp_path, tok):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"prompt": "What is 2+2?", "completion": "4"})
    path.write_text("\n".join([good, "{oops", json.dumps({"prompt": "x"}), good]) + "\n")
    console = Console(record=True, no_color=True, width=200)
    report = inspect_data(str(path), tokenizer=tok, console=console)
    assert (report.rows, report.examples, report.skipped) == (4, 2, 2)
    assert report.first_error.startswith(f"{path}:2: malformed JSON")
    assert f"first error: {path}:2: malformed JSON" in console.export_text()


def test_undetectable_file_is_reported(tok):
    report = inspect_data(str(REPO / "data/mt-bench/question.jsonl"), tokenizer=tok)
    assert report.format is None and report.rows == 80 and report.skipped == 80 and report.examples == 0
    assert "cannot detect the format" in report.first_error
    out = _printed(report)
    assert "undetected" in out and "first example" not in out


def test_real_hh_rlhf(tok):
    report = inspect_data(str(HH), tokenizer=tok, max_rows=30, max_length=256)
    assert report.format == "hh_rlhf" and report.rows == 30 and report.examples == 30
    assert report.p50 <= report.p90 <= report.p99 <= report.max
    assert report.first_example_segments[-2] == (
        "No, sorry!  All of these involve a pen, the point is that you can get funny results by doing pranks with pens.<|im_end|>",
        True,
    )
    assert report.first_example_segments[0][0].startswith("<|im_start|>user\nwhat are some pranks with a pen i can do?")
