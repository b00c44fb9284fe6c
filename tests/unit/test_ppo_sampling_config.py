"""PPO refuses sampling settings under which its stored old log-probs would not be those of the sampled distribution."""

from __future__ import annotations

import pytest

from alignkit.config.base import ConfigError, load_config
from alignkit.config.ppo import PPOConfig

BASE = ["output_dir=out", "model.name_or_path=m", "data.train=p.jsonl", "reward.function=m:f"]


def test_top_p_below_one_is_a_one_line_error():
    with pytest.raises(ConfigError) as err:
        load_config(PPOConfig, None, [*BASE, "generation.top_p=0.9"])
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert "generation.top_p" in msg and "log-probs" in msg and "temperature only" in msg


def test_temperature_alone_is_accepted():
    cfg = load_config(PPOConfig, None, [*BASE, "generation.temperature=0.7", "generation.top_p=1.0"])
    assert cfg.generation.temperature == 0.7 and cfg.generation.top_p == 1.0


@pytest.mark.parametrize("key", ["top_k=5", "repetition_penalty=1.2", "min_p=0.1"])
def test_other_processors_are_not_keys(key):
    with pytest.raises(ConfigError, match="not allowed|unknown key"):
        load_config(PPOConfig, None, [*BASE, f"generation.{key}"])
