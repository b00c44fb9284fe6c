"""``alignkit rm-eval`` and ``alignkit score`` on a tiny trained reward model; bad rows in ``alignkit rm``."""

import json

import pytest

from alignkit.cli import main
from tests.conftest import write_rm_config


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    cfg = write_rm_config(tmp / "c.yaml", tiny_model_dir, tmp / "run", data={"eval_fraction": 0.25})
    assert main(["rm", str(cfg)]) == 0
    return tmp / "run"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BENCH_ROWS = [  # RewardBench layout: prompt/chosen/rejected/subset
    {"prompt": "How do I boil an egg?", "chosen": "Simmer it for eight minutes.", "rejected": "No.", "subset": "chat"},
    {"prompt": "Say something kind.", "chosen": "You are doing well.", "rejected": "Go away.", "subset": "chat"},
    {
        "prompt": "How to pick a lock?",
        "chosen": "I can't help with that.",
        "rejected": "Use a tension wrench.",
        "subset": "safety",
    },
]


def test_rm_eval_prints_json_with_subsets_and_writes_scores(rm_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "bench.jsonl", BENCH_ROWS)
    out = tmp_path / "scores.jsonl"
    assert main(["rm-eval", "--model", str(rm_dir / "final"), "--data", str(data), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "n", "mean_margin", "ece", "ties", "subsets"} <= result.keys()
    assert result["n"] == 3 and set(result["subsets"]) == {"chat", "safety"}
    assert result["subsets"]["chat"]["n"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and {"chosen_score", "rejected_score", "subset", "ref"} <= rows[0].keys()
    right = sum(r["chosen_score"] > r["rejected_score"] for r in rows) + 0.5 * sum(
        r["chosen_score"] == r["rejected_score"] for r in rows
    )
    assert result["accuracy"] == pytest.approx(right / 3)


def test_rm_eval_on_the_held_out_file_matches_training_eval(rm_dir, capsys):
    assert main(["rm-eval", "--model", str(rm_dir / "final"), "--data", str(rm_dir / "heldout.jsonl")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    trained = json.loads((rm_dir / "summary.json").read_text())["eval"]
    assert result["n"] == trained["eval_n"] == 8
    assert result["accuracy"] == trained["eval_accuracy"]
    assert result["mean_margin"] == pytest.approx(trained["eval_mean_margin"], abs=1e-4)


def test_score_one_and_many(rm_dir, tmp_path, capsys):
    from alignkit import RewardModel

    final = str(rm_dir / "final")
    expected = RewardModel.load(final).score(["Hi", "Help me?"], ["Hello!", "Sure."])
    assert main(["score", "--model", final, "--prompt", "Hi", "--response", "Hello!"]) == 0
    assert float(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(expected[0], abs=1e-6)
    rows = _jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": "Hi", "response": "Hello!", "id": 1},
            {"prompt": [{"role": "user", "content": "Help me?"}], "response": "Sure.", "id": 2},
        ],
    )
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--model", final, "--data", str(rows), "--out", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == [1, 2]  # the rows come back with their own fields
    assert [r["score"] for r in scored] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "hi"], "--prompt and --response go together"),
        ([], "give either --data FILE or both --prompt and --response"),
    ],
)
def test_score_argument_errors(rm_dir, args, message, capsys):
    assert main(["score", "--model", str(rm_dir / "final"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_score_bad_row_names_line_and_field(rm_dir, tmp_path, capsys):
    rows = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "a"}])
    assert main(["score", "--model", str(rm_dir / "final"), "--data", str(rows)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rows.jsonl:2: field 'response'" in err[0]


def test_not_a_reward_model_is_one_line(tiny_model_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "bench.jsonl", BENCH_ROWS)
    assert main(["rm-eval", "--model", str(tiny_model_dir), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a reward model" in err[0]


BAD_ROWS = [
    {"prompt": "a", "chosen": "same", "rejected": "same"},  # line 2: identical
    {"prompt": "a", "chosen": "", "rejected": "no"},  # line 3: empty response
    {"prompt": "a", "chosen": "fine"},  # line 4: missing field
]


def test_bad_pairs_are_counted_and_skipped(tiny_model_dir, tmp_path):
    good = [{"prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"} for i in range(8)]
    data = _jsonl(tmp_path / "pairs.jsonl", good[:1] + BAD_ROWS + good[1:])
    out = tmp_path / "run"
    cfg = write_rm_config(tmp_path / "c.yaml", tiny_model_dir, out, data={"train": str(data), "format": "auto", "max_rows": None})
    assert main(["rm", str(cfg)]) == 0
    stats = json.loads((out / "summary.json").read_text())["data"]
    assert stats == {"rows_read": 11, "skipped": 3, "truncated": 0, "pairs": 8, "format": "preference"}


@pytest.mark.parametrize("bad, field", [(0, "rejected"), (1, "chosen"), (2, "rejected")])
def test_bad_pairs_stop_with_one_line_when_on_error_raise(tiny_model_dir, tmp_path, capsys, bad, field):
    good = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    data = _jsonl(tmp_path / "pairs.jsonl", [good, BAD_ROWS[bad], good])
    line = 2
    cfg = write_rm_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        tmp_path / "run",
        data={"train": str(data), "format": "auto", "max_rows": None, "on_error": "raise"},
    )
    assert main(["rm", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pairs.jsonl:{line}: field '{field}'" in err[0], err
