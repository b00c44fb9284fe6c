"""The LLM-as-a-judge rubric prompt and the parser for the scores judges write.

Pure Python (``re`` and ``math`` only): importing this module imports no torch, so configs, reports and tests can
read the prompt and parse judge outputs without the model stack.
"""

from __future__ import annotations

import math
import re

RUBRIC_VERSION = "yuan2024-additive-5pt-v1"

# Yuan et al. 2024, "Self-Rewarding Language Models" (arXiv:2401.10020), Figure 2: the additive 5-point
# LLM-as-a-judge prompt, word for word, with the figure's line breaks. Only the two slots change:
# <INSTRUCTION_HERE> -> {question}, <RESPONSE_HERE> -> {response}; typographic quotes are written as ASCII.
# The text has no literal braces; any added later must be doubled ({{ }}), since judge_prompt uses str.format.
RUBRIC_PROMPT = """\
Review the user's question and the corresponding response using the additive 5-point
scoring system described below. Points are accumulated based on the satisfaction of each
criterion:
- Add 1 point if the response is relevant and provides some information related to
the user's inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question,
but does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a
useful way, regardless of whether it seems to have been written by an AI Assistant or if it
has elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective,
addressing the user's question directly and comprehensively, and is well-organized and
helpful, even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question
by an AI Assistant, without extraneous information, reflecting expert knowledge, and
demonstrating a high-quality, engaging, and insightful answer.
User: {question}
<response>{response}</response>
After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective, utilizing web search knowledge as
necessary. To evaluate the response in alignment with this additive scoring model, we'll
systematically attribute points based on the outlined criteria."""
"""Yuan et al. 2024 (Self-Rewarding Language Models), Figure 2, with ``{question}`` and ``{response}`` slots."""


def judge_prompt(question: str, response: str) -> str:
    """The rubric prompt for one (question, response) pair: the text a judge model gets as its user message.

    ``str.format`` fills both slots in one pass and never re-reads the inserted text, so braces in the question or
    the response (code, JSON, a literal ``{response}``) come through unchanged.
    """
    return RUBRIC_PROMPT.format(question=question, response=response)


# ------------------------------------------------------------------------------------------------ parsing

# Markdown emphasis and code marks around labels and numbers ("**Score:** 4", "Score: **4**", "`4`").
_MARKUP = re.compile(r"[*_`]")
# A "score" (or "rating") mention: the word itself, not "scoring", "scores", "scored" or "ratings".
_SCORE_WORD = re.compile(r"\b(?:score|rating)\b", re.IGNORECASE)
# Qualifiers that make a mention about the scale, not this response ("a perfect score of 5").
_QUALIFIED = re.compile(
    r"\b(?:perfect|maximum|max|maximal|highest|full|possible|top|best|lowest|minimum|min|average)\s+$", re.IGNORECASE
)
# What may sit between the word and the value: a verb ("is", "of", "would be") and/or a label mark (":", "=",
# a dash followed by a space - a dash glued to a digit is a minus sign).
_SEPARATOR = re.compile(
    r"\s*(?:(?:is|of|would\s+be|will\s+be|should\s+be)\b\s*)?(?P<mark>[:=]|[-\u2013\u2014](?=\s))?\s*", re.IGNORECASE
)
# The value: optional brackets/quotes, a number (not a prefix of a longer number, "4,5" or "4.5.1"), optional
# closing marks, an optional denominator ("/5", "out of 5", "(out of a possible 10)"), and not a range ("3-4").
_VALUE = re.compile(
    r"""
    [\[(<{"']*\s*
    (?P<num>[-+]?\d+(?:\.\d+)?)(?!\d|[.,]\d)
    \s*[\])>}"']*
    (?:\s*\(?\s*(?:/|out\s+of\s+(?:a\s+(?:possible|maximum\s+of)\s+)?)\s*(?P<den>\d+(?:\.\d+)?)(?!\d|[.,]\d))?
    (?!\s*(?:[-\u2013\u2014]|to)\s*\d)
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Fallback labels when no "score" mention gives a value: "Total points: 3", "Points: 3", "Total: 3".
_POINTS_LABEL = re.compile(r"\b(?:total\s+points?|points|total)\s*[:=]\s*", re.IGNORECASE)
# Fallback closing sentences, only at the very end of the text: "... 3 points total." / "... a total of 3 points."
_POINTS_ENDING = re.compile(
    r"(?:\b(?P<a>\d+(?:\.\d+)?)\s+points?\s+(?:in\s+)?total|\btotal\s+of\s+(?P<b>\d+(?:\.\d+)?)\s+points?)"
    r"[\s.!)\]]*$",
    re.IGNORECASE,
)


def _value_at(text: str, pos: int, low: float, high: float) -> tuple[bool, float | None]:
    """``(found, value)``: whether a number starts at ``pos`` (after brackets), and its value on [low, high]
    (``None`` when out of range, or a fraction that makes no sense)."""
    m = _VALUE.match(text, pos)
    if m is None:
        return False, None
    value = float(m["num"])
    if m["den"] is not None:
        den = float(m["den"])
        if den <= 0 or not 0 <= value <= den:
            return True, None
        if den != high:  # "8/10" on a 0..5 rubric: the same share of the scale
            value = low + value / den * (high - low)
    if not (math.isfinite(value) and low <= value <= high):
        return True, None
    return True, value


def parse_score(text: str, *, low: float = 0.0, high: float = 5.0) -> float | None:
    """The score a judge model wrote, on ``[low, high]``, or ``None`` when there is no usable one.

    Markdown marks (``*``, ``_``, backticks) are dropped first, then, in order of precedence:

    1. **Labelled scores** (case-insensitive; the word "score" or "rating" itself, not "scoring"/"scores",
       followed by ``:``, ``=`` or a spaced dash): ``Score: 4``, ``score: 4/5``, ``**Score:** 4.5``, ``Score - 3``,
       ``Score = 2``, ``Final score: 3``, ``Total score: 4 points``, ``Score: 4 out of 5``, ``Score: [3]``,
       ``Score: <4>``, ``Score:4``, ``Rating: 3``, ``Final rating: [[4]]``. The **last** label wins - judges reason
       first ("Relevance score: 1 ...") and conclude with the score, and a judge that revises itself means the
       later one. A label whose value is not a number (``Score: N/A``, the echoed template
       ``Score: <total points>``, a range ``Score: 3-4``) is a label with **no** value: if it is the last label
       the result is ``None`` rather than an earlier number.
    2. Only when there is no label: **prose mentions** with a value, ``the score is 4``, ``a score of 4``, ``I
       would give it a rating of 3``; the last one wins. A label always beats prose, before or after it: in
       "Score: 4. A score of 5 would require citing sources." the score is 4. Mentions with no value ("this score
       reflects ...") and mentions about the scale ("a perfect score of 5", "maximum score") are ignored.
    3. Only when no "score" mention gave a candidate: the last **points label** with a number, ``Total points: 3``,
       ``Points: 3`` or ``Total: 3`` (the rubric's ``<total points>`` filled in as a label), or a text that **ends**
       with ``3 points total`` / ``a total of 3 points``. The same phrases mid-text are running totals of the
       reasoning, not the verdict, so they are not read.
    4. Otherwise ``None``: stray numbers ("The response earns 1 point ...") are never taken for a score.

    Values: a fraction ``n/d`` or ``n out of d`` is ``n`` on a ``0..d`` scale; ``d == high`` keeps ``n`` as it is,
    any other ``d`` is rescaled to the same share of ``[low, high]`` (``8/10`` -> 4.0 on 0..5). A value outside
    ``[low, high]`` (``Score: 7``, ``Score: -1``) or a numerator above its denominator is ``None``, not clipped:
    a judge that ignores the scale is not trusted to be near it.
    """
    if not text:
        return None
    text = _MARKUP.sub("", text)

    labels: list[float | None] = []  # "Score: 4", "Final score = 3", "Rating - 2", "Score: N/A" (None)
    prose: list[float | None] = []  # "a score of 4", "the score is 4"
    for m in _SCORE_WORD.finditer(text):
        if _QUALIFIED.search(text, max(0, m.start() - 40), m.start()):
            continue
        sep = _SEPARATOR.match(text, m.end())
        found, value = _value_at(text, sep.end(), low, high)
        if sep["mark"] in (":", "=") or (sep["mark"] and found):
            labels.append(value)
        elif found:
            prose.append(value)
    if labels:
        return labels[-1]
    if prose:
        return prose[-1]

    labelled: list[float | None] = []
    for m in _POINTS_LABEL.finditer(text):
        found, value = _value_at(text, m.end(), low, high)
        if found:
            labelled.append(value)
    if labelled:
        return labelled[-1]
    end = _POINTS_ENDING.search(text)
    if end is not None:
        value = float(end["a"] or end["b"])
        return value if low <= value <= high else None
    return None
