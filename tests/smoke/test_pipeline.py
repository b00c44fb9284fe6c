"""``alignkit pipeline``: stages in order with ${stage} references, every section validated first, finished
stages skipped on a re-run, an interrupted stage resumed; DPO can stand in for PPO."""

import json
from pathlib import Path

import pytest
import yaml

from alignkit.cli import main
from tests.conftest import HH_RLHF, REPO, interrupt_on_call

DATA = {"train": str(HH_RLHF), "format": "hh_rlhf", "max_length": 96, "max_rows": 16, "on_error": "skip"}
TRAIN = {"seed": 0, "max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1}


def _pipeline(tmp_path, tiny_model_dir, **extra) -> str:
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "base": str(tiny_model_dir),
        "sft": {"model": {"name_or_path": "${base}"}, "data": DATA, "train": TRAIN, "tensorboard": False},
        "dpo": {
            "model": {"name_or_path": "${sft}"},
            "data": {**DATA, "eval_fraction": 0.25},
            "train": TRAIN,
            "loss": {"type": "sigmoid", "beta": 0.1},
            "tensorboard": False,
        },
        "compare": {
            "models": {"base": "${base}", "sft": "${sft}", "dpo": "${dpo}"},
            "prompts": str(REPO / "tests/fixtures/data/prompt_only.jsonl"),
            "max_new_tokens": 8,
        },
        **extra,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def test_sft_then_dpo_then_compare_and_a_rerun_skips_finished_stages(tiny_model_dir, tmp_path, capsys):
    cfg = _pipeline(tmp_path, tiny_model_dir)
    assert main(["pipeline", cfg]) == 0
    run = tmp_path / "run"
    for stage in ("sft", "dpo", "compare"):
        assert (run / stage / "summary.json").is_file(), stage
    dpo_cfg = yaml.safe_load((run / "dpo" / "config.yaml").read_text())
    assert dpo_cfg["model"]["name_or_path"] == str(run / "sft" / "final")  # ${sft} resolved
    rows = [json.loads(line) for line in (run / "compare" / "compare.jsonl").read_text().splitlines()]
    assert sorted({r["model"] for r in rows}) == ["base", "dpo", "sft"] and len(rows) == 6
    report = json.loads((run / "pipeline.json").read_text())
    assert [s for s, v in report["stages"].items() if not v["skipped"]] == ["sft", "dpo", "compare"]
    capsys.readouterr()
    assert main(["pipeline", cfg]) == 0
    assert capsys.readouterr().out.count("finished earlier") == 3
    assert all(v["skipped"] for v in json.loads((run / "pipeline.json").read_text())["stages"].values())


def test_an_interrupted_stage_resumes(tiny_model_dir, tmp_path, monkeypatch):
    import alignkit.algorithms.dpo as dpo

    cfg = _pipeline(tmp_path, tiny_model_dir, compare=None)
    data = yaml.safe_load(Path(cfg).read_text())
    data["dpo"]["train"] = {**TRAIN, "max_steps": 4, "save_every": 2}
    del data["compare"]
    Path(cfg).write_text(yaml.safe_dump(data))
    real = dpo.unit_losses
    interrupt_in_step_3 = interrupt_on_call(3, real)

    monkeypatch.setattr(dpo, "unit_losses", interrupt_in_step_3)
    assert main(["pipeline", cfg]) == 130
    monkeypatch.setattr(dpo, "unit_losses", real)
    assert main(["pipeline", cfg]) == 0
    summary = json.loads((tmp_path / "run" / "dpo" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 4


@pytest.mark.parametrize(
    "change,needle",
    [
        (
            {"dpo": {"model": {"name_or_path": "${sft}"}, "data": DATA, "train": {"max_stpes": 2}}},
            "pipeline.yaml: unknown key 'dpo.train.max_stpes'",
        ),
        ({"dpo": {"model": {"name_or_path": "${nope}"}, "data": DATA}}, "unknown reference ${nope}"),
    ],
)
def test_sections_are_checked_before_anything_runs(tiny_model_dir, tmp_path, capsys, change, needle):
    cfg = _pipeline(tmp_path, tiny_model_dir, **change)
    assert main(["pipeline", cfg]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert not (tmp_path / "run" / "sft").exists()  # nothing ran


def test_the_quickstart_pipeline_validates_section_by_section():
    from alignkit.config.base import load_config
    from alignkit.config.pipeline import PipelineConfig, resolve_refs
    from alignkit.orchestrate.pipeline import stage_configs

    cfg = load_config(PipelineConfig, REPO / "configs/pipeline/quickstart.yaml")
    stages, compare = stage_configs(cfg)
    assert list(stages) == ["sft", "rm", "ppo"]
    assert (
        stages["ppo"].model.name_or_path == "runs/quickstart/sft/final"
        and stages["ppo"].reward.model == "runs/quickstart/rm/final"
    )
    assert compare.models == {
        "base": "runs/quickstart/base-model",
        "sft": "runs/quickstart/sft/final",
        "ppo": "runs/quickstart/ppo/final",
    }
    assert resolve_refs("${ppo.dir}/x", {"ppo.dir": "runs/q/ppo"}, "t") == "runs/q/ppo/x"
