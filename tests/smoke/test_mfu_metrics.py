"""tflops / mfu in metrics.jsonl and summary.json of SFT and DPO (model FLOPs: alignkit.training.flops)."""

import json

import pytest

from alignkit.cli import main
from alignkit.training.flops import shape_from_config
from tests.conftest import write_dpo_config, write_sft_config


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def _shape(model_dir):
    from transformers import AutoConfig

    return shape_from_config(AutoConfig.from_pretrained(model_dir))


def _check(out, shape, *, passes: float, max_len: int, peak: float | None):
    """Each step's FLOPs (tflops × step time) lie between passes·2N·tokens and the same plus the attention
    term at the longest sequence: passes is 3 per trained token, +1 per reference forward."""
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        seconds = r["tokens"] / r["tokens_per_second"] if "tokens" in r else None
        assert r["tflops"] > 0
        if seconds is not None:
            flops = r["tflops"] * 1e12 * seconds
            low = passes * 2 * shape.n_params * r["tokens"]
            high = low + passes * 4 * shape.n_layers * shape.attn_dim * max_len * r["tokens"]
            assert low < flops <= high * (1 + 1e-9)
        if peak is None:
            assert "mfu" not in r
        else:
            assert r["mfu"] == pytest.approx(r["tflops"] / peak)
    summary = json.loads((out / "summary.json").read_text())["throughput"]
    assert summary["steps_counted"] == 1 and summary["peak_tflops"] == peak
    assert summary["tflops"] == pytest.approx(rows[1]["tflops"])  # steps after the first: the second
    assert (summary["mfu"] is None) == (peak is None)


@pytest.mark.parametrize("peak", [None, 0.5])
def test_sft_logs_tflops_and_mfu(tiny_model_dir, tmp_path, peak):
    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"peak_tflops": peak} if peak else {})
    assert main(["sft", str(cfg)]) == 0
    _check(out, _shape(tiny_model_dir), passes=3, max_len=128, peak=peak)


def test_dpo_counts_the_reference_forward(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_dpo_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"peak_tflops": 0.5, "max_steps": 2})
    assert main(["dpo", str(cfg)]) == 0
    rows = _rows(out)
    # The reference forward shows in the FLOPs per token against a reference-free (SimPO) run on the same batches.
    out2 = tmp_path / "simpo"
    cfg2 = write_dpo_config(
        tmp_path / "s.yaml", tiny_model_dir, out2, train={"peak_tflops": 0.5, "max_steps": 2}, loss={"type": "simpo"}
    )
    assert main(["dpo", str(cfg2)]) == 0
    rows2 = _rows(out2)
    for r, r2 in zip(rows, rows2):
        flops = r["tflops"] / r["tokens_per_second"]  # FLOPs per token (× 1e-12): same tokens in both runs
        flops2 = r2["tflops"] / r2["tokens_per_second"]
        assert flops / flops2 == pytest.approx(4 / 3)  # policy fwd+bwd + reference fwd vs policy fwd+bwd
        assert r["mfu"] == pytest.approx(r["tflops"] / 0.5)
    assert json.loads((out / "summary.json").read_text())["throughput"]["mfu"] > 0


@pytest.mark.gpu
def test_sft_step_on_cuda_logs_plausible_mfu(tiny_model_dir, tmp_path):
    import importlib.util

    import torch

    assert torch.cuda.is_available(), "--rungpu needs CUDA"
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("matmul_peak", REPO / "benchmarks" / "matmul_peak.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    peak = mp.measure(threads=1, dtypes=["fp32"], sizes=[4096], repeats=3, min_seconds=0.2, device="cuda")["peak_tflops"]["fp32"]
    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"peak_tflops": peak, "max_steps": 2})
    assert main(["sft", str(cfg)]) == 0
    rows = _rows(out)
    assert json.loads((out / "summary.json").read_text())["device"].startswith("cuda")
    for r in rows:
        assert r["tflops"] > 0 and 0 < r["mfu"] < 1, r


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_rl_stages_log_tflops_and_mfu(tiny_sft_dir, tmp_path, stage):
    """PPO and GRPO log tflops (generation + no-gradient passes + trained passes, alignkit.training.flops.
    rl_step_flops) and mfu with a peak, per step and in summary.json."""
    from tests.conftest import write_grpo_config, write_ppo_config

    write = write_grpo_config if stage == "grpo" else write_ppo_config
    out = tmp_path / "run"
    assert main([stage, str(write(tmp_path / "c.yaml", tiny_sft_dir, out, train={"peak_tflops": 0.1}))]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    for r in rows:
        assert r["tflops"] > 0 and r["mfu"] == pytest.approx(r["tflops"] / 0.1)
    summary = json.loads((out / "summary.json").read_text())["throughput"]
    assert summary["peak_tflops"] == 0.1 and summary["tflops"] > 0 and summary["steps_counted"] == 1
