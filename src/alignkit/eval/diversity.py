"""Signs of collapse and reward hacking in a set of answers (plain Python, no torch).

A reward that rose while the answers collapsed into one stock phrase is a bug report, not a result; these
figures make that visible next to every reward:

- ``distinct_share``: distinct answers / answers (answers compared after collapsing whitespace and case);
- ``top_answer_share``: how many answers are the most frequent one / answers;
- ``distinct_2``: distinct word bigrams / word bigrams, over all answers together (Li et al. 2016, "A
  Diversity-Promoting Objective Function for Neural Conversation Models", section 4.1);
- ``length_ratio``: mean answer length / the reference model's mean answer length (lengths in tokens or
  words, whichever the caller measured for both).

``warnings`` turns them into plain sentences: a model looks collapsed when its top answer is more than
``MAX_TOP_SHARE`` of the answers or fewer than ``MIN_DISTINCT_SHARE`` of them are distinct, and looks like it
is hacking its reward when the reward rose over the reference's while its length fell below
``MIN_LENGTH_RATIO`` of the reference's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

MAX_TOP_SHARE = 0.20
MIN_DISTINCT_SHARE = 0.50
MIN_LENGTH_RATIO = 0.50


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Diversity:
    n: int  # answers
    distinct_share: float  # distinct answers / n
    top_answer_share: float  # count of the most frequent answer / n
    top_answer: str  # the most frequent answer (as first written)
    distinct_2: float  # distinct word bigrams / word bigrams (0 when there are none)
    length_ratio: float | None  # mean length / the reference's mean length (None without a reference)

    def as_dict(self) -> dict:
        return asdict(self)


def diversity(
    answers: Sequence[str], lengths: Sequence[float] | None = None, reference_lengths: Sequence[float] | None = None
) -> Diversity:
    """The figures of the module doc for ``answers``; ``length_ratio`` needs both ``lengths`` (one per answer)
    and ``reference_lengths`` (the reference model's, one per answer to the same prompts)."""
    if not answers:
        raise ValueError("diversity of no answers")
    keys = [_norm(a) for a in answers]
    counts = Counter(keys)
    top_key, top_count = counts.most_common(1)[0]
    top = next(a for a, k in zip(answers, keys) if k == top_key)
    bigrams = [(w[i], w[i + 1]) for w in (k.split() for k in keys) for i in range(len(w) - 1)]
    ratio = None
    if lengths is not None and reference_lengths is not None:
        if len(lengths) != len(answers):
            raise ValueError(f"diversity: {len(lengths)} lengths for {len(answers)} answers")
        ref = sum(reference_lengths) / len(reference_lengths) if reference_lengths else 0.0
        ratio = (sum(lengths) / len(lengths)) / ref if ref > 0 else None
    n = len(answers)
    return Diversity(
        n=n,
        distinct_share=len(counts) / n,
        top_answer_share=top_count / n,
        top_answer=top,
        distinct_2=len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        length_ratio=ratio,
    )


def warnings(d: Diversity, *, reward_gain: float | None = None, min_distinct_share: float = MIN_DISTINCT_SHARE) -> list[str]:
    """Plain-sentence warnings for ``d``; ``reward_gain`` is the model's mean reward minus the reference's.
    ``min_distinct_share``: the collapse limit, lower for tasks whose right answers repeat (sums, yes/no)."""
    out = []
    if d.top_answer_share > MAX_TOP_SHARE:
        out.append(
            f"collapsed: {d.top_answer_share:.0%} of the answers are the same one ({d.top_answer[:60]!r}; limit {MAX_TOP_SHARE:.0%})"
        )
    if d.distinct_share < min_distinct_share:
        out.append(f"collapsed: only {d.distinct_share:.0%} of the answers are distinct (limit {min_distinct_share:.0%})")
    if reward_gain is not None and reward_gain > 0 and d.length_ratio is not None and d.length_ratio < MIN_LENGTH_RATIO:
        out.append(
            f"reward hacking?: the reward rose by {reward_gain:+.3f} while the answers shrank to {d.length_ratio:.2f}x "
            f"the reference's length (limit {MIN_LENGTH_RATIO:.2f}x)"
        )
    return out
