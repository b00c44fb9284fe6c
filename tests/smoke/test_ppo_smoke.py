"""The PPO stage end to end on a tiny model: both memory layouts, learning against a rule-based reward with a
bounded KL, a reward model as the reward source, the weights held in memory, errors, outputs."""

import json

import pytest
import torch

from alignkit.cli import main
from tests.conftest import write_ppo_config, write_rm_config

KEYS = (
    "reward",
    "reward_normalized",
    "kl",
    "kl_coef",
    "entropy",
    "policy_loss",
    "value_loss",
    "clipfrac",
    "approx_kl",
    "explained_variance",
    "response_length",
    "no_eos_fraction",
    "generation_time",
    "training_time",
    "tokens_per_second",
)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_rows(out):
    return [r for r in _rows(out) if "policy_loss" in r]


LORA = {"finetune": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}}


@pytest.mark.parametrize("memory,model,lr,gain", [("separate", {}, 3e-4, 1.0), ("shared-base", LORA, 3e-3, 0.3)])
def test_ppo_raises_a_rule_based_reward_with_bounded_kl(tiny_sft_dir, tmp_path, memory, model, lr, gain):
    out = tmp_path / memory
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_sft_dir,
        out,
        memory=memory,
        model=model,
        generation={"max_new_tokens": 24},
        ppo={"rollout_size": 16, "mini_batch_size": 8, "ppo_epochs": 4},
        data={"max_rows": 256, "max_length": 128},
        train={"max_steps": 30, "learning_rate": lr, "batch_size": 8},
    )
    assert main(["ppo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert [r["step"] for r in rows] == list(range(1, 31))
    first = sum(r["reward"] for r in rows[:6]) / 6
    last = sum(r["reward"] for r in rows[-6:]) / 6
    assert last >= first + gain, (first, last)
    assert max(r["kl"] for r in rows) < 15.0
    for key in KEYS:
        assert key in rows[-1], key


def test_shared_base_holds_the_base_weights_once(tiny_model_dir, tmp_path):
    got = {}
    for memory in ("separate", "shared-base"):
        out = tmp_path / memory
        cfg = write_ppo_config(
            tmp_path / f"{memory}.yaml", tiny_model_dir, out, memory=memory, model=LORA, train={"max_steps": 1}
        )
        assert main(["ppo", str(cfg)]) == 0
        got[memory] = json.loads((out / "summary.json").read_text())["weights_mib"]
    from alignkit.models.actor_critic import parameter_bytes
    from alignkit.models.loading import load_causal_lm

    base = parameter_bytes(load_causal_lm(str(tiny_model_dir), finetune="none")) / 2**20
    # separate: policy, value backbone and reference are three copies of the base; shared-base: one, plus adapters
    assert got["separate"] > 2.8 * base
    assert base < got["shared-base"] < 1.6 * base


def test_shared_base_final_policy_is_a_peft_adapter_and_full_is_a_plain_model(tiny_model_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    shared = tmp_path / "shared"
    assert (
        main(["ppo", str(write_ppo_config(tmp_path / "s.yaml", tiny_model_dir, shared, memory="shared-base", model=LORA))]) == 0
    )
    m = AutoPeftModelForCausalLM.from_pretrained(str(shared / "final"))
    assert list(m.peft_config) == ["default"]  # the policy adapter only
    full = tmp_path / "full"
    assert main(["ppo", str(write_ppo_config(tmp_path / "f.yaml", tiny_model_dir, full))]) == 0
    assert AutoModelForCausalLM.from_pretrained(str(full / "final")).config.model_type == "llama"
    summary = json.loads((full / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["data"]["prompts"] > 0


def test_a_reward_model_is_a_reward_source_and_eval_runs_on_held_out_prompts(tiny_model_dir, tiny_bert_dir, tmp_path):
    rm_out = tmp_path / "rm"
    assert main(["rm", str(write_rm_config(tmp_path / "rm.yaml", tiny_bert_dir, rm_out))]) == 0
    out = tmp_path / "ppo"
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        reward={"model": str(rm_out / "final"), "function": None, "kwargs": {}},
        data={"eval_fraction": 0.1},
        train={"eval_every": 1},
    )
    assert main(["ppo", str(cfg)]) == 0
    rows = _rows(out)
    assert any("eval_reward" in r for r in rows) and (out / "heldout_prompts.jsonl").is_file()
    assert json.loads((out / "summary.json").read_text())["eval"]["eval_n"] >= 1


def test_reward_function_from_a_file_and_its_errors(tiny_model_dir, tmp_path, capsys):
    fn = tmp_path / "my_reward.py"
    fn.write_text(
        "def short(prompts, responses):\n    return [-len(r) for r in responses]\n\n"
        "def broken(prompts, responses):\n    return ['x' for r in responses]\n"
    )
    out = tmp_path / "ok"
    cfg = write_ppo_config(tmp_path / "ok.yaml", tiny_model_dir, out, reward={"function": f"{fn}:short", "kwargs": {}})
    assert main(["ppo", str(cfg)]) == 0
    assert _train_rows(out)[0]["reward"] <= 0
    for spec, needle in [
        (f"{fn}:nope", "has no function 'nope'"),
        (f"{tmp_path}/missing.py:f", "not found"),
        (f"{fn}:broken", "non-number"),
    ]:
        cfg = write_ppo_config(
            tmp_path / "bad.yaml", tiny_model_dir, tmp_path / "bad", reward={"function": spec, "kwargs": {}}, resume="never"
        )
        capsys.readouterr()
        assert main(["ppo", str(cfg)]) == 2, spec
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_config_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    cfg = write_ppo_config(tmp_path / "c.yaml", tiny_model_dir, tmp_path / "x", memory="shared-base")  # full fine-tuning
    assert main(["ppo", str(cfg)]) == 2
    assert "shared-base' needs model.finetune lora" in capsys.readouterr().err
    cfg = write_ppo_config(tmp_path / "d.yaml", tiny_model_dir, tmp_path / "x", reward={"model": "m"})  # both sources
    assert main(["ppo", str(cfg)]) == 2
    assert "exactly one of reward.model and reward.function" in capsys.readouterr().err


def test_the_tiny_config_takes_reward_function_and_max_steps_overrides(tiny_model_dir, tmp_path):
    from tests.conftest import REPO

    out = tmp_path / "tiny"
    args = [
        "ppo",
        str(REPO / "configs/ppo/tiny.yaml"),
        f"output_dir={out}",
        f"model.name_or_path={tiny_model_dir}",
        "model.init=null",
        "reward.function=alignkit.rl.rule_rewards:brevity",
        "train.max_steps=2",
    ]
    assert main(args) == 0
    rows = _train_rows(out)
    assert [r["step"] for r in rows] == [1, 2] and all(r["reward"] <= 0 for r in rows)  # brevity: minus the word count


def test_value_model_initialised_from_a_decoder_reward_model(tiny_model_dir, tmp_path, capsys):
    rm_out = tmp_path / "rm"
    assert main(["rm", str(write_rm_config(tmp_path / "rm.yaml", tiny_model_dir, rm_out))]) == 0  # decoder: a seq-cls model
    out = tmp_path / "ppo"
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        value={"init": "reward"},
        reward={"model": str(rm_out / "final"), "function": None, "kwargs": {}},
    )
    assert main(["ppo", str(cfg)]) == 0
    rows = _train_rows(out)
    assert len(rows) == 2 and all(r["value_loss"] == r["value_loss"] for r in rows)


def test_an_encoder_reward_model_cannot_seed_the_value_model(tiny_model_dir, tiny_bert_dir, tmp_path, capsys):
    rm_out = tmp_path / "rm"
    assert main(["rm", str(write_rm_config(tmp_path / "rm.yaml", tiny_bert_dir, rm_out, model={"pooling": "cls"}))]) == 0
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        tmp_path / "ppo",
        value={"init": "reward"},
        reward={"model": str(rm_out / "final"), "function": None, "kwargs": {}},
    )
    capsys.readouterr()
    assert main(["ppo", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "value.init 'reward'" in err[0], err


def _nan_policy_loss_from(monkeypatch, first_bad_call: int):
    """Make every ``policy_loss`` call from the ``first_bad_call``-th on (0-based) return a NaN loss."""
    import alignkit.algorithms.ppo as ppo

    real, calls = ppo.policy_loss, [0]

    def policy_loss(*args, **kw):
        out = real(*args, **kw)
        calls[0] += 1
        return out._replace(loss=out.loss * float("nan")) if calls[0] > first_bad_call else out

    monkeypatch.setattr(ppo, "policy_loss", policy_loss)


def _weights(model_dir):
    from safetensors.torch import load_file

    return {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


# rollout 8, mini-batch 4 in one micro-batch, 2 epochs: 4 updates (policy_loss calls) per step
NAN_KW = dict(train={"max_steps": 3, "batch_size": 4}, ppo={"rollout_size": 8, "mini_batch_size": 4, "ppo_epochs": 2})


def test_a_nan_loss_stops_before_the_update_and_saves_the_last_good_state(tiny_model_dir, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref"  # the same run with no NaN, checkpointed after step 1
    kw = {**NAN_KW, "train": {**NAN_KW["train"], "save_every": 1}}
    assert main(["ppo", str(write_ppo_config(tmp_path / "ref.yaml", tiny_model_dir, ref, **kw))]) == 0

    out = tmp_path / "nan"
    _nan_policy_loss_from(monkeypatch, first_bad_call=4)  # the first update of step 2
    capsys.readouterr()
    assert main(["ppo", str(write_ppo_config(tmp_path / "nan.yaml", tiny_model_dir, out, **NAN_KW))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 2: the loss is nan" in err[0] and "after step 1" in err[0], err
    saved = out / "checkpoints" / "step-1"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"] and not (out / "final").exists()
    got, want = _weights(saved / "model"), _weights(ref / "checkpoints" / "step-1" / "model")
    assert got.keys() == want.keys()
    for k in got:
        assert torch.isfinite(got[k]).all(), k
        assert torch.equal(got[k], want[k]), k  # the step-1 state, untouched by the NaN
    state, want_state = (json.loads((p / "trainer_state.json").read_text()) for p in (saved, ref / "checkpoints" / "step-1"))
    assert state["reward_moments"] == want_state["reward_moments"] and state["kl_controller"] == want_state["kl_controller"]


def test_a_nan_loss_in_the_middle_of_a_step_saves_nothing_and_names_the_last_checkpoint(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "nan"
    kw = {**NAN_KW, "train": {**NAN_KW["train"], "save_every": 1}}
    _nan_policy_loss_from(monkeypatch, first_bad_call=6)  # update 3 of step 2: two of its updates are applied
    capsys.readouterr()
    assert main(["ppo", str(write_ppo_config(tmp_path / "nan.yaml", tiny_model_dir, out, **kw))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "update 3 of the step" in err[0] and "step-1" in err[0], err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]  # written by save_every, nothing after


def test_eval_logs_diversity_against_the_starting_policy_and_an_injected_scorer_is_used(tiny_model_dir, tmp_path):
    from alignkit.algorithms import ppo
    from alignkit.config.base import load_config
    from alignkit.config.ppo import PPOConfig

    seen = []

    def scorer(prompts, responses):  # stands in for the configured keyword reward, which is never loaded
        seen.append(len(responses))
        return [float(len(r)) for r in responses]

    out = tmp_path / "ppo"
    path = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        reward={"function": "no_such_module:fn", "kwargs": {}},
        data={"eval_fraction": 0.1},
        train={"max_steps": 2, "eval_every": 1},
    )
    result = ppo.run(load_config(PPOConfig, path), scorer=scorer)
    assert result.steps == 2 and seen
    evals = [r for r in _rows(out) if "eval_reward" in r]
    assert [r["step"] for r in evals] == [0, 1, 2]  # the starting policy, then every step and at the end
    for r in evals:
        for key in ("eval_distinct_share", "eval_top_answer_share", "eval_distinct_2", "eval_length_ratio"):
            assert key in r and 0 <= r[key] <= (1 if key != "eval_length_ratio" else 10), (key, r)
    assert evals[0]["eval_length_ratio"] == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_start"]["eval_n"] == summary["eval"]["eval_n"] >= 1
    assert summary["reward"].endswith("scorer")
    train = _train_rows(out)
    assert train[0]["reward"] > 0  # the scorer's score: the length of the text


def test_prompts_from_two_sources_with_repeat(tiny_model_dir, tmp_path, capsys):
    """data.train as a list: held-out prompts drawn before the repeat, the repeated source counted in the log."""
    from tests.conftest import HH_RLHF, REPO

    helpful = REPO / "data/hh-rlhf-helpful/helpful-sample.jsonl.gz"
    out = tmp_path / "run"
    train = [{"path": str(HH_RLHF), "max_rows": 12}, {"path": str(helpful), "repeat": 2, "max_rows": 12}]
    cfg = write_ppo_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        out,
        data={"train": train, "max_rows": None, "eval_fraction": 0.25},
        train={"max_steps": 1},
    )
    assert main(["ppo", str(cfg)]) == 0
    log = capsys.readouterr().out
    held = (out / "heldout_prompts.jsonl").read_text().splitlines()
    assert len(held) == 6  # a quarter of the 24 prompts
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["prompts"] == 24
    # 18 kept; each helpful one twice
    assert "training prompts after each source's repeat (18 distinct)" in log
