"""Rule-based judge functions: the interface a user's own judge implements, and judges for tiny-model runs.

A judge function is ``fn(prompts: list[str], responses: list[str], **kwargs) -> list[float | None]``: one score
per response (``None`` = no score), prompts as plain text. Point ``judge.function`` at one
(``"alignkit.judge.rules:letter_score"``, or ``"my_judge.py:fn"``) with ``judge.type: function``. Pure Python.
"""

from __future__ import annotations


def letter_score(prompts: list[str], responses: list[str], *, letter: str = "e", scale: float = 5.0) -> list[float | None]:
    """``scale`` x the share of a response's letters that are ``letter`` (case-insensitive); ``None`` for a
    response with no letters at all (so a run exercises the no-score path).

    A stand-in for a real judge in tiny runs: it is dense - even a randomly initialised model's babble earns a
    spread of scores, so best-vs-worst pairs exist and DPO has something to learn (more of the letter) that a
    test can see move. Letters are ``str.isalpha`` characters, so accented letters count towards the total.
    """
    if len(letter) != 1 or not letter.isalpha():
        raise ValueError(f"letter_score: letter must be one letter, got {letter!r}")
    target = letter.lower()
    out: list[float | None] = []
    for r in responses:
        letters = [c.lower() for c in r if c.isalpha()]
        out.append(scale * sum(c == target for c in letters) / len(letters) if letters else None)
    return out


def length_score(
    prompts: list[str], responses: list[str], *, words_per_point: float = 10.0, cap: float = 5.0
) -> list[float | None]:
    """``min(words / words_per_point, cap)``: longer is better, up to a cap (0 for an empty response).

    A deliberately naive judge, for showing length bias: self-rewarding rounds judged by it learn to write more,
    and the mean response length in the report rises with the judge score.
    """
    if words_per_point <= 0:
        raise ValueError(f"length_score: words_per_point must be > 0, got {words_per_point}")
    return [min(len(r.split()) / words_per_point, cap) for r in responses]
