"""`accelerate launch` with an FSDP config and 2 processes on a machine without CUDA: the accelerators come up
without FSDP (here as plain MULTI_CPU; elsewhere as two independent single-process runs), so nothing would be
sharded. The processes now stop before training with one line, and nothing is written."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, write_sft_config


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback happens on machines without CUDA")
def test_accelerate_fsdp_launch_without_cuda_stops_with_one_line(tiny_model_dir, tmp_path):
    cfg = write_sft_config(tmp_path / "sft.yaml", tiny_model_dir, tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/fsdp2.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "-m", "alignkit", "sft", str(cfg),
    ]  # fmt: skip
    proc = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("alignkit: error:")]
    assert errors, proc.stderr[-3000:]  # one line from each process that got to say it (the launcher stops the rest)
    assert all("asked for FSDP" in e or "launched as 2 processes" in e for e in errors), errors
    assert "torchrun --nproc_per_node" in errors[0]
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
