"""The reward model of PPO and GRPO loads in the config's ``dtype`` (default float32): bfloat16 halves its weights,
its scores stay close to the fp32 ones, the config field reaches the loader, and ``alignkit plan`` counts it."""

from __future__ import annotations

import pytest
import torch

from alignkit.config.base import load_config
from alignkit.config.grpo import GRPOConfig
from alignkit.config.ppo import PPOConfig
from alignkit.rl.rewards import RewardSource
from tests.conftest import write_grpo_config, write_ppo_config

PROMPTS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Can you help me with my homework?"}],
    [{"role": "user", "content": "Tell me a joke."}],
]
RESPONSES = [
    "Mix flour, water, yeast and salt, let it rise, then bake it.",
    "Paris.",
    "Of course, what is the question you are working on?",
    "Why did the chicken cross the road? To get to the other side.",
]


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    """A saved decoder reward model (last-token pooling, seeded head) on the tiny Llama."""
    from alignkit.models.loading import load_tokenizer
    from alignkit.models.reward import RewardSpec, build_reward_scorer, save_reward_model

    tok = load_tokenizer(str(tiny_model_dir))
    scorer = build_reward_scorer(str(tiny_model_dir), pad_token_id=tok.pad_token_id, pooling="last", seed=0).eval()
    spec = RewardSpec(kind="decoder", pooling="last", template="chat", max_length=128)
    return save_reward_model(scorer, tok, spec, tmp_path_factory.mktemp("rm") / "final")


def weight_dtypes(source: RewardSource) -> set[torch.dtype]:
    return {p.dtype for p in source.model.scorer.model.parameters()}


def test_default_stays_float32_and_bf16_scores_are_close(reward_dir):
    fp32 = RewardSource(model_dir=str(reward_dir), batch_size=2)
    bf16 = RewardSource(model_dir=str(reward_dir), batch_size=2, dtype="bfloat16")
    assert weight_dtypes(fp32) == {torch.float32}
    assert weight_dtypes(bf16) == {torch.bfloat16}
    a, b = torch.tensor(fp32(PROMPTS, RESPONSES)), torch.tensor(bf16(PROMPTS, RESPONSES))
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per op): well under 2% of the scores' scale at most
    scale = a.abs().max().item()
    assert scale > 0
    assert (a - b).abs().max().item() <= 0.02 * scale
    assert not torch.equal(a, b)  # really computed in bf16


def test_config_defaults_to_float32(tiny_model_dir, tmp_path):
    ppo = load_config(PPOConfig, write_ppo_config(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "o"))
    assert ppo.reward.dtype == "float32"
    grpo = load_config(
        GRPOConfig, write_grpo_config(tmp_path / "g.yaml", tiny_model_dir, tmp_path / "o", rewards={"model": {"path": "x"}})
    )
    assert grpo.rewards.model.dtype == "float32"


def test_grpo_rewards_model_dtype_reaches_the_loader(tiny_model_dir, reward_dir, tmp_path):
    from alignkit.algorithms.grpo import reward_terms

    path = write_grpo_config(
        tmp_path / "g.yaml",
        tiny_model_dir,
        tmp_path / "o",
        rewards={"model": {"path": str(reward_dir), "dtype": "bfloat16", "name": "rm"}},
    )
    terms = reward_terms(load_config(GRPOConfig, path), "cpu")
    rm = next(t for t in terms if t.name == "rm")
    assert weight_dtypes(rm.scorer) == {torch.bfloat16}


class Loaded(Exception):
    """Raised by the stand-in RewardSource once PPO has built it: the test needs no training."""


def test_ppo_reward_dtype_reaches_the_loader(tiny_model_dir, reward_dir, tmp_path, monkeypatch):
    import alignkit.rl.rewards as rewards
    from alignkit.algorithms import ppo

    seen = {}

    def spy(**kwargs):
        seen["kwargs"] = kwargs
        seen["dtypes"] = weight_dtypes(RewardSource(**kwargs))
        raise Loaded

    monkeypatch.setattr(rewards, "RewardSource", spy)
    path = write_ppo_config(
        tmp_path / "p.yaml",
        tiny_model_dir,
        tmp_path / "o",
        reward={"model": str(reward_dir), "function": None, "kwargs": {}, "dtype": "bfloat16"},
    )
    with pytest.raises(Loaded):
        ppo.run(load_config(PPOConfig, path))
    assert seen["kwargs"]["dtype"] == "bfloat16" and seen["dtypes"] == {torch.bfloat16}


def test_plan_counts_the_reward_model_in_its_dtype(tiny_model_dir, reward_dir, tmp_path):
    from alignkit.plan import plan_grpo, plan_ppo, resolve_shape

    n = resolve_shape(str(reward_dir)).without_lm_head().num_params()
    for dtype, nbytes in (("float32", 4), ("bfloat16", 2)):
        ppo_cfg = load_config(
            PPOConfig,
            write_ppo_config(
                tmp_path / "p.yaml",
                tiny_model_dir,
                tmp_path / "o",
                reward={"model": str(reward_dir), "function": None, "kwargs": {}, "dtype": dtype},
            ),
        )
        grpo_cfg = load_config(
            GRPOConfig,
            write_grpo_config(
                tmp_path / "g.yaml", tiny_model_dir, tmp_path / "o", rewards={"model": {"path": str(reward_dir), "dtype": dtype}}
            ),
        )
        assert plan_ppo(ppo_cfg).parts["weights/reward"] == n * nbytes
        assert plan_grpo(grpo_cfg).parts["weights/reward"] == n * nbytes
