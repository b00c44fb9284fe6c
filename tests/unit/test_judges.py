"""The judges with scripted generators and temporary judge functions; agreement and letter_score by hand."""

from __future__ import annotations

import pytest

from alignkit.data.examples import Message
from alignkit.judge.judges import FunctionJudge, JudgeError, Judgment, SelfJudge, agreement, count_unscored
from alignkit.judge.rubric import judge_prompt
from alignkit.judge.rules import length_score, letter_score


class ScriptedGenerator:
    """A ``generate_fn`` that returns canned texts in order and records each call's prompts and seed."""

    def __init__(self, texts: list[str]):
        self.texts, self.calls = list(texts), []

    def __call__(self, prompts: list[str], seed: int) -> list[str]:
        self.calls.append((list(prompts), seed))
        out, self.texts = self.texts[: len(prompts)], self.texts[len(prompts) :]
        return out


def test_self_judge_samples_k_times_in_one_call_and_averages_parsed_scores():
    gen = ScriptedGenerator(
        [
            "Relevant and useful.\nScore: 3",
            "Score: 4",
            "I cannot tell.",  # pair 0: (3 + 4) / 2
            "Score: 9",
            "no verdict",
            "Score: N/A",  # pair 1: nothing usable
        ]
    )
    prompts = ["What is 2+2?", [Message("system", "Be brief."), Message("user", "Name a colour.")]]
    judge = SelfJudge(gen, samples=3, seed=10)
    got = judge.judgments(prompts, ["4", "Blue."])

    assert len(gen.calls) == 1
    sent, seed = gen.calls[0]
    assert seed == 10
    assert sent[:3] == [judge_prompt("What is 2+2?", "4")] * 3
    assert sent[3:] == [judge_prompt("System: Be brief.\n\nUser: Name a colour.", "Blue.")] * 3
    raw0 = ("Relevant and useful.\nScore: 3", "Score: 4", "I cannot tell.")
    assert got[0] == Judgment(score=3.5, samples=(3.0, 4.0, None), raw=raw0)
    assert got[1] == Judgment(score=None, samples=(None, None, None), raw=("Score: 9", "no verdict", "Score: N/A"))
    assert count_unscored(got) == 1
    # Called as a Scorer, the same judge gives the scores alone (the next call draws fresh samples).
    gen.texts = ["Score: 2", "x", "Score: 5"]
    assert judge(["q"], ["a"]) == [3.5]


def test_self_judge_seeds_vary_per_call_and_repeat_across_runs():
    def seeds(base: int) -> list[int]:
        gen = ScriptedGenerator(["Score: 1"] * 20)
        judge = SelfJudge(gen, samples=2, seed=base)
        for _ in range(3):
            judge(["q"], ["a"])
        judge([], [])  # nothing to judge: no call, no seed used
        return [s for _, s in gen.calls]

    assert seeds(7) == [7, 8, 9]
    assert seeds(7) == seeds(7)


def test_self_judge_errors():
    with pytest.raises(JudgeError):
        SelfJudge(ScriptedGenerator([]), samples=0)
    with pytest.raises(JudgeError, match="1 completions for 2 judge prompts"):
        SelfJudge(lambda prompts, seed: ["Score: 1"], samples=2)(["q"], ["a"])
    with pytest.raises(JudgeError, match="2 prompts for 1 responses"):
        SelfJudge(ScriptedGenerator([]))(["q", "r"], ["a"])


JUDGE_FILE = """
import math

def score(prompts, responses, bonus=0.0):
    table = {"good": 4.0, "none": None, "nan": math.nan, "inf": math.inf}
    return [table.get(r, 1.0) + bonus if table.get(r, 1.0) is not None else None for r in responses]

def words(prompts, responses):
    return [str(len(r.split())) for r in responses]

def short(prompts, responses):
    return [1.0]

def echo(prompts, responses):
    return [float(len(p)) for p in prompts]
"""


@pytest.fixture()
def judge_file(tmp_path):
    path = tmp_path / "my_judge.py"
    path.write_text(JUDGE_FILE)
    return path


def test_function_judge_none_and_non_finite_are_unscored(judge_file):
    judge = FunctionJudge(f"{judge_file}:score", {"bonus": 0.5})
    got = judge.judgments(["q"] * 5, ["good", "none", "nan", "inf", "other"])
    assert [j.score for j in got] == [4.5, None, None, None, 1.5]
    assert judge(["q"] * 5, ["good", "none", "nan", "inf", "other"]) == [4.5, None, None, None, 1.5]
    assert got[0] == Judgment(score=4.5, samples=(4.5,), raw=())
    assert got[1].samples == (None,)
    assert count_unscored(got) == 3
    assert "bonus" in judge.name


def test_function_judge_gets_prompts_as_plain_text(judge_file):
    judge = FunctionJudge(f"{judge_file}:echo")
    got = judge([[{"role": "user", "content": "abc"}], "hello"], ["x", "y"])
    assert got == [3.0, 5.0]


def test_function_judge_rejects_non_numbers_and_wrong_lengths_in_one_line(judge_file):
    with pytest.raises(JudgeError) as err:
        FunctionJudge(f"{judge_file}:words")(["q"], ["two words"])
    assert "non-number" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(JudgeError, match="1 scores for 2 responses") as err:
        FunctionJudge(f"{judge_file}:short")(["q", "q"], ["a", "b"])
    assert "\n" not in str(err.value)


def test_function_judge_load_errors_name_judge_function(tmp_path, judge_file):
    for spec in [f"{tmp_path / 'missing.py'}:score", f"{judge_file}:nope", "no_colon_here"]:
        with pytest.raises(JudgeError, match="^judge.function") as err:
            FunctionJudge(spec)
        assert "\n" not in str(err.value)


def test_function_judge_module_spec():
    judge = FunctionJudge("alignkit.judge.rules:letter_score")
    assert judge(["q"], ["eeee"])[0] == 5.0


class TableJudge:
    """A Scorer reading scores from a dict keyed by response (None where missing)."""

    name = "table"

    def __init__(self, table: dict):
        self.table, self.calls = table, 0

    def __call__(self, prompts, responses):
        self.calls += 1
        return [self.table.get(r) for r in responses]


def test_agreement_by_hand():
    table = {"c1": 4.0, "r1": 2.0, "c2": 3.0, "r2": 3.0, "c3": 1.0, "r3": 5.0, "c4": 5.0, "c5": None, "r5": 1.0}
    judge = TableJudge(table)
    got = agreement(judge, ["p"] * 5, ["c1", "c2", "c3", "c4", "c5"], ["r1", "r2", "r3", "r4", "r5"])
    # pairs 4 (r4 has no score) and 5 (c5 has none) are unscored; 1 win, 1 tie, 1 loss -> (1 + 0.5) / 3
    assert got == {"agreement": pytest.approx(0.5), "pairs": 5, "scored_pairs": 3, "unscored_pairs": 2, "ties": 1}
    assert judge.calls == 2  # chosen in one call, rejected in another


def test_agreement_without_scored_pairs_is_none():
    got = agreement(TableJudge({}), ["p", "p"], ["a", "b"], ["c", "d"])
    assert got == {"agreement": None, "pairs": 2, "scored_pairs": 0, "unscored_pairs": 2, "ties": 0}
    with pytest.raises(JudgeError):
        agreement(TableJudge({}), ["p"], ["a", "b"], ["c", "d"])


def test_letter_score_by_hand():
    got = letter_score(["q"] * 4, ["Eel", "tree house", "xyz 123", "!!! 42"])
    # "Eel": 2 of 3 letters; "tree house" 3 of 9; "xyz": 0 of 3; no letters -> None
    assert got == [pytest.approx(5 * 2 / 3), pytest.approx(5 * 3 / 9), 0.0, None]
    assert letter_score(["q"], ["banana"], letter="A", scale=1.0) == [pytest.approx(0.5)]
    with pytest.raises(ValueError):
        letter_score(["q"], ["x"], letter="ab")


def test_length_score_by_hand():
    assert length_score(["q"] * 3, ["", "one two three", " ".join(["w"] * 80)]) == [0.0, pytest.approx(0.3), 5.0]


def test_reward_model_judge_wraps_reward_source(monkeypatch):
    import alignkit.rl.rewards as rewards
    from alignkit.judge.judges import RewardModelJudge

    class FakeSource:
        def __init__(self, *, model_dir, device, batch_size):
            self.args = (model_dir, device, batch_size)

        def __call__(self, prompts, responses):
            if "bad" in responses:
                raise rewards.RewardError("reward source rm: returned non-finite scores ([nan])")
            return [float(len(r)) for r in responses]

    monkeypatch.setattr(rewards, "RewardSource", FakeSource)
    judge = RewardModelJudge("runs/rm", device="cpu", batch_size=4)
    assert judge.source.args == ("runs/rm", "cpu", 4)
    assert judge.judgments(["p", "q"], ["ab", "abc"]) == [Judgment(2.0, (2.0,), ()), Judgment(3.0, (3.0,), ())]
    assert judge(["p", "q"], ["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(JudgeError, match="non-finite"):
        judge(["p"], ["bad"])
