"""The few refusals the semantic cache makes without a model: crisp, language-independent, and certainly right.

Two questions that both state numbers, and not the same ones, ask different things ("Python 3.11" / "Python
3.12", "in 2019" / "in 2020"); two questions that both name something written as a name, and each names one
the other never mentions, ask about different things ("the capital of France" / "the capital of Peru"). The
learned verifier (:mod:`alignkit.rag.verifier`) decides everything else — word order, synonyms, intents —
because a rule for those is neither crisp nor language-independent.

Deliberately NOT vetoed: a number on one side only ("3 steps" / "three steps": the verifier decides), a name on
one side only ("How do I install Python?" / "how to install python": case differs, the other side still
mentions it), different letter case. Pure functions of two strings, plain ``re`` and ``unicodedata``.
"""

from __future__ import annotations

import re
import unicodedata

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+(?:[-’']\w+)*", re.UNICODE)


def numbers(text: str) -> frozenset[str]:
    """The numbers written with digits (any script's digits, unicode-normalised): ``"3.12"``, ``"2,000"`` -> ``"2000"``
    when the comma groups thousands."""
    text = unicodedata.normalize("NFKC", text)
    out = set()
    for m in _NUMBER.finditer(text):
        s = m.group()
        if re.fullmatch(r"\d{1,3}(,\d{3})+", s):  # thousands separators
            s = s.replace(",", "")
        out.add(str(int(s)) if s.isdigit() else s)
    return frozenset(out)


def _base(word: str) -> str:
    """A word without an apostrophe suffix ("France's" -> "France"), case-folded."""
    return re.split(r"[’']", word, maxsplit=1)[0].casefold()


def names(text: str) -> frozenset[str]:
    """Words written as names: capitalised (2+ letters: not "I") not at the start of a sentence, ALL-CAPS (2+ letters), or mixing
    letters with inner capitals or digits ("iPhone", "GPT4"); case-folded, apostrophe suffix dropped. Scripts
    without letter case have none (no veto: the verifier decides)."""
    text = unicodedata.normalize("NFKC", text)
    out = set()
    prev_end = 0
    for i, m in enumerate(_WORD.finditer(text)):
        w = m.group()
        start = i == 0 or any(c in ".!?¿¡:;。" for c in text[prev_end : m.start()])  # a sentence's first word
        prev_end = m.end()
        letters = [c for c in w if c.isalpha()]
        if not letters:
            continue
        all_caps = len(letters) >= 2 and all(c.isupper() for c in letters)
        inner_upper = any(c.isupper() for c in w[1:])
        has_digit = any(c.isdigit() for c in w)
        if (w[0].isupper() and not start and len(letters) >= 2) or all_caps or inner_upper or has_digit:
            out.add(_base(w))
    return frozenset(out)


def _words(text: str) -> frozenset[str]:
    return frozenset(_base(w) for w in _WORD.findall(unicodedata.normalize("NFKC", text)))


def veto(question: str, cached: str) -> str | None:
    """A reason the cached question certainly asks something else, or None (the verifier decides)."""
    na, nb = numbers(question), numbers(cached)
    if na and nb and na != nb:
        return f"different numbers: {', '.join(sorted(na))} vs {', '.join(sorted(nb))}"
    ea, eb = names(question), names(cached)
    wa, wb = _words(question), _words(cached)
    only_a = {e for e in ea if e not in wb}  # a name the other question never mentions, in any case
    only_b = {e for e in eb if e not in wa}
    if only_a and only_b:
        return f"different names: {', '.join(sorted(only_a))} vs {', '.join(sorted(only_b))}"
    return None
