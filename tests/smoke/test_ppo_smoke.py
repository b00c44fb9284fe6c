"""The PPO stage end to end on a tiny model: both memory layouts, learning against a rule-based reward with a
bounded KL, a reward model as the reward source, the weights held in memory, errors, outputs."""

import json

import pytest

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
