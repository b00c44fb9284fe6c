"""parse_score on what judge models actually write; the rubric prompt; alignkit.judge imports no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignkit.judge.rubric import RUBRIC_PROMPT, RUBRIC_VERSION, judge_prompt, parse_score

CASES = [
    # --- the rubric's own format and its common variants
    ("plain", "Score: 4", 4.0),
    ("lowercase fraction", "The answer is relevant and mostly complete.\nscore: 4/5", 4.0),
    ("bold label", "The response is accurate and well organised, with expert detail.\n\n**Score:** 4.5", 4.5),
    ("dash", "Relevant and direct, but it misses the second half of the question.\n\nScore - 3", 3.0),
    ("equals", "It only partly answers the question.\nScore = 2", 2.0),
    ("final score", "Justification: relevant, covers most of the question, answers the basics.\nFinal score: 3", 3.0),
    ("total score with points", "Total score: 4 points", 4.0),
    ("out of", "Score: 4 out of 5", 4.0),
    ("out of, in parentheses", "Score: 4 (out of 5)", 4.0),
    ("square brackets", "Score: [3]", 3.0),
    ("angle brackets", "After examining the response, I conclude.\nScore: <4>", 4.0),
    ("upper case", "SCORE: 5", 5.0),
    ("no space", "Score:4", 4.0),
    ("bold number", "Score: **4**", 4.0),
    ("heading", "### Justification\nClear and direct.\n\n### Score: 4", 4.0),
    ("trailing period", "Score: 4.", 4.0),
    ("ten-point fraction rescaled", "Score: 8/10", 4.0),
    ("full marks on ten", "Score: 10/10", 5.0),
    # --- reasoning that mentions other numbers first: the last "score" mention wins
    (
        "additive reasoning",
        "The response earns 1 point for relevance and a second point for addressing a substantial portion of the "
        "question. It does not answer the basic elements in a useful way, so no third point.\n\nScore: 2",
        2.0,
    ),
    (
        "self-revision",
        "At first glance I would give 3 points: it is relevant, substantial and useful. Looking again, it is clearly "
        "written from an AI Assistant's perspective and well organised, which earns a fourth point.\n\nScore: 4",
        4.0,
    ),
    (
        "per-criterion scores then total",
        "- Relevance score: 1\n- Substance score: 1\n- Usefulness score: 1\n- Perspective score: 0\n\nTotal score: 3",
        3.0,
    ),
    ("score then prose about it", "Score: 4\n\nThis score reflects the clear structure of the answer.", 4.0),
    ("perfect score mentioned after", "Score: 4\n\nIt falls short of a perfect score of 5 because it rambles.", 4.0),
    ("loose phrasing", "Overall the reply is helpful but generic. I would give it a score of 3.", 3.0),
    ("template then answer", 'I will use the format "Score: <total points>".\n\nScore: 3', 3.0),
    # --- no "score" keyword: only a points label or a closing total is read
    ("total points label", "1 point for relevance, 1 for substance, 1 for usefulness.\nTotal points: 3", 3.0),
    ("points label", "Points: 3", 3.0),
    ("points total at the end", "Relevant (+1), substantial (+1), useful (+1). That makes 3 points total.", 3.0),
    ("running total mid-text", "That is a total of 3 points so far, but the fourth criterion is not met.", None),
    # --- no usable score: None, never a guess
    ("out of range high", "Score: 7", None),
    ("negative", "Score: -1", None),
    ("numerator above denominator", "Score: 6/5", None),
    ("no score at all", "The response is good.", None),
    ("stray numbers only", "The response earns 1 point for relevance and 2 more for being useful.", None),
    ("empty", "", None),
    ("not applicable", "The response is empty, so it cannot be judged.\nScore: N/A", None),
    ("template echoed", "Briefly justify your total score, up to 100 words.\nScore: <total points>", None),
    ("range", "Score: 3-4", None),
    ("decimal comma", "Score: 4,5", None),
    ("last label unusable", "Score: 3\n\nOn reflection I cannot decide.\nScore: N/A", None),
    # --- a labelled score beats a number mentioned in prose, wherever the prose is; among labels the last wins
    ("label then prose about a higher score", "Score: 4. A score of 5 would require citing sources.", 4.0),
    ("bold label then prose", "**Score:** 4\n\nA score of 5 would need sources.", 4.0),
    ("fraction label then prose fraction", "Score: 4/5. A score of 5/5 would require citing sources.", 4.0),
    ("prose first, label after", "I would give it a score of 2 at first. Score: 3", 3.0),
    ("label, then the score is in prose", "Final score: 4\n\nThe score is 5 only for answers that cite sources.", 4.0),
    ("two labels: the last wins", "Score: 2\n\nOn a second reading it is better than that.\nFinal score: 4", 4.0),
    ("unusable label beats prose", "Score: N/A. A score of 3 would fit if it answered at all.", None),
    ("rating label", "Rating: 3", 3.0),
    ("rating fraction", "rating: 4/5", 4.0),
    ("final rating", "Clear and complete.\nFinal rating: 2", 2.0),
    ("rating label beats prose score", "It deserves a score of 5 in spirit. Rating: 3", 3.0),
    ("double brackets", "Rating: [[5]]", 5.0),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in CASES], ids=[name for name, _, _ in CASES])
def test_parse_score(text, expected):
    got = parse_score(text)
    assert got == expected
    assert got is None or isinstance(got, float)


def test_parse_score_rescales_to_other_ranges():
    assert parse_score("Score: 8/10", low=1.0, high=5.0) == pytest.approx(1.0 + 0.8 * 4.0)
    assert parse_score("Score: 4/5", low=1.0, high=5.0) == 4.0  # denominator == high: kept as written
    assert parse_score("Score: 9", high=10.0) == 9.0
    assert parse_score("Score: 0", low=1.0) is None


def test_judge_prompt_fills_both_slots_and_keeps_braces():
    question = 'Write {"a": 1} as YAML; what is {response}?'
    response = "a: 1\n{question} stays {{as is}}"
    text = judge_prompt(question, response)
    assert f"User: {question}\n" in text
    assert f"<response>{response}</response>" in text
    assert '"Score: <total points>"' in text
    assert text.count(question) == 1 and text.count(response) == 1
    assert "{question}" in RUBRIC_PROMPT and "{response}" in RUBRIC_PROMPT
    assert "additive 5-point" in text and "Bestow a fifth point" in text


def test_rubric_version_is_set():
    assert RUBRIC_VERSION == "yuan2024-additive-5pt-v1"


def test_judge_package_does_not_import_torch():
    code = "import sys, alignkit.judge, alignkit.judge.rubric, alignkit.judge.rules; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
