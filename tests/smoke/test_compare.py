"""Tier (b): ``compare`` end to end on tiny models: answers, reward scores, statistics, outputs, report.

Two "models" with identical weights (the tiny Llama and a copy placed at ``RUN/final`` beside a
``metrics.jsonl``) must give identical answers under the same seed, hence all ties and a win rate of
exactly 0.5; the copy's run must show up as training curves in the report.
"""

import html
import json
import re
import shutil

import pytest

from alignkit.cli import main
from alignkit.eval.compare import (
    CompareResult,
    compare_models,
    find_runs,
    load_prompts,
    print_side_by_side,
    summarise,
)
from alignkit.eval.report import write_outputs
from tests.conftest import write_rm_config

FIX = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "data"

PROMPTS = [
    'How do I bake <b>bread</b> & "rolls"?',
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    "What is 2+2?",
]
ROW_KEYS = {"prompt_index", "prompt", "model", "response", "reward", "length_tokens"}


@pytest.fixture(scope="module")
def rm_dir(tiny_bert_dir, tmp_path_factory):
    """A tiny BERT reward model trained for two steps by ``alignkit rm``."""
    tmp = tmp_path_factory.mktemp("rm")
    cfg = write_rm_config(tmp / "rm.yaml", tiny_bert_dir, tmp / "run", train={"learning_rate": 1e-2})
    assert main(["rm", str(cfg)]) == 0
    return tmp / "run" / "final"


@pytest.fixture(scope="module")
def policy_run(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model at ``RUN/final``, with a small fake ``metrics.jsonl`` in ``RUN``."""
    run = tmp_path_factory.mktemp("policy") / "run"
    shutil.copytree(tiny_model_dir, run / "final")
    lines = [
        {"step": s, "loss": 2.0 / s, "kl": 0.01 * s, "reward": 0.1 * s, "learning_rate": 1e-3, "tokens_per_second": 99.0}
        for s in range(1, 6)
    ]
    lines.append({"step": 5, "eval_loss": 1.1, "eval_accuracy": 0.6})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "loss"')  # a cut line
    return run


@pytest.fixture(scope="module")
def compared(tiny_model_dir, policy_run, rm_dir):
    from alignkit.models.reward import RewardModel

    models = {"base": str(tiny_model_dir), "sft": str(policy_run / "final")}
    logs = []
    result = compare_models(
        models,
        PROMPTS,
        scorer=RewardModel.load(str(rm_dir)),
        scorer_label=str(rm_dir),
        max_new_tokens=8,
        temperature=0.7,
        top_p=1.0,
        seed=0,
        batch_size=2,
        log=logs.append,
    )
    assert len(logs) == 3  # one line per model, one for the scorer
    assert result.settings["scorer"] == str(rm_dir)
    return result


def test_rows_answers_and_rewards(compared, rm_dir):
    rows = compared.rows
    assert len(rows) == 3 * 2
    assert [(r["prompt_index"], r["model"]) for r in rows] == [(i, m) for i in range(3) for m in ("base", "sft")]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert isinstance(r["response"], str) and isinstance(r["reward"], float)
        assert r["prompt"] == PROMPTS[r["prompt_index"]]
    # Identical weights + the same seed: identical answers (sampling is seeded the same for every model).
    assert compared.column("base", "response") == compared.column("sft", "response")
    assert any(compared.column("base", "response")), "the tiny model answered nothing at all"
    # The rewards are the reward model's scores of exactly these answers.
    from alignkit.models.reward import RewardModel

    direct = RewardModel.load(str(rm_dir)).score(PROMPTS, compared.column("base", "response"))
    assert compared.column("base", "reward") == pytest.approx(direct, abs=1e-5)


def test_summary_statistics(compared):
    base, sft = compared.summary["base"], compared.summary["sft"]
    rewards = compared.column("base", "reward")
    assert base["n"] == sft["n"] == 3
    assert base["mean_reward"] == pytest.approx(sum(rewards) / 3)
    assert base["reward_ci_low"] <= base["mean_reward"] <= base["reward_ci_high"]
    assert base["win_rate_vs_first"] is None  # the reference
    assert sft["win_rate_vs_first"] == 0.5 and sft["ties_vs_first"] == 3
    assert (sft["win_rate_ci_low"], sft["win_rate_ci_high"]) == (0.5, 0.5)
    assert base["mean_length_tokens"] == pytest.approx(sum(compared.column("base", "length_tokens")) / 3)
    assert base["mean_length_tokens"] > 0 and base["mean_length_chars"] > 0
    assert base["rm_truncated"] == 0


def test_outputs_and_self_contained_report(compared, tiny_model_dir, policy_run, tmp_path):
    runs = find_runs(compared.models)
    assert runs == {"sft": policy_run.resolve()}
    out = write_outputs(compared, tmp_path / "cmp", runs=runs)
    assert compared.out_dir == out

    lines = [json.loads(line) for line in (out / "compare.jsonl").read_text().splitlines()]
    assert lines == compared.rows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "base" and summary["models"]["sft"]["win_rate_vs_first"] == 0.5
    assert summary["settings"]["seed"] == 0 and summary["settings"]["max_new_tokens"] == 8
    assert summary["runs"] == {"sft": str(policy_run.resolve())}

    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page), "the report must load nothing from outside"
    assert "<script" not in page and "<link" not in page
    assert html.escape(PROMPTS[0]) in page and "<b>bread</b>" not in page
    assert "system: Be brief." in page
    for answer in compared.column("base", "response"):
        assert html.escape(answer) in page
    assert page.count('src="data:image/png;base64,') == 3  # mean reward, win rate, sft's training curves
    assert 'alt="training curves of sft"' in page

    bare = write_outputs(compared, tmp_path / "bare", runs={})
    bare_page = (bare / "report.html").read_text()
    assert "training curves of" not in bare_page and "No training runs found" in bare_page


def test_side_by_side_console(compared):
    from rich.console import Console

    console = Console(record=True, width=140)
    print_side_by_side(compared, console)
    text = console.export_text()
    assert "Comparing Model Outputs" in text
    assert PROMPTS[0] in text and "system: Be brief." in text
    assert text.count("reward ") >= 6  # every answer shows its score
    assert "win rate vs first" in text and "reference" in text and "0.500 [0.500, 0.500]" in text


def test_without_a_reward_model_only_lengths(compared, tmp_path):
    rows = [{**r, "reward": None} for r in compared.rows]
    result = CompareResult(
        models=compared.models,
        prompts=compared.prompts,
        rows=rows,
        summary=summarise(rows, compared.names),
        settings=compared.settings,
    )
    assert result.summary["sft"]["mean_reward"] is None and result.summary["sft"]["win_rate_vs_first"] is None
    assert result.summary["sft"]["mean_length_tokens"] == compared.summary["sft"]["mean_length_tokens"]
    page = (write_outputs(result, tmp_path / "norm") / "report.html").read_text()
    assert "No reward model was given" in page and page.count("data:image/png;base64,") == 1  # length bars only


def test_find_runs_patterns(tmp_path):
    run = tmp_path / "dpo"
    (run / "checkpoints" / "step-4" / "model").mkdir(parents=True)
    (run / "final").mkdir()
    (tmp_path / "plain").mkdir()
    models = {
        "a": str(run / "final"),
        "b": str(run / "checkpoints" / "step-4" / "model"),
        "c": str(tmp_path / "plain"),
        "hub": "org/name",
    }
    assert find_runs(models) == {}  # no metrics.jsonl yet
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert find_runs(models) == {"a": run.resolve(), "b": run.resolve()}
    assert find_runs({}, extra=[str(run)]) == {"dpo": run.resolve()}
    from alignkit.data.errors import DataError

    with pytest.raises(DataError, match="no metrics.jsonl"):
        find_runs({}, extra=[str(tmp_path / "plain")])


def test_load_prompts_txt_and_data_formats(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\n  second <one>\nthird\n")
    assert load_prompts(str(txt)) == ["first prompt", "  second <one>", "third"]
    assert load_prompts(str(txt), max_prompts=2) == ["first prompt", "  second <one>"]

    assert load_prompts(str(FIX / "preference.jsonl")) == ["What is 2+2?", "Name a colour."]
    hh = load_prompts(str(FIX / "hh_rlhf.jsonl"))
    assert hh[0] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert load_prompts(str(FIX / "hh_rlhf.jsonl"), max_prompts=1) == hh[:1]

    only = tmp_path / "prompts.jsonl"
    only.write_text(
        json.dumps({"prompt": "Hi", "id": 1})
        + "\n"
        + json.dumps({"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]})
        + "\n"
    )
    assert load_prompts(str(only)) == ["Hi", [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]]

    from alignkit.data.errors import DataError

    with pytest.raises(DataError, match="no prompt"):
        load_prompts(str(FIX / "text.jsonl"))
    with pytest.raises(DataError, match="not found"):
        load_prompts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no prompts"):
        load_prompts(str(tmp_path / "empty.txt"))


def test_training_curve_keys(policy_run):
    from alignkit.eval.report import curve_group, read_curves

    assert curve_group("objective/kl") == "KL" and curve_group("kl") == "KL"
    assert curve_group("policy_loss") == curve_group("eval_loss") == "loss"
    for key in ("rewards/margins", "reward_mean", "score", "eval_accuracy"):
        assert curve_group(key) == "reward / score / accuracy"
    for key in ("learning_rate", "loss_tokens", "eval_n", "pairs_per_second", "tokens_seen", "grad_norm"):
        assert curve_group(key) is None
    curves = read_curves(policy_run / "metrics.jsonl")  # the cut last line is skipped
    assert list(curves) == ["loss", "KL", "reward / score / accuracy"]
    assert curves["loss"]["loss"] == ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 2 / 3, 0.5, 0.4])
    assert curves["loss"]["eval_loss"] == ([5.0], [1.1])
    assert set(curves["reward / score / accuracy"]) == {"reward", "eval_accuracy"}


def test_adapter_dir_compares_without_a_reward_model(tiny_model_dir, tmp_path):
    """A fresh LoRA adapter (B = 0) is the base model: the same answers; no reward model, no rewards."""
    from alignkit.models.loading import load_causal_lm, load_tokenizer, save_model

    lora = load_causal_lm(str(tiny_model_dir), finetune="lora", lora_r=4)
    save_model(lora, load_tokenizer(str(tiny_model_dir)), str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    result = compare_models(
        {"base": str(tiny_model_dir), "lora": str(tmp_path / "adapter")}, PROMPTS[:2], max_new_tokens=4, log=lambda _: None
    )
    assert result.column("base", "response") == result.column("lora", "response")
    assert all(r["reward"] is None for r in result.rows) and not result.has_rewards
    assert result.summary["lora"]["win_rate_vs_first"] is None and result.summary["lora"]["rm_truncated"] is None


def test_parse_model_specs():
    from alignkit.config.base import ConfigError
    from alignkit.eval.compare import parse_model_specs

    assert parse_model_specs(["base=a/b", "sft = runs/x=y/final"]) == {"base": "a/b", "sft": "runs/x=y/final"}
    assert list(parse_model_specs(["z=1", "a=2"])) == ["z", "a"]  # order kept: the first is the reference
    for bad in (["nodir"], ["=dir"], ["name="], ["a=1", "a=2"], []):
        with pytest.raises(ConfigError):
            parse_model_specs(bad)


def test_any_scorer_plugs_in(tiny_model_dir, rm_dir):
    """A plain function, a RewardModel and a judge are all ``Scorer``s, and ``compare_models`` takes each."""
    from alignkit.judge.judges import FunctionJudge
    from alignkit.models.reward import RewardModel
    from alignkit.scoring import Scorer

    def by_length(prompts, responses):
        return [float(len(r)) for r in responses]

    def some_unscored(prompts, responses):  # a judge that could not score the first prompt's answers
        return [None if p == PROMPTS[0] else 1.0 for p in prompts]

    models = {"a": str(tiny_model_dir), "b": str(tiny_model_dir)}
    scorers = {
        "function": by_length,
        "reward model": RewardModel.load(str(rm_dir)),
        "judge": FunctionJudge("alignkit.judge.rules:length_score"),
        "partial": some_unscored,
    }
    for label, scorer in scorers.items():
        assert isinstance(scorer, Scorer), label
        result = compare_models(models, PROMPTS, scorer=scorer, max_new_tokens=4, seed=0, log=lambda _: None)
        assert result.settings["scorer"], label
        a = result.summary["a"]
        if label == "partial":
            assert result.column("a", "reward")[0] is None and a["n_scored"] == len(PROMPTS) - 1
            assert a["mean_reward"] == 1.0 and result.summary["b"]["win_rate_vs_first"] == 0.5
            continue
        assert a["n_scored"] == len(PROMPTS) and all(isinstance(r, float) for r in result.column("a", "reward")), label
        assert result.summary["b"]["win_rate_vs_first"] == 0.5, label  # the same model twice: all ties
    from alignkit.scoring import ScoreError

    with pytest.raises(ScoreError, match="1 scores for"):
        compare_models(models, PROMPTS, scorer=lambda p, r: [1.0], max_new_tokens=4, log=lambda _: None)


def test_a_txt_prompt_file_with_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    from alignkit.data.errors import DataError

    txt = tmp_path / "p.txt"
    txt.write_bytes("first\nd\xe9j\xe0 vu\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"p\.txt:2: not UTF-8 \(byte 2 of the line: 0xe9\)") as err:
        load_prompts(str(txt))
    assert "\n" not in str(err.value)
