"""train.optimizer: bitsandbytes' 8-bit AdamW trains on this CPU; paged optimizers stop with a one-line error
naming the option and what to use instead (bitsandbytes itself would warn and quietly run unpaged)."""

import json

import pytest
import torch

from alignkit.errors import UserError
from alignkit.training.optim import OptimizerError, build_optimizer, check_optimizer_device

pytest.importorskip("bitsandbytes")


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))
    x = torch.randn(256, 64, generator=g)
    y = torch.sin(x[:, :1] * 2)
    return model, x, y


def test_adamw_8bit_trains_on_cpu_with_8bit_states():
    torch.manual_seed(0)
    model, x, y = _regression()
    opt = build_optimizer(model, learning_rate=3e-3, weight_decay=0.0, optimizer="adamw_8bit")
    assert type(opt).__name__ == "AdamW8bit"
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.5 * first
    big = model[0].weight  # 64 x 128 = 8192 values >= 4096: 8-bit states
    assert opt.state[big]["state1"].dtype == torch.uint8 and opt.state[big]["state2"].dtype == torch.uint8
    small = model[2].weight  # 128 values < 4096: bitsandbytes keeps fp32 states
    assert opt.state[small]["state1"].dtype == torch.float32


@pytest.mark.parametrize(("option", "instead"), [("paged_adamw", "adamw"), ("paged_adamw_8bit", "adamw_8bit")])
def test_paged_optimizers_refuse_cpu(option, instead):
    model, _, _ = _regression()
    with pytest.raises(OptimizerError) as err:
        build_optimizer(model, learning_rate=1e-3, weight_decay=0.0, optimizer=option)
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg
    assert f"train.optimizer {option}" in msg and "CUDA" in msg and msg.endswith(f"train.optimizer={instead}")


def test_adamw_default_is_torch():
    model, _, _ = _regression()
    assert type(build_optimizer(model, learning_rate=1e-3, weight_decay=0.0)) is torch.optim.AdamW
    check_optimizer_device("adamw", "cpu")  # no error
    with pytest.raises(OptimizerError, match="unknown"):
        check_optimizer_device("sgd", "cpu")


def test_sft_with_adamw_8bit_runs_and_cli_reports_paged_error(tiny_model_dir, tmp_path, capsys):
    from alignkit.cli import main
    from tests.conftest import write_sft_config

    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"optimizer": "adamw_8bit"})
    assert main(["sft", str(cfg)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)

    cfg = write_sft_config(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "paged", train={"optimizer": "paged_adamw_8bit"})
    assert main(["sft", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("alignkit: error: train.optimizer paged_adamw_8bit needs a CUDA GPU")
