"""Verifiable rewards: number reading, addition and GSM8K scoring against hand-written cases."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from alignkit.rl.rewards import RewardError
from alignkit.rl.verifiable import addition, gsm8k, gsm8k_answer, last_integer, last_number

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("48", 48),
        ("The answer is 12.", 12),
        ("12 apples, then 7 more", 7),
        ("-5", -5),
        ("x = -5", -5),
        ("3-5", 5),  # a hyphen between digits is not a sign
        ("10 - 5", 5),
        ("1,234", 1234),
        ("-1,234,567 dollars", -1234567),
        ("3,45", 45),  # not a thousands grouping: two numbers
        ("12,3456", 3456),
        ("1, 2, 3", 3),
        ("12.5", None),  # a decimal answer, never read as 12
        ("it is 7 or 12.5", None),
        ("12.0", 12),
        ("1,234.00 total", 1234),
        ("1,234.", 1234),
        (".5", None),
        ("no number here", None),
        ("", None),
        ("48<|im_end|>", 48),
        ("the 2nd try gives 31 and more text", 31),
    ],
)
def test_last_integer(text, expected):
    assert last_integer(text) == expected


def test_last_number_keeps_the_fraction():
    assert last_number("pay $1,234.50 now") == Decimal("1234.50")
    assert last_number("none") is None


def test_addition_scores_the_last_integer():
    prompts = ["What is 3 + 45?", "What is 99 + 99?", "What is 0 + 0?", "What is 12 + 30?", " What is 7 + 5? "]
    responses = ["48", "The answer is 198.", "0", "41", "5 + 7 = 12"]
    assert addition(prompts, responses) == [1.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("response", ["", "forty-eight", "48.5", "-48", "480", "4 8"])
def test_addition_wrong_or_missing_answers_score_zero(response):
    assert addition(["What is 3 + 45?"], [response]) == [0.0]


@pytest.mark.parametrize("prompt", ["What is 3 - 45?", "what is 3 + 45?", "What is 3 + 45", "Compute 3 + 45"])
def test_addition_rejects_other_prompts(prompt):
    with pytest.raises(RewardError, match="not 'What is A \\+ B\\?'"):
        addition([prompt], ["48"])


def test_addition_length_mismatch():
    with pytest.raises(RewardError, match="2 prompts but 1 responses"):
        addition(["What is 1 + 1?", "What is 2 + 2?"], ["2"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("#### $5", "5"),
        ("#### -3", "-3"),
        ("#### 2.5", "2.5"),
        ("first #### 1\nthen #### 2", "2"),
        ("#### ", None),
        ("the answer is 18", None),
    ],
)
def test_gsm8k_answer(text, expected):
    assert gsm8k_answer(text) == expected


def test_gsm8k_scores_final_answers():
    ref = "Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18"
    responses = [
        "She sells 9 eggs at $2, so she makes $18.",  # no marker: the last number
        "9 * 2 = 18\n#### 18.00",  # numerically equal
        "#### 18 dollars, since 9 * 2 = 18 and 3 more",  # the marker's number, not the last one
        "She makes 18 dollars, 2 per egg.",  # the last number is 2
        "#### 17",
        "I do not know",
        "####",
    ]
    assert gsm8k([""] * len(responses), responses, [ref] * len(responses)) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_gsm8k_references():
    assert gsm8k(["q", "q"], ["1,234", "#### -3"], ["#### 1,234", "-3"]) == [1.0, 1.0]
    with pytest.raises(RewardError, match="has no reference"):
        gsm8k(["q"], ["18"], [None])
    with pytest.raises(RewardError, match="has no '#### n' answer"):
        gsm8k(["q"], ["18"], ["eighteen"])


def test_gsm8k_every_shipped_answer_scores_itself():
    """The reference solutions in data/gsm8k/test.jsonl.gz, as responses, all earn 1.0 (and differ from others)."""
    with gzip.open(REPO / "data" / "gsm8k" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        answers = [json.loads(line)["completion"] for line in f]
    assert len(answers) == 1319
    assert gsm8k([""] * len(answers), answers, answers) == [1.0] * len(answers)
    assert all(gsm8k_answer(a) is not None for a in answers)
    shifted = answers[1:] + answers[:1]
    same = sum(gsm8k_answer(a) == gsm8k_answer(b) for a, b in zip(answers, shifted))
    assert sum(gsm8k([""] * len(answers), shifted, answers)) == same < 100


def test_import_needs_neither_torch_nor_transformers():
    code = "import sys, alignkit.rl.verifiable; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
