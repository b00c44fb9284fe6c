"""One ``UserError`` base: every layer's user error derives from it, and the CLI turns it into one line, exit 2."""

from __future__ import annotations

import pytest

import alignkit.cli as cli
from alignkit.config.base import ConfigError
from alignkit.data.errors import DataError, RowRef
from alignkit.errors import UserError
from alignkit.judge.judges import JudgeError
from alignkit.models.errors import ModelError
from alignkit.rag.errors import RagError
from alignkit.rl.rewards import RewardError
from alignkit.scoring import ScoreError
from alignkit.training.errors import TrainingError

ERRORS = [ConfigError, DataError, ModelError, TrainingError, RewardError, RagError, JudgeError, ScoreError]
# The other bases code catches them by (e.g. ``except ValueError``) are kept.
OTHER_BASES = {
    ConfigError: ValueError,
    DataError: ValueError,
    ModelError: ValueError,
    TrainingError: RuntimeError,
    RewardError: ValueError,
    JudgeError: ValueError,
    ScoreError: ValueError,
}


def _make(cls: type[Exception]) -> Exception:
    if cls is DataError:
        return DataError(RowRef("data.jsonl", 3), "bad row", field="prompt")
    return cls(f"{cls.__name__}: what went wrong")


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_user_error_is_a_user_error(cls):
    assert issubclass(cls, UserError)
    if cls in OTHER_BASES:
        assert issubclass(cls, OTHER_BASES[cls])


def test_the_cli_catches_the_base_only():
    assert cli.user_errors() == (UserError,)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_cli_prints_one_line_and_exits_2(cls, monkeypatch, capsys):
    err = _make(cls)

    def fail(args):
        raise err

    monkeypatch.setattr(cli, "cmd_config_show", fail)
    assert cli.main(["config", "show", "whatever.yaml"]) == 2
    out = capsys.readouterr()
    assert out.err == f"alignkit: error: {err}\n" and out.out == ""


def test_cli_real_config_error_is_one_line(tmp_path, capsys):
    missing = tmp_path / "sft" / "missing.yaml"
    assert cli.main(["config", "show", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"alignkit: error: {missing}: config file not found\n"


def test_other_errors_keep_their_traceback(monkeypatch):
    def bug(args):
        raise KeyError("a bug, not the user's mistake")

    monkeypatch.setattr(cli, "cmd_config_show", bug)
    with pytest.raises(KeyError):
        cli.main(["config", "show", "whatever.yaml"])


def test_no_bitsandbytes_hub_kernel_notice(monkeypatch):
    """bitsandbytes 0.50 logs two lines about a Hub kernel when imported (on CPUs with AVX512-BF16, offline): the
    CLI quiets those loggers before any command can import it."""
    import os
    import subprocess
    import sys

    import alignkit.models.hf_logging as hf_logging

    code = "from alignkit.models.hf_logging import quiet_import_notices; quiet_import_notices(); import peft, bitsandbytes"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "kernels-community" not in got.stderr + got.stdout
    calls = []
    monkeypatch.setattr(hf_logging, "quiet_import_notices", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == [1]  # main quiets them first, before parsing and before any command's imports
