"""The orchestrators' records: files written before the records existed load and write back unchanged, a
missing optional figure is tolerated, a wrong type or an unknown key is a one-line error naming file and field."""

import json
import subprocess
import sys

import pytest

from alignkit.errors import UserError
from alignkit.orchestrate.records import (
    IterationSummary,
    JudgingStats,
    PairStats,
    PipelineReport,
    RecordError,
    RunSummary,
    TrainOutcome,
)

# iter-1/summary.json as the dict-building loop wrote it (dpo mode, a scorer, a self-judge with human pairs)
OLD_ITER1 = {
    "iteration": 1,
    "mode": "dpo",
    "model": "runs/sr/iter-1/train/final",
    "prompts": {
        "total": 12,
        "from_dataset": 8,
        "self_instruct_new": 4,
        "self_instruct_requested": 6,
        "self_instruct_too_short": 1,
        "duplicates_removed": 1,
    },
    "candidates": {"prompts": 12, "samples": 48, "unique": 45, "duplicates_removed": 2, "empty_removed": 1},
    "judging": {
        "type": "self",
        "judge": "self (runs/base)",
        "judgments": 45,
        "unparseable": 3,
        "unparseable_rate": 0.06666666666666667,
        "judge_samples": 90,
        "unparseable_samples": 5,
    },
    "pairs": {
        "prompts": 12,
        "skipped_few_scores": 1,
        "skipped_small_gap": 2,
        "skipped_length_ratio": 0,
        "pairs": 9,
        "mean_gap": 1.5,
        "mean_chosen_words": 30.2,
        "mean_rejected_words": 25.0,
    },
    "train": {"steps": 4, "train_loss": 0.65, "seconds": 12.3, "model": "runs/sr/iter-1/train/final"},
    "eval": {
        "prompts": 4,
        "judge": "self (runs/sr/iter-1/train/final)",
        "unparseable": 0,
        "mean_judge_score": 3.25,
        "judge_score_ci": [2.75, 3.75],
        "mean_response_words": 22.5,
        "mean_reward": 0.4,
        "reward_ci": [0.1, 0.7],
        "win_rate_vs_previous": 0.625,
        "win_rate_ci": [0.375, 0.875],
        "win_rate_prompts": 4,
        "reward_win_rate_vs_previous": 0.5,
        "judge_agreement": None,
        "agreement_pairs": 0,
        "agreement_unscored_pairs": 3,
    },
    "mean_judge_score": 3.25,
    "seconds": 60.4,
}
# iter-0/summary.json: the starting model's evaluation only (no reward model, no previous answers)
OLD_ITER0 = {
    "iteration": 0,
    "model": "runs/base",
    "eval": {
        "prompts": 4,
        "judge": "function (len)",
        "unparseable": 4,
        "mean_judge_score": None,
        "judge_score_ci": None,
        "mean_response_words": 18.0,
    },
    "mean_judge_score": None,
    "seconds": 5.0,
}
# best-of-n with no pair: training skipped, the model carried over
OLD_SKIPPED = {
    "iteration": 2,
    "mode": "best-of-n",
    "model": "runs/base",
    "pairs": {
        "prompts": 8,
        "pairs": 0,
        "skipped_few_scores": 8,
        "skipped_small_gap": 0,
        "skipped_length_ratio": 0,
        "mean_chosen_words": None,
    },
    "train": {"skipped": "no pairs", "model": "runs/base"},
    "eval": {"prompts": 4, "mean_judge_score": 2.0},
    "mean_judge_score": 2.0,
    "seconds": 1.0,
}


@pytest.mark.parametrize("old", [OLD_ITER1, OLD_ITER0, OLD_SKIPPED], ids=["dpo", "iter0", "skipped"])
def test_an_old_summary_round_trips_unchanged(old):
    s = IterationSummary.from_dict(old)
    assert s.to_dict() == old
    assert set(s.to_dict()) == set(old)  # nothing added: unmeasured figures stay out of the file


def test_the_dpo_summary_keeps_its_key_order():
    text = json.dumps(OLD_ITER1, indent=2)
    assert json.dumps(IterationSummary.from_dict(json.loads(text)).to_dict(), indent=2) == text


def test_the_typed_fields():
    s = IterationSummary.from_dict(OLD_ITER1)
    assert s.eval.win_rate_ci == [0.375, 0.875] and s.pairs.skipped_small_gap == 2
    assert s.train.model == s.model and s.judging.rate() == pytest.approx(3 / 45)
    skipped = IterationSummary.from_dict(OLD_SKIPPED)
    assert skipped.train == TrainOutcome(skipped="no pairs", model="runs/base") and skipped.train.steps is None
    assert skipped.prompts is None and skipped.eval.win_rate_vs_previous is None


def test_a_missing_optional_field_of_an_older_file_is_tolerated(tmp_path):
    old = json.loads(json.dumps(OLD_ITER1))
    del old["judging"]["judge_samples"], old["judging"]["unparseable_rate"], old["eval"]["win_rate_prompts"]
    del old["seconds"]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(old))
    s = IterationSummary.from_json(path)
    assert s.judging.judge_samples is None and s.eval.win_rate_prompts is None and s.seconds is None
    assert s.judging.rate() == pytest.approx(3 / 45)  # from the counts
    assert s.to_dict() == old


@pytest.mark.parametrize(
    "change, field",
    [
        ({"pairs": "x"}, "pairs"),
        ({"pairs": {"pairs": "9"}}, "pairs.pairs"),  # no coercion of a string to a number
        ({"eval": {"win_rate_ci": [0.5]}}, "eval.win_rate_ci"),
        ({"train": {"steps": 2}}, "train.model"),  # required
        ({"iteration": True}, "iteration"),
        ({"pairs": {"pairz": 9}}, "pairs.pairz"),  # a misspelt key
    ],
)
def test_a_wrong_type_is_a_one_line_error_naming_file_and_field(tmp_path, change, field):
    path = tmp_path / "iter-1" / "summary.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**OLD_ITER1, **change}))
    with pytest.raises(RecordError) as err:
        IterationSummary.from_json(path)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: {field}: "), msg
    assert isinstance(err.value, UserError)


def test_several_errors_are_counted_and_not_json_is_one_line(tmp_path):
    with pytest.raises(RecordError, match=r"^state: iteration: .* \(and 1 more\)$"):
        IterationSummary.from_dict({"iteration": "1", "model": 3}, source="state")
    path = tmp_path / "summary.json"
    path.write_text('{"iteration": 1,')
    with pytest.raises(RecordError, match="not JSON") as err:
        IterationSummary.from_json(path)
    assert len(str(err.value).splitlines()) == 1


def test_assignment_is_checked():
    stats = PairStats(pairs=3)
    with pytest.raises(ValueError):
        stats.pairs = "many"


def test_judging_rate():
    assert JudgingStats(unparseable=2, judgments=8).rate() == 0.25
    assert JudgingStats(unparseable=2, judgments=0).rate() is None
    assert JudgingStats(unparseable_rate=0.5, unparseable=0, judgments=8).rate() == 0.5


def test_run_summary_round_trips():
    old = {"iterations": [OLD_ITER0, OLD_ITER1], "final_model": "runs/sr/iter-1/train/final", "seconds": 70.2}
    run = RunSummary.from_dict(old)
    assert [s.iteration for s in run.iterations] == [0, 1] and run.to_dict() == old


def test_pipeline_report_round_trips():
    old = {
        "output_dir": "runs/q",
        "stages": {"sft": {"skipped": True, "seconds": None}, "dpo": {"skipped": False, "seconds": 41.5}},
    }
    report = PipelineReport.from_dict(old)
    assert list(report.stages) == ["sft", "dpo"] and report.stages["dpo"].seconds == 41.5
    assert json.dumps(report.to_dict()) == json.dumps(old)
    with pytest.raises(RecordError, match=r"^pipeline.json: stages.sft.skipped: "):
        PipelineReport.from_dict({**old, "stages": {"sft": {"skipped": "yes", "seconds": None}}}, source="pipeline.json")


def test_step_state_writes_the_dicts_and_reads_records(tmp_path):
    from alignkit.orchestrate.self_reward import StepState

    state = StepState(tmp_path / "state.json")
    state.record("pairs", PairStats(prompts=2, pairs=1, mean_gap=0.5))
    state.record("train", TrainOutcome(skipped="no pairs", model="m"))
    on_disk = json.loads((tmp_path / "state.json").read_text())
    assert on_disk == {"pairs": {"prompts": 2, "pairs": 1, "mean_gap": 0.5}, "train": {"skipped": "no pairs", "model": "m"}}
    again = StepState(tmp_path / "state.json")  # a resumed run
    assert again.done("pairs") and not again.done("eval")
    assert again.get("pairs") == PairStats(prompts=2, pairs=1, mean_gap=0.5) and again.get("train").model == "m"
    (tmp_path / "state.json").write_text(json.dumps({**on_disk, "pairs": {**on_disk["pairs"], "pairs": "one"}}))
    with pytest.raises(RecordError, match=r"state.json: pairs: pairs: "):  # found when the state is opened
        StepState(tmp_path / "state.json")


@pytest.mark.parametrize(
    "text,needle",
    [
        ('{"prompts": {"total": 3}, "eval": {"prompts": "two"}}', "state.json: eval: prompts: "),  # a late step
        ('{"prompts": {"total": 3},', "state.json: not JSON: "),
        ('[{"total": 3}]', "state.json: must map each finished step to its figures, got list"),
        ('{"prompt": {"total": 3}}', "state.json: unknown step 'prompt' (steps: prompts, "),
    ],
)
def test_a_corrupt_step_state_is_one_line_naming_the_file_when_opened(tmp_path, text, needle):
    from alignkit.orchestrate.self_reward import StepState

    path = tmp_path / "iter-1" / "state.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(RecordError) as err:
        StepState(path)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(path)) and needle in msg, msg


def test_build_pairs_counts_by_reason():
    from alignkit.orchestrate.self_reward import best_of_n, build_pairs

    groups = [
        {"prompt_id": 0, "prompt": "p0", "candidates": ["a b c", "a"], "scores": [3.0, 1.0]},  # gap 2: a pair
        {"prompt_id": 1, "prompt": "p1", "candidates": ["x", "y"], "scores": [2.0, None]},  # one score
        {"prompt_id": 2, "prompt": "p2", "candidates": ["x", "y"], "scores": [2.0, 1.9]},  # gap 0.1 < 0.5
        {"prompt_id": 3, "prompt": "p3", "candidates": ["w " * 9, "v"], "scores": [5.0, 1.0]},  # 9 words > 3 x 1
    ]
    pairs, stats = build_pairs(groups, min_gap=0.5, max_length_ratio=3.0)
    assert [p["prompt_id"] for p in pairs] == [0]
    assert stats == PairStats(
        prompts=4,
        skipped_few_scores=1,
        skipped_small_gap=1,
        skipped_length_ratio=1,
        pairs=1,
        mean_gap=2.0,
        mean_chosen_words=3.0,
        mean_rejected_words=1.0,
    )
    rows, stats = best_of_n(groups)
    assert [r["completion"] for r in rows] == ["a b c", "x", "x", "w " * 9]
    assert (stats.pairs, stats.skipped_few_scores, stats.mean_rejected_words) == (4, 0, None)
    assert "mean_rejected_words" not in stats.to_dict()  # best-of-n never had the key


def test_records_import_light():
    code = (
        "import sys, alignkit.orchestrate.records, alignkit.orchestrate.report; "
        "print([m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
