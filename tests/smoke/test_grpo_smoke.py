"""The critic-free stage end to end on a tiny model: every estimator and aggregation runs and learns against a
rule-based reward, the aliases preset the estimator, both memory layouts, dynamic sampling, overlong handling,
references reaching reward functions, per-function metrics, outputs, and one-line errors."""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import write_grpo_config

KEYS = (
    "reward",
    "reward/keyword",
    "reward_std",
    "frac_zero_std",
    "entropy",
    "clip_frac_low",
    "clip_frac_high",
    "response_length",
    "truncated_share",
    "tokens_per_second",
    "groups_trained",
)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_rows(out):
    return [r for r in _rows(out) if "reward" in r]


LORA = {"finetune": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}


def test_grpo_runs_logs_and_saves(tiny_sft_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, out, data={"eval_fraction": 0.1}, train={"eval_every": 1})
    assert main(["grpo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for k in KEYS:
        assert rows[0][k] is not None, k
    assert rows[0]["groups_trained"] == 4 and rows[0]["kl"] is None  # kl.coef 0: no reference, no KL
    evals = [r for r in _rows(out) if "eval_reward" in r]
    assert [r["step"] for r in evals] == [0, 1, 2] and evals[0]["eval_n"] == 6
    assert "eval_reward/keyword" in evals[0] and "eval_distinct_share" in evals[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stage"] == "grpo" and summary["estimator"] == "grpo" and summary["sampling"]["groups_sampled"] == 8
    AutoModelForCausalLM.from_pretrained(out / "final")  # a plain transformers directory


@pytest.mark.parametrize(
    "overrides",
    [
        {"advantage": {"estimator": "dr_grpo"}, "loss": {"aggregation": "fixed"}},
        {"advantage": {"estimator": "grpo", "scale": "batch"}, "loss": {"aggregation": "sequence"}},
        {"advantage": {"estimator": "rloo"}, "kl": {"coef": 0.1, "estimator": "k1", "placement": "reward"}},
        {"advantage": {"estimator": "reinforce_pp"}, "kl": {"coef": 0.1, "estimator": "k1", "placement": "reward"}},
        {"advantage": {"estimator": "reinforce_pp_baseline"}},
        {"advantage": {"estimator": "reinforce_pp"}, "grpo": {"group_size": 1, "prompts_per_step": 8}},
        {"loss": {"ratio": "sequence", "clip_low": 3e-4, "clip_high": 4e-4}, "grpo": {"num_iterations": 2, "mini_batch_size": 8}},
        {"loss": {"clip_high": 0.28, "mask_truncated": True}, "rewards": {"overlong_buffer": 4}},
    ],
    ids=[
        "dr_grpo-fixed",
        "grpo-batch-sequence",
        "rloo-kl-reward",
        "reinforce_pp",
        "reinforce_pp_baseline",
        "reinforce_pp-G1",
        "gspo",
        "dapo",
    ],
)
def test_every_estimator_and_aggregation_runs(tiny_sft_dir, tmp_path, overrides):
    out = tmp_path / "run"
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, out, **overrides)
    assert main(["grpo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["reward"])) for r in rows)
    if "kl" in overrides:
        assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # sampled from the reference itself
        assert rows[1]["kl"] != 0.0
    if "num_iterations" in overrides.get("grpo", {}):
        assert rows[0]["updates"] == 4  # 2 passes × 2 mini-batches of 8
        assert rows[0]["clip_frac_low"] + rows[0]["clip_frac_high"] > 0  # the second pass is off-policy
    if "rewards" in overrides:
        assert "reward/overlong_penalty" in rows[0]
    if overrides.get("grpo", {}).get("group_size") == 1:
        assert rows[0]["frac_zero_std"] is None  # no groups: not "every group without signal"
    else:
        assert 0 <= rows[0]["frac_zero_std"] <= 1


def test_grpo_learns_a_rule_reward(tiny_sft_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_grpo_config(
        tmp_path / "c.yaml",
        tiny_sft_dir,
        out,
        grpo={"group_size": 8, "prompts_per_step": 4},
        train={"max_steps": 25, "learning_rate": 3e-3, "batch_size": 16},
        generation={"max_new_tokens": 12},
    )
    assert main(["grpo", str(cfg)]) == 0
    r = [row["reward"] for row in _train_rows(out)]
    first, last = sum(r[:5]) / 5, sum(r[-5:]) / 5
    assert last > first + 0.3, (first, last)


def test_aliases_preset_the_estimator(tiny_sft_dir, tmp_path, capsys):
    for alias, estimator in (("rloo", "rloo"), ("reinforce-pp", "reinforce_pp")):
        out = tmp_path / alias
        cfg = write_grpo_config(tmp_path / f"{alias}.yaml", tiny_sft_dir, out, train={"max_steps": 1})
        assert main([alias, str(cfg)]) == 0
        assert json.loads((out / "summary.json").read_text())["estimator"] == estimator
    bad = write_grpo_config(tmp_path / "bad.yaml", tiny_sft_dir, tmp_path / "bad", advantage={"estimator": "grpo"})
    assert main(["rloo", str(bad)]) == 2
    assert "trains with advantage.estimator rloo" in capsys.readouterr().err


def test_shared_base_lora_reference_is_the_starting_policy(tiny_sft_dir, tmp_path):
    from peft import PeftConfig

    out = tmp_path / "run"
    cfg = write_grpo_config(
        tmp_path / "c.yaml", tiny_sft_dir, out, memory="shared-base", model=LORA, kl={"coef": 0.1, "estimator": "k3"}
    )
    assert main(["grpo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[1]["kl"] > 0
    assert PeftConfig.from_pretrained(str(out / "final")).base_model_name_or_path


def test_dynamic_sampling_drops_groups_without_signal(tiny_sft_dir, tmp_path):
    reward = tmp_path / "reward.py"
    # a reward that is constant for most prompts: those groups carry no signal
    reward.write_text(
        "def fn(prompts, responses):\n"
        "    return [float(len(r) % 3 == 0) if p.startswith(('W', 'H')) else 1.0 for p, r in zip(prompts, responses)]\n"
    )
    out = tmp_path / "run"
    cfg = write_grpo_config(
        tmp_path / "c.yaml",
        tiny_sft_dir,
        out,
        rewards={"functions": [{"function": f"{reward}:fn"}]},
        dynamic_sampling={"enabled": True, "max_rounds": 3},
        train={"max_steps": 3},
    )
    assert main(["grpo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert any(r["groups_dropped"] > 0 for r in rows)
    for r in rows:
        assert r["groups_trained"] <= 4 and r["sampling_rounds"] >= 1
        assert r["groups_trained"] + r["groups_dropped"] == 4 * r["sampling_rounds"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampling"]["groups_dropped"] == sum(r["groups_dropped"] for r in rows)


def test_reward_functions_get_references_and_are_logged_apart(tiny_sft_dir, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}", "completion": w}) + "\n" for w in ["yes", "no", "maybe", "ok"] * 4))
    reward = tmp_path / "reward.py"
    reward.write_text(
        "SEEN = []\n"
        "def has_ref(prompts, responses, references):\n"
        "    assert all(p == 'Say ' + r for p, r in zip(prompts, references)), (prompts[:2], references[:2])\n"
        "    return [float(ref in resp) for resp, ref in zip(responses, references)]\n"
        "def length(prompts, responses, scale=1.0):\n"
        "    return [scale * len(r) for r in responses]\n"
    )
    out = tmp_path / "run"
    cfg = write_grpo_config(
        tmp_path / "c.yaml",
        tiny_sft_dir,
        out,
        data={"train": str(data), "format": "auto", "max_rows": None},
        rewards={
            "functions": [
                {"function": f"{reward}:has_ref", "weight": 2.0},
                {"function": f"{reward}:length", "weight": 0.5, "kwargs": {"scale": 0.1}, "name": "len"},
            ]
        },
        train={"max_steps": 1},
    )
    assert main(["grpo", str(cfg)]) == 0
    row = _train_rows(out)[0]
    assert row["reward"] == pytest.approx(2.0 * row["reward/has_ref"] + 0.5 * row["reward/len"], abs=1e-5)
    assert row["reward/len"] > 0


@pytest.mark.parametrize(
    "sections,message",
    [
        ({"grpo": {"group_size": 1}}, "needs grpo.group_size >= 2"),
        ({"advantage": {"estimator": "rloo", "scale": "batch"}}, "scale 'batch' is for estimator grpo"),
        ({"grpo": {"mini_batch_size": 64}}, "exceeds the step's responses"),
        ({"rewards": {"functions": []}}, "at least one of rewards.functions and rewards.model"),
        ({"rewards": {"functions": [{"function": "alignkit.rl.rule_rewards:nope"}]}}, "has no function 'nope'"),
        ({"kl": {"coef": 0.1, "placement": "reward", "estimator": "k3"}}, "set kl.estimator k1"),
        ({"memory": "shared-base"}, "needs model.finetune lora or qlora"),
    ],
)
def test_bad_settings_are_one_line_errors(tiny_sft_dir, tmp_path, capsys, sections, message):
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, tmp_path / "run", **sections)
    assert main(["grpo", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err


def test_a_failing_reward_function_is_a_one_line_error(tiny_sft_dir, tmp_path, capsys):
    reward = tmp_path / "reward.py"
    reward.write_text("def fn(prompts, responses):\n    return [1.0 / 0 for _ in responses]\n")
    cfg = write_grpo_config(
        tmp_path / "c.yaml", tiny_sft_dir, tmp_path / "run", rewards={"functions": [{"function": f"{reward}:fn"}]}
    )
    assert main(["grpo", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "reward function" in err and "ZeroDivisionError" in err and len(err.splitlines()) == 1


def test_prompts_without_a_prompt_are_located(tiny_sft_dir, tmp_path, capsys):
    data = tmp_path / "plain.jsonl"
    data.write_text(json.dumps({"text": "just text"}) + "\n" + json.dumps({"text": "more"}) + "\n")
    cfg = write_grpo_config(
        tmp_path / "c.yaml", tiny_sft_dir, tmp_path / "run", data={"train": str(data), "format": "auto", "on_error": "raise"}
    )
    assert main(["grpo", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "plain.jsonl:1" in err and "no prompt" in err


def test_a_nan_loss_saves_the_state_before_the_step_with_the_prompt_stream_where_it_was(
    tiny_sft_dir, tmp_path, monkeypatch, capsys
):
    import alignkit.algorithms.grpo as grpo

    kw = dict(grpo={"group_size": 4, "prompts_per_step": 2, "num_iterations": 2}, train={"max_steps": 3, "save_every": 1})
    ref = tmp_path / "ref"  # the same run with no NaN, checkpointed after every step
    assert main(["grpo", str(write_grpo_config(tmp_path / "ref.yaml", tiny_sft_dir, ref, **kw))]) == 0

    real, calls = grpo.clipped_policy_loss, [0]

    def nan_from_step_2(*args, **kwargs):  # 2 updates of 2 micro-batches a step: call 5 is step 2's first
        out = real(*args, **kwargs)
        calls[0] += 1
        return out._replace(loss=out.loss * float("nan")) if calls[0] > 4 else out

    monkeypatch.setattr(grpo, "clipped_policy_loss", nan_from_step_2)
    out = tmp_path / "nan"
    kw["train"] = {"max_steps": 3}  # no save_every: the only checkpoint is the one the NaN writes
    capsys.readouterr()
    assert main(["grpo", str(write_grpo_config(tmp_path / "nan.yaml", tiny_sft_dir, out, **kw))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 2: the loss is nan" in err[0] and "after step 1" in err[0], err
    state = json.loads((out / "checkpoints" / "step-1" / "trainer_state.json").read_text())
    want = json.loads((ref / "checkpoints" / "step-1" / "trainer_state.json").read_text())
    assert state["cursor"] == want["cursor"] == 2 and state["totals"] == want["totals"]  # not step 2's prompts
