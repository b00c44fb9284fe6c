"""Resume is safe after a config change or a damaged checkpoint (issue 16, points 4 and 5).

- a changed learning rate (or beta, or data) stops the resume with a one-line error naming the keys, and
  ``resume: force`` applies it, recorded in resumes.jsonl / summary.json / config.yaml;
- max_steps (and the log/eval/save intervals) may change: applied and logged;
- a damaged newest checkpoint (overwritten or truncated weights, corrupt JSON) is skipped with one line and the
  run resumes from the previous one to the same losses as an uninterrupted run;
- when every checkpoint is damaged: a one-line error, exit 2.
"""

import json

import pytest
import yaml

from alignkit.cli import main
from tests.conftest import write_dpo_config, write_sft_config

# constant schedule: a run of 4 steps resumed to 6 is the same as a run of 6 (the schedule does not depend on the total)
TRAIN = {"save_every": 2, "save_total_limit": 3, "lr_scheduler": "constant"}


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _sft(tmp_path, model_dir, name, *overrides, **train):
    out = tmp_path / name
    cfg = write_sft_config(tmp_path / f"{name}.yaml", model_dir, out, train={**TRAIN, **train})
    return out, cfg, main(["sft", str(cfg), *overrides])


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """The uninterrupted 6-step run."""
    out, _, rc = _sft(tmp_path_factory.mktemp("ref"), tiny_model_dir, "ref", max_steps=6)
    assert rc == 0
    return _losses(out)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_changed_learning_rate_stops_with_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=6", "train.learning_rate=0.002"]) == 2
    line = _error_line(capsys)
    assert "train.learning_rate: 0.001 -> 0.002" in line and "resume: force" in line
    assert "max_steps" not in line.split("only")[0]  # an allowed change is not reported as the problem
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["learning_rate"] == 0.001  # not rewritten


def test_resume_force_applies_the_change_and_records_it(tiny_model_dir, tmp_path, capsys):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=8", "train.learning_rate=0.002", "resume=force"]) == 0
    printed = capsys.readouterr().out
    assert "resume: force: applying changed train.learning_rate: 0.001 -> 0.002" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["learning_rate"] for r in rows if "learning_rate" in r}
    assert lrs[4] == pytest.approx(0.001) and lrs[5] == pytest.approx(0.002)  # the new rate really applies
    summary = json.loads((out / "summary.json").read_text())
    (resume,) = summary["resumes"]
    assert resume["forced"] == {"train.learning_rate": [0.001, 0.002]}
    assert resume["changed"]["train.max_steps"] == [5, 8] and resume["changed"]["resume"] == ["auto", "force"]
    assert yaml.safe_load((out / "config.yaml").read_text())["resume"] == "force"
    # the checkpoints written since (step-6) hold the new config: a plain resume from them changes nothing else
    assert main(["sft", str(cfg), "train.max_steps=10", "train.learning_rate=0.002"]) == 0
    assert "train.learning_rate" not in json.dumps(json.loads((out / "summary.json").read_text())["resumes"][-1])


def test_changed_max_steps_is_allowed_and_logged(tiny_model_dir, tmp_path, capsys, reference):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=6"]) == 0
    assert "resume: applying train.max_steps: 5 -> 6" in capsys.readouterr().out
    assert _losses(out) == reference
    assert json.loads((out / "summary.json").read_text())["resumes"][0]["changed"] == {"train.max_steps": [5, 6]}


def _overwrite(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data)):
        data[i] = 0xFF  # same size, nan-shaped bytes: loads silently without a checksum
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_json(path):
    path.write_text(path.read_text()[:-5])


DAMAGE = {
    "overwritten-weights": ("model.safetensors", _overwrite),
    "truncated-weights": ("model.safetensors", _truncate),
    "corrupt-state-json": ("trainer_state.json", _corrupt_json),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, tmp_path, capsys, reference, damage):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    name, spoil = DAMAGE[damage]
    spoil(out / "checkpoints" / "step-4" / name)
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=6"]) == 0
    printed = capsys.readouterr().out
    fallback = [line for line in printed.splitlines() if "falling back" in line]
    assert fallback == [fallback[0]] and name in fallback[0] and "step-4" in fallback[0] and "step-2" in fallback[0]
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 2
    assert _losses(out) == reference


def test_every_checkpoint_damaged_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    _overwrite(out / "checkpoints" / "step-4" / "model.safetensors")
    _corrupt_json(out / "checkpoints" / "step-2" / "trainer_state.json")
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=6"]) == 2
    line = _error_line(capsys)
    assert "step-4: model.safetensors does not match its checksum" in line
    assert "step-2: trainer_state.json" in line and "resume: never" in line


def test_checkpoint_without_manifest_is_accepted_with_a_warning(tiny_model_dir, tmp_path, capsys, reference):
    out, cfg, rc = _sft(tmp_path, tiny_model_dir, "run", max_steps=5)
    assert rc == 0
    for step in (2, 4):  # as written by an older alignkit
        (out / "checkpoints" / f"step-{step}" / "manifest.json").unlink()
        (out / "checkpoints" / f"step-{step}" / "config.yaml").unlink()
    capsys.readouterr()
    assert main(["sft", str(cfg), "train.max_steps=6"]) == 0
    printed = capsys.readouterr().out
    assert "has no manifest" in printed and "not verified" in printed
    assert _losses(out) == reference


def test_dpo_changed_beta_stops_the_resume(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "dpo"
    cfg = write_dpo_config(tmp_path / "dpo.yaml", tiny_model_dir, out, train={"max_steps": 2, "save_every": 1})
    assert main(["dpo", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["dpo", str(cfg), "train.max_steps=3", "loss.beta=0.5", "loss.type=sigmoid"]) == 2
    assert "loss.beta: 0.1 -> 0.5" in _error_line(capsys)
