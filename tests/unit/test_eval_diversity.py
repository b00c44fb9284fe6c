"""Hand-computed diversity figures and the collapse / reward-hacking warnings."""

import pytest

from alignkit.eval.diversity import diversity, warnings


def test_figures_by_hand():
    answers = ["I don't know.", "i  don't KNOW.", "Boil the water first", "Use a kettle"]
    d = diversity(answers, lengths=[3, 3, 4, 3], reference_lengths=[6, 6, 6, 8])
    assert d.n == 4
    assert d.distinct_share == pytest.approx(3 / 4)  # case and spacing do not make an answer new
    assert d.top_answer_share == pytest.approx(2 / 4)
    assert d.top_answer == "I don't know."
    # bigrams: (i,don't) (don't,know.) twice, (boil,the) (the,water) (water,first), (use,a) (a,kettle): 7 distinct of 9
    assert d.distinct_2 == pytest.approx(7 / 9)
    assert d.length_ratio == pytest.approx((13 / 4) / (26 / 4))


def test_warnings():
    collapsed = diversity(["No."] * 3 + ["Yes, here is how.", "Sure."], lengths=[1, 1, 1, 4, 1], reference_lengths=[5] * 5)
    w = warnings(collapsed, reward_gain=0.5)
    assert any("60% of the answers are the same one" in x for x in w)
    assert any("reward hacking" in x and "0.32x" in x for x in w)
    assert not any("distinct" in x for x in w)  # 3 of 5 distinct is 60%, above the 50% limit
    healthy = diversity(["a b", "c d", "e f", "g h", "i j"], lengths=[2] * 5, reference_lengths=[2] * 5)
    assert warnings(healthy, reward_gain=1.0) == []
    # shorter but no reward gain: not called hacking
    assert warnings(diversity(["a", "b", "c", "d", "e"], lengths=[1] * 5, reference_lengths=[9] * 5), reward_gain=-0.1) == []


def test_bad_input():
    with pytest.raises(ValueError):
        diversity([])
    with pytest.raises(ValueError):
        diversity(["a"], lengths=[1, 2], reference_lengths=[1])


def test_the_distinct_share_limit_can_be_lowered_for_tasks_whose_answers_repeat():
    answers = [str(x) for x in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7)]  # 7 of 12 distinct, top answer 2 of 12
    d = diversity(answers, [1] * 12, None)
    assert warnings(d, min_distinct_share=0.5) == []
    assert warnings(d, min_distinct_share=0.6) == ["collapsed: only 58% of the answers are distinct (limit 60%)"]
    assert warnings(d) == []  # the default limit is 50%
