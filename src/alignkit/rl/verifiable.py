"""Verifiable rewards: score a response by checking its final answer, no reward model needed.

Reward functions here follow the RL stages' interface ``fn(prompts: list[str], responses: list[str]) ->
list[float]`` (prompts as plain text: the user message of a one-turn prompt). One that also takes
``references`` gets the data row's completion text (or None) for each prompt: ``gsm8k`` does.

Use them as ``reward.function: "alignkit.rl.verifiable:addition"`` (or ``:gsm8k``). The module
imports only ``re``, ``decimal`` and ``alignkit.rl.rewards`` (no torch, no transformers).

How a number is read from text (``last_integer``, ``last_number``):

- an optional minus sign directly before the digits, not after a letter, digit, ``.`` or ``-``
  ("-5" and "x = -5" are -5; in "3-5" the numbers are 3 and 5);
- digits with optional thousands commas in groups of three ("1,234" is 1234; "3,45" is 3 and 45);
- an optional decimal tail ``.digits`` ("12.5"). A full stop not followed by a digit ends a sentence
  ("The answer is 12." reads 12). A number right after a ``.`` (".5") is not read.

``last_integer`` reads the *last* number of the text and returns it only when it is an integer:
"12.5" gives None, never 12 (an earlier integer is not used either: the answer given was 12.5);
"12.0" and "12.00" give 12 (the value is an integer).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from alignkit.rl.rewards import RewardError

# sign | integer part (comma-grouped by three, or plain digits) | decimal tail
_NUMBER = re.compile(r"(?:(?<![\w.\-])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)(?!,\d)|\d+)(?:\.\d+)?")
_ADDITION_PROMPT = re.compile(r"What is (\d+) \+ (\d+)\?")


def _numbers(text: str) -> list[str]:
    """Every number in ``text`` as written, commas removed ("1,234.5" -> "1234.5"), in order."""
    return [m.group(0).replace(",", "") for m in _NUMBER.finditer(text)]


def _value(number: str) -> Decimal | None:
    try:
        return Decimal(number)
    except InvalidOperation:  # pragma: no cover - the regex only yields valid literals
        return None


def last_number(text: str) -> Decimal | None:
    """The last number in ``text`` (see the module docstring for what counts), or None if there is none."""
    found = _numbers(text)
    return _value(found[-1]) if found else None


def last_integer(text: str) -> int | None:
    """The last number in ``text`` if its value is an integer ("-1,234" -> -1234, "12.0" -> 12), else None.

    None when the text has no number or its last number has a non-zero fraction ("12.5")."""
    value = last_number(text)
    if value is None or value != value.to_integral_value():
        return None
    return int(value)


def _check_lengths(name: str, prompts: list[str], responses: list[str]) -> None:
    if len(prompts) != len(responses):
        raise RewardError(f"{name}: {len(prompts)} prompts but {len(responses)} responses")


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def addition(prompts: list[str], responses: list[str]) -> list[float]:
    """1.0 where the response's last integer equals ``a + b`` of its prompt ``What is {a} + {b}?``, else 0.0.

    The prompt (surrounding whitespace ignored) must be exactly that sentence with non-negative
    integers ``a`` and ``b``; any other prompt is a ``RewardError`` naming it."""
    _check_lengths("addition", prompts, responses)
    scores = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        m = _ADDITION_PROMPT.fullmatch(prompt.strip())
        if m is None:
            raise RewardError(f"addition: prompt {i} {_short(prompt)} is not 'What is A + B?'")
        target = int(m.group(1)) + int(m.group(2))
        scores.append(1.0 if last_integer(response) == target else 0.0)
    return scores


def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####`` of a GSM8K solution, commas removed ("#### 1,234" -> "1234").

    None when there is no ``####`` or no number follows it. A ``$`` or spaces before the number are
    allowed; the first number after the marker is the answer."""
    if "####" not in text:
        return None
    found = _numbers(text.rsplit("####", 1)[1])
    return found[0] if found else None


def _final_answer(response: str) -> Decimal | None:
    """A response's answer: its ``#### n`` if it has a ``####`` marker, else its last number."""
    if "####" in response:
        answer = gsm8k_answer(response)
        return _value(answer) if answer is not None else None
    return last_number(response)


def gsm8k(prompts: list[str], responses: list[str], references: list[str | None]) -> list[float]:
    """1.0 where the response's final answer equals the reference's ``#### n`` numerically, else 0.0.

    The response's final answer is its ``#### n`` when it writes the marker, otherwise its last number
    ("... so she makes $18." scores against "#### 18"). ``references`` are the rows' GSM8K solutions; a
    reference that is a bare number ("18") is used as is. A missing reference, or one without an
    answer, is a ``RewardError``."""
    _check_lengths("gsm8k", prompts, responses)
    if len(references) != len(responses):
        raise RewardError(f"gsm8k: {len(responses)} responses but {len(references)} references")
    scores = []
    for i, (response, reference) in enumerate(zip(responses, references)):
        if reference is None:
            raise RewardError(f"gsm8k: prompt {i} has no reference answer (the data rows need a completion)")
        ref = gsm8k_answer(reference)
        if ref is None and _NUMBER.fullmatch(reference.strip()):
            ref = reference.strip().replace(",", "")
        if ref is None:
            raise RewardError(f"gsm8k: reference {i} {_short(reference)} has no '#### n' answer")
        answer = _final_answer(response)
        scores.append(1.0 if answer is not None and answer == _value(ref) else 0.0)
    return scores
