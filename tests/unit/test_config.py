"""Configs: closed schemas, overrides, readable errors, and every shipped YAML validates."""

from pathlib import Path

import pytest

from alignkit.config.base import ConfigError, apply_overrides, load_config, parse_override
from alignkit.config.sft import SFTConfig
from alignkit.stages import STAGES, load

REPO = Path(__file__).resolve().parents[2]
BASE = {"output_dir": "o", "model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"}}


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_overrides_parse_yaml_scalars():
    assert parse_override("train.max_steps=5") == (["train", "max_steps"], 5)
    assert parse_override("train.learning_rate=1e-4") == (["train", "learning_rate"], 1e-4)
    assert parse_override("data.packing=true") == (["data", "packing"], True)
    assert parse_override("data.eval=null") == (["data", "eval"], None)
    assert parse_override("model.name_or_path=a/b") == (["model", "name_or_path"], "a/b")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2", "d.e=x"]) == {"a": {"b": 1, "c": 2}, "d": {"e": "x"}}


def test_unknown_key_names_it_and_suggests(tmp_path):
    p = _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m}\ndata: {train: t}\ntrain: {max_stpes: 3}\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, p)
    msg = str(e.value)
    assert str(p) in msg and "train.max_stpes" in msg and "did you mean 'max_steps'" in msg


def test_bad_values_are_named(tmp_path):
    p = _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m, finetune: lorra}\ndata: {train: t}\n")
    with pytest.raises(ConfigError, match="model.finetune"):
        load_config(SFTConfig, p)
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(
            SFTConfig, _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m}\ndata: {train: t}\n"), ["train.batch_size=0"]
        )
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        load_config(SFTConfig, _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m}\n"))


def test_override_typo_and_bad_yaml(tmp_path):
    p = _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m}\ndata: {train: t}\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(SFTConfig, p, ["trian.max_steps=3"])
    cfg = load_config(SFTConfig, p, ["train.max_steps=3", "resume=never"])
    assert cfg.train.max_steps == 3 and cfg.resume == "never"
    with pytest.raises(ConfigError, match=r"c.yaml:2: not valid YAML"):
        load_config(SFTConfig, _write(tmp_path, "output_dir: o\nmodel: {a: [1}\ndata: 1\n"))


GRPO_REWARDS = {"rewards": {"functions": [{"function": "module:fn"}]}}
REQUIRED_EXTRA = {  # keys a stage cannot do without
    "ppo": {"reward": {"function": "module:fn"}},
    "grpo": GRPO_REWARDS,
    "rloo": GRPO_REWARDS,
    "reinforce-pp": GRPO_REWARDS,
}


def test_common_keys_every_stage_accepts():
    for stage, (schema_ref, _) in STAGES.items():
        if stage in ("pipeline", "self-reward"):  # not training stages: they run other stages (own tests)
            continue
        schema = load(schema_ref)
        cfg = schema.model_validate(
            {
                **BASE,
                "resume": "never",
                "train": {"max_steps": 2, "seed": 1, "save_every": 1},
                "data": {"train": "a", "eval": "b"},
                **REQUIRED_EXTRA.get(stage, {}),
            }
        )
        assert cfg.train.max_steps == 2 and cfg.data.eval == "b" and cfg.resume == "never", stage


def test_every_shipped_yaml_validates():
    files = sorted(f for f in (REPO / "configs").glob("*/*.yaml") if f.parent.name != "accelerate")
    assert files, "no shipped configs found"
    for f in files:
        stage = f.parent.name.replace("_", "-")  # configs/self_reward -> self-reward
        assert stage in STAGES, f"{f}: folder {stage!r} is not a stage"
        load_config(load(STAGES[stage][0]), f)


def test_a_tagged_section_without_its_type_names_the_missing_key(tmp_path):
    """Issue 16: ``loss.beta=0.5`` alone used to fail with pydantic's 'Unable to extract tag using discriminator'."""
    from alignkit.config.dpo import DPOConfig

    p = _write(tmp_path, "output_dir: o\nmodel: {name_or_path: m}\ndata: {train: t}\n")
    with pytest.raises(ConfigError) as e:
        load_config(DPOConfig, p, ["loss.beta=0.5"])
    msg = str(e.value)
    assert "missing required key 'loss.type' (one of: sigmoid, ipo," in msg and "discriminator" not in msg
    with pytest.raises(ConfigError, match=r"key 'loss.type': unknown value 'nope' \(one of: sigmoid, ipo,"):
        load_config(DPOConfig, p, ["loss.type=nope"])
    assert load_config(DPOConfig, p, ["loss.type=sigmoid", "loss.beta=0.5"]).loss.beta == 0.5


def test_shipped_accelerate_configs_parse():
    """configs/accelerate/*.yaml are accelerate launch configs (not stage configs): accelerate's own class reads them."""
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert {f.stem for f in files} >= {"ddp", "fsdp2", "zero2", "zero3", "zero2-offload", "zero3-offload"}
    kinds = {f.stem: ClusterConfig.from_yaml_file(str(f)) for f in files}
    assert str(kinds["fsdp2"].distributed_type.value) == "FSDP" and kinds["fsdp2"].fsdp_config["fsdp_version"] == 2
    assert kinds["zero3-offload"].deepspeed_config["offload_param_device"] == "cpu"
    assert kinds["zero2"].deepspeed_config["zero_stage"] == 2


def test_format_errors_names_joins_and_passes_user_messages_through():
    from pydantic import BaseModel, ValidationError, field_validator

    from alignkit.config.base import format_errors

    class Inner(BaseModel):
        n: int

    class Toy(BaseModel):
        inner: Inner
        rate: float
        tag: str = "x"

        @field_validator("tag")
        @classmethod
        def _tag(cls, v):
            raise ConfigError("toy.yaml: tag is frozen")

    with pytest.raises(ValidationError) as info:
        Toy.model_validate({"inner": {"n": "many"}, "rate": "fast", "tag": "y"})
    err = info.value
    n_msg = "Input should be a valid integer, unable to parse string as an integer"
    rate_msg = "Input should be a valid number, unable to parse string as a number"
    assert format_errors(err, "toy.yaml") == "\n".join(
        [f"toy.yaml: inner.n: {n_msg} (got 'many')", f"toy.yaml: rate: {rate_msg} (got 'fast')", "toy.yaml: tag is frozen"]
    )
    assert format_errors(err, name=lambda loc: f"--{loc[-1]}", sep="; ") == (
        f"--n: {n_msg} (got 'many'); --rate: {rate_msg} (got 'fast'); toy.yaml: tag is frozen"
    )
    assert format_errors(err, "s", one_line=True) == f"s: inner.n: {n_msg} (got 'many') (and 2 more)"
    with pytest.raises(ValidationError) as info:  # no key: the name is left out; a mapping input is not shown
        Inner.model_validate({})
    assert format_errors(info.value, "s", name=lambda loc: "") == "s: Field required"
    with pytest.raises(ValidationError) as info:
        Toy.model_validate({"inner": {"n": 1}, "rate": "r" * 100})
    assert format_errors(info.value).endswith(f"(got '{'r' * 76}...)")  # the input cut at 80 characters


def test_pipeline_compare_references_are_resolved_and_checked_when_loaded(tmp_path, capsys):
    from alignkit.cli import main
    from alignkit.config.pipeline import PipelineConfig

    quick = REPO / "configs/pipeline/quickstart.yaml"
    assert main(["config", "show", str(quick), "--stage", "pipeline"]) == 0
    shown = capsys.readouterr().out
    assert "prompts: runs/quickstart/ppo/heldout_prompts.jsonl" in shown and "${" not in shown
    cfg = load_config(PipelineConfig, quick)
    assert cfg.compare.reward_model == "runs/quickstart/rm/final" and cfg.present() == ["sft", "rm", "ppo", "compare"]
    with pytest.raises(ConfigError, match=r"compare.prompts: unknown reference \$\{typo\}"):
        load_config(PipelineConfig, quick, ["compare.prompts=${typo}"])
    with pytest.raises(ConfigError) as err:
        load_config(PipelineConfig, quick, ["compare.reward_function=f.py:fn"])
    assert str(err.value) == (
        f"{quick} (with overrides): key 'compare': Value error, set one of reward_model and reward_function, not both"
    )
    path = _write(tmp_path, "output_dir: o\nbase: m\n")
    with pytest.raises(ConfigError) as err:
        load_config(PipelineConfig, path)
    assert str(err.value) == f"{path}: Value error, no stage sections (sft, rm, ppo, grpo, dpo, compare)"
