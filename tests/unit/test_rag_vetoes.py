"""The cache's crisp vetoes: different numbers, different names; nothing else (the verifier decides the rest)."""

import pytest

from alignkit.rag.vetoes import names, numbers, veto


def test_numbers_and_names_are_read_as_written():
    assert numbers("Python 3.12 on 2,000 machines in 2019") == {"3.12", "2000", "2019"}
    assert numbers("three steps") == frozenset()
    assert numbers("Ｐｙｔｈｏｎ ３") == {"3"}  # full-width digits, NFKC
    assert names("What is the capital of France?") == {"france"}
    # a sentence's first word is capitalised anyway: not read as a name; an apostrophe suffix is dropped
    assert names("France's capital? Tell me: is it Paris or Lyon's twin?") == {"paris", "lyon"}
    assert names("How do I use the GPU with iPhone apps and GPT4?") == {"gpu", "iphone", "gpt4"}
    assert names("சென்னை எங்கே உள்ளது?") == frozenset()  # no letter case: no names, no veto


@pytest.mark.parametrize(
    "a, b",
    [
        ("How do I install Python 3.11?", "How do I install Python 3.12?"),
        ("Who won the World Cup in 2018?", "Who won the World Cup in 2022?"),
        ("What is the capital of France?", "What is the capital of Peru?"),
        ("How do I move from Java to Kotlin?", "How do I move from Swift to Rust?"),
    ],
)
def test_vetoed(a, b):
    assert veto(a, b) is not None and veto(b, a) is not None


@pytest.mark.parametrize(
    "a, b",
    [
        ("How do I make my code faster?", "How do I speed up my code?"),
        ("What is the capital of France?", "What is France's capital city?"),
        ("How do I install Python?", "how to install python"),  # case differs: the other side mentions it
        ("Give me 3 tips for sleep", "Give me three tips for sleep"),  # a number on one side only
        ("flights from New York to Florida", "flights from Florida to New York"),  # the verifier's job
        ("How do I reset my password?", "How do I reset my username?"),  # the verifier's job
        ("What is the capital of France?", "What is the capital of Germany? France, I mean"),
    ],
)
def test_not_vetoed(a, b):
    assert veto(a, b) is None and veto(b, a) is None
