"""benchmarks/grpo_vs_trl.py: the pieces that decide what is held equal (no training runs here)."""

from __future__ import annotations

import pytest
from benchmarks import grpo_vs_trl as bench


def test_trl_reward_scores_what_alignkit_scores():
    """TRL passes conversational prompts and completions; the wrapper hands alignkit's rule the same text."""
    prompts = [[{"role": "user", "content": "Hi"}]] * 3
    completions = [
        [{"role": "assistant", "content": "eee a"}],  # 3 of 4 letters are e
        [{"role": "assistant", "content": "E1b!"}],  # 1 of 2 (case-insensitive, digits and marks not letters)
        [{"role": "assistant", "content": "123"}],  # no letters: 0
    ]
    assert bench.trl_reward(prompts, completions) == [0.75, 0.5, 0.0]
    from alignkit.rl.rewards import RewardSource

    texts = [c[-1]["content"] for c in completions]
    assert RewardSource(function=bench.REWARD)(prompts, texts) == [0.75, 0.5, 0.0]


def test_trl_config_one_update_per_generation_of_p_times_g():
    pytest.importorskip("trl")
    spec = {"seed": 0, "prompts_per_step": 3, "group_size": 4, "max_new_tokens": 16, "steps": 5, "lr": 1e-5}
    c = bench.trl_config(spec, "/tmp/unused-grpo-bench")
    assert c.per_device_train_batch_size == 12  # completions per step, not prompts
    assert (c.gradient_accumulation_steps, c.steps_per_generation, c.generation_batch_size) == (1, 1, 12)
    assert (c.num_generations, c.num_iterations, c.max_completion_length, c.max_steps) == (4, 1, 16, 5)
    assert (c.loss_type, c.beta, c.epsilon, c.epsilon_high, c.scale_rewards) == ("dapo", 0.0, 0.2, 0.2, "group")
    assert (c.bf16, c.gradient_checkpointing, c.shuffle_dataset, c.top_k, c.top_p) == (False, False, False, 0, 1.0)


def test_alignkit_config_validates_with_the_same_settings():
    from alignkit.config.base import validate
    from alignkit.config.grpo import GRPOConfig

    spec = {
        "output_dir": "/tmp/unused",
        "model_dir": "/tmp/m",
        "prompts_path": "/tmp/p.jsonl",
        "max_prompt_tokens": 128,
        "max_new_tokens": 16,
        "group_size": 4,
        "prompts_per_step": 3,
        "seed": 0,
        "steps": 5,
        "lr": 1e-5,
    }
    c = validate(GRPOConfig, bench.alignkit_config(spec))
    assert (c.grpo.group_size, c.grpo.prompts_per_step, c.grpo.num_iterations, c.grpo.mini_batch_size) == (4, 3, 1, None)
    assert (c.loss.aggregation, c.loss.clip_low, c.loss.clip_high, c.kl.coef) == ("token", 0.2, 0.2, 0.0)
    assert (c.advantage.estimator, c.advantage.scale, c.train.batch_size, c.train.max_grad_norm) == ("grpo", "group", 12, 1.0)


def test_warmup_must_leave_timed_steps():
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "3", "--warmup", "3"])
    assert bench.parse_args(["--steps", "3", "--warmup", "1"]).warmup == 1
