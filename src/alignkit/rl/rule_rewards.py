"""Rule-based reward functions for RL stages (``reward.function: "alignkit.rl.rule_rewards:NAME"``).

Each is ``fn(prompts: list[str], responses: list[str]) -> list[float]``; they make RL runs checkable without a
learned reward model (the learning tests and ``configs/ppo/tiny.yaml`` use them) and show the interface a
user's own function implements.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z']+")


def letter_share(prompts: list[str], responses: list[str], *, letter: str = "e") -> list[float]:
    """Share of the response's letters that are ``letter`` (case-insensitive; 0 without letters). Dense: every
    response earns something, so even a randomly initialised policy gets a learning signal."""
    out = []
    for r in responses:
        letters = [c for c in r.lower() if c.isalpha()]
        out.append(letters.count(letter.lower()) / len(letters) if letters else 0.0)
    return out


def keyword(prompts: list[str], responses: list[str], *, word: str = "thank", cap: int = 4) -> list[float]:
    """How many times the response contains ``word`` (case-insensitive), up to ``cap``."""
    return [float(min(r.lower().count(word.lower()), cap)) for r in responses]


def says_thanks(prompts: list[str], responses: list[str]) -> list[float]:
    """How many times the response says "thank" (thanks, thank you ...), up to 4."""
    return [float(min(r.lower().count("thank"), 4)) for r in responses]


def says_sorry(prompts: list[str], responses: list[str]) -> list[float]:
    """How many times the response says "sorry", up to 4."""
    return [float(min(r.lower().count("sorry"), 4)) for r in responses]


def brevity(prompts: list[str], responses: list[str]) -> list[float]:
    """Minus the number of words (shorter is better)."""
    return [-float(len(_WORD.findall(r))) for r in responses]


def distinct_words(prompts: list[str], responses: list[str]) -> list[float]:
    """Share of distinct words among the response's words (0 for an empty response): penalises repetition."""
    out = []
    for r in responses:
        words = [w.lower() for w in _WORD.findall(r)]
        out.append(len(set(words)) / len(words) if words else 0.0)
    return out
