"""Tier (b) for ``alignkit self-reward``: two iterations with a rule-based judge raise the held-out judge score;
the self-judge path with unparseable judgments; best-of-n; resume after an interrupt; config errors."""

import json

import pytest
import yaml

from alignkit.cli import main
from tests.conftest import HH_RLHF, REPO, _write_config, interrupt_on_call


def _config(path, model_dir, out, **sections):
    cfg = yaml.safe_load((REPO / "configs" / "self_reward" / "tiny.yaml").read_text())
    cfg["output_dir"] = str(out)
    cfg["model"] = {"name_or_path": str(model_dir), "finetune": "full"}
    cfg["tensorboard"] = False
    cfg["prompts"]["train"] = str(HH_RLHF)
    return _write_config(path, cfg, sections)


def _summary(out, t):
    return json.loads((out / f"iter-{t}" / "summary.json").read_text())


def test_two_iterations_with_a_rule_judge_raise_the_heldout_judge_score(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tmp_path / "c.yaml", tiny_model_dir, out)
    assert main(["self-reward", str(cfg)]) == 0
    s0, s1, s2 = (_summary(out, t) for t in range(3))
    for t, s in ((1, s1), (2, s2)):
        d = out / f"iter-{t}"
        for name in ("prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl", "eval_answers.jsonl"):
            assert (d / name).exists(), name
        assert (d / "train" / "final" / "config.json").exists()
        assert s["model"] == str(d / "train" / "final")
        assert s["pairs"]["pairs"] > 0 and s["train"]["steps"] > 0
        assert s["judging"]["judgments"] == s["candidates"]["unique"]
        assert 0 <= s["eval"]["win_rate_vs_previous"] <= 1
        assert "mean_judge_score" in s
    # each iteration trains on pairs whose chosen side the judge scored higher
    pairs = [json.loads(x) for x in (out / "iter-1" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["score_chosen"] - p["score_rejected"] >= 0.1 for p in pairs)
    judged = [json.loads(x) for x in (out / "iter-1" / "judgments.jsonl").read_text().splitlines()]
    assert {"prompt_id", "response", "score", "samples", "raw"} <= set(judged[0])
    # the point of the loop: the held-out judge score rises over the two iterations
    assert s2["mean_judge_score"] > s0["mean_judge_score"] + 0.1, (
        s0["mean_judge_score"],
        s1["mean_judge_score"],
        s2["mean_judge_score"],
    )
    assert s2["eval"]["win_rate_vs_previous"] > 0.5 or s1["eval"]["win_rate_vs_previous"] > 0.5
    html = (out / "report.html").read_text()
    assert "<img" in html and "iteration" in html
    total = json.loads((out / "summary.json").read_text())
    assert total["final_model"] == s2["model"] and len(total["iterations"]) == 3


def test_self_judge_on_a_tiny_model_counts_unparseable_judgments_and_does_not_crash(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        iterations=1,
        prompts={
            "per_iteration": 6,
            "heldout_rows": 4,
            "max_rows": 40,
            "self_instruct": {"new_prompts": 4, "few_shot": 2, "max_new_tokens": 12, "min_words": 2},
        },
        generation={"n": 2, "max_new_tokens": 8},
        judge={"type": "self", "function": None, "samples": 2, "max_new_tokens": 12},
        eval={"human_pairs": str(HH_RLHF), "max_pairs": 3},
    )
    assert main(["self-reward", str(cfg)]) == 0
    s = _summary(out, 1)
    p = s["prompts"]  # the model wrote new prompts from few-shot examples: each kept, too short or a duplicate
    assert p["self_instruct_requested"] == 4 and p["from_dataset"] == 6
    assert p["self_instruct_new"] + p["self_instruct_too_short"] + p["duplicates_removed"] == 4
    prompts = [json.loads(x) for x in (out / "iter-1" / "prompts.jsonl").read_text().splitlines()]
    assert sum(r["source"] == "self_instruct" for r in prompts) == p["self_instruct_new"] == p["total"] - 6
    j = s["judging"]
    # a random tiny model does not write "Score: N": every judgment is unparseable, counted, and no pair is built
    assert j["type"] == "self" and j["unparseable"] == j["judgments"] > 0
    assert j["unparseable_samples"] == j["judge_samples"] == 2 * j["judgments"]
    assert s["pairs"]["pairs"] == 0 and s["pairs"]["skipped_few_scores"] == s["pairs"]["prompts"]
    assert s["train"]["skipped"] == "no pairs" and s["model"] == str(tiny_model_dir)
    rows = [json.loads(x) for x in (out / "iter-1" / "judgments.jsonl").read_text().splitlines()]
    assert all(len(r["raw"]) == 2 and r["score"] is None for r in rows)
    ev = s["eval"]
    assert ev["mean_judge_score"] is None and ev["unparseable"] == ev["prompts"]
    assert ev["agreement_pairs"] == 0 and ev["judge_agreement"] is None and ev["agreement_unscored_pairs"] == 3


def test_best_of_n_mode_fine_tunes_on_the_best_candidates(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        iterations=1,
        mode="best-of-n",
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        sft={"train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}},
    )
    assert main(["self-reward", str(cfg)]) == 0
    s = _summary(out, 1)
    rows = [json.loads(x) for x in (out / "iter-1" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == s["pairs"]["pairs"] == 8 and {"prompt", "completion", "score"} <= set(rows[0])
    judged = [json.loads(x) for x in (out / "iter-1" / "judgments.jsonl").read_text().splitlines()]
    for r in rows:  # the best of its prompt's candidates
        own = [j["score"] for j in judged if j["prompt_id"] == r["prompt_id"] and j["score"] is not None]
        assert r["score"] == max(own)
    assert s["train"]["steps"] == 2 and (out / "iter-1" / "train" / "final" / "config.json").exists()


def test_an_interrupted_run_resumes_at_the_step_it_stopped_in(tiny_model_dir, tmp_path, monkeypatch):
    import alignkit.orchestrate.self_reward as sr

    small = dict(
        iterations=2,
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        dpo={"train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}},
    )
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    assert main(["self-reward", str(_config(tmp_path / "r.yaml", tiny_model_dir, ref_out, **small))]) == 0
    cfg = _config(tmp_path / "c.yaml", tiny_model_dir, out, **small)
    # stop in iteration 2's training step (the 2nd call of _train)
    monkeypatch.setattr(sr, "_train", interrupt_on_call(2, sr._train))
    assert main(["self-reward", str(cfg)]) == 130  # the CLI's answer to Ctrl-C
    state = json.loads((out / "iter-2" / "state.json").read_text())
    assert set(state) == {"prompts", "candidates", "judging", "pairs"} and not (out / "iter-2" / "summary.json").exists()
    before = (out / "iter-2" / "candidates.jsonl").read_text()
    monkeypatch.undo()
    assert main(["self-reward", str(cfg)]) == 0
    assert (out / "iter-2" / "candidates.jsonl").read_text() == before  # finished steps were not redone
    for t in range(3):
        a, b = _summary(ref_out, t), _summary(out, t)
        assert a["eval"]["mean_judge_score"] == pytest.approx(b["eval"]["mean_judge_score"], abs=1e-6), t


def test_config_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    cfg = _config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "run")
    assert main(["self-reward", str(cfg), "judge.type=reward_model", "judge.function=null"]) == 2
    assert "judge.model" in capsys.readouterr().err
    assert main(["self-reward", str(cfg), "judge.function=nowhere.py:fn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "judge.function" in err and "nowhere.py" in err and len(err.splitlines()) == 1
    assert main(["config", "show", str(REPO / "configs" / "self_reward" / "tiny.yaml"), "iterations=3"]) == 0
    assert "iterations: 3" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["configs/self_reward/tiny.yaml", "configs/self_reward/llama3-8b-self.yaml"])
def test_shipped_configs_validate(path):
    from alignkit.config.base import load_config
    from alignkit.config.self_reward import SelfRewardConfig

    cfg = load_config(SelfRewardConfig, REPO / path, ["iterations=3"])
    assert cfg.iterations == 3 and cfg.mode == "dpo"


def test_lora_iterations_chain_adapters(tiny_model_dir, tmp_path):
    """Iteration 2 starts from iteration 1's adapter directory (its reference: iteration 1's merged model)."""
    out = tmp_path / "run"
    cfg = _config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        iterations=2,
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        dpo={"train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}},
    )
    data = yaml.safe_load(cfg.read_text())
    data["model"].update({"finetune": "lora", "lora": {"r": 4, "alpha": 8}})
    cfg.write_text(yaml.safe_dump(data))
    assert main(["self-reward", str(cfg)]) == 0
    for t in (1, 2):
        final = out / f"iter-{t}" / "train" / "final"
        assert (final / "adapter_config.json").exists(), t
        assert _summary(out, t)["model"] == str(final)


def test_a_reward_model_judges_and_scores_the_heldout_answers(tiny_model_dir, tmp_path):
    from tests.conftest import write_rm_config

    rm_cfg = write_rm_config(tmp_path / "rm.yaml", tiny_model_dir, tmp_path / "rm")
    assert main(["rm", str(rm_cfg)]) == 0
    rm = str(tmp_path / "rm" / "final")
    out = tmp_path / "run"
    cfg = _config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        iterations=1,
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        judge={"type": "reward_model", "function": None, "model": rm},
        pairs={"min_gap": 0.0},
        dpo={"train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}},
        eval={"reward_model": rm},
    )
    assert main(["self-reward", str(cfg)]) == 0
    s = _summary(out, 1)
    assert s["judging"]["type"] == "reward_model" and s["judging"]["unparseable"] == 0
    assert s["pairs"]["pairs"] > 0 and s["train"]["steps"] == 2
    ev = s["eval"]
    # the same reward model as judge and as eval scorer: the two means agree
    assert ev["mean_reward"] == pytest.approx(ev["mean_judge_score"], abs=1e-5)
    assert ev["reward_ci"][0] <= ev["mean_reward"] <= ev["reward_ci"][1]
    assert 0 <= ev["reward_win_rate_vs_previous"] <= 1


def test_an_injected_scorer_scores_the_heldout_answers(tiny_model_dir, tmp_path):
    """``run(cfg, scorer=...)``: any ``Scorer`` (here a plain function) is the outside check at every evaluation."""
    from alignkit.config.base import load_config
    from alignkit.config.self_reward import SelfRewardConfig
    from alignkit.orchestrate.self_reward import run

    calls = []

    def chars(prompts, responses):
        calls.append(len(responses))
        return [float(len(r)) for r in responses]

    out = tmp_path / "run"
    cfg = _config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        iterations=1,
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        dpo={"train": {"max_steps": 1, "batch_size": 4}},
    )
    run(load_config(SelfRewardConfig, str(cfg), []), scorer=chars)
    assert calls == [4, 4]  # iteration 0 and iteration 1, four held-out answers each
    answers = [json.loads(x) for x in (out / "iter-1" / "eval_answers.jsonl").read_text().splitlines()]
    assert [a["reward"] for a in answers] == [float(len(a["response"])) for a in answers]
    ev = _summary(out, 1)["eval"]
    assert ev["mean_reward"] == pytest.approx(sum(a["reward"] for a in answers) / 4)
    assert 0 <= ev["reward_win_rate_vs_previous"] <= 1
