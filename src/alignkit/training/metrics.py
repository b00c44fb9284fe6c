"""Metrics to ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard when installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alignkit.io_atomic import atomic_file


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    """Appends rows to ``metrics.jsonl``; on resume, rows after the resumed step are dropped first so the
    file reads as one uninterrupted run."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if row.get("step", 0) <= step:
                kept.append(line)
        with atomic_file(self.path) as tmp:
            tmp.write_text("".join(k + "\n" for k in kept))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _clean(v) for k, v in row.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = row.get("step", 0)
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class StepSums:
    """Named float64 sums over a step's units, reduced across processes in one call."""

    def __init__(self):
        self.values: dict = {}  # name -> 0-d float64 tensor on the values' device

    def add(self, name: str, value) -> None:
        """Add ``value.sum()`` (a tensor; detached) without a device sync."""
        v = value.detach().double().sum()
        self.values[name] = self.values[name] + v if name in self.values else v

    def reduce(self, accelerator) -> dict[str, float]:
        import torch

        names = list(self.values)
        total = accelerator.reduce(torch.stack([self.values[k].to(accelerator.device) for k in names]), "sum")
        return dict(zip(names, total.tolist()))


class Throughput:
    """Achieved TFLOP/s (and MFU when the device's peak is known) per step, and over the run.

    ``step(flops, seconds)`` takes a step's model FLOPs, summed over all processes
    (``alignkit.training.flops``), and its wall time; it returns the row entries ``tflops`` and, with a
    peak, ``mfu`` = tflops / (peak_tflops × devices). ``summary()`` gives the same over every step after
    the first one this process ran (which carries the warm-up: allocator, kernels, lazy init), as total
    FLOPs over total time; with a single step, that step.
    """

    def __init__(self, peak_tflops: float | None, devices: int = 1):
        self.peak_tflops, self.devices = peak_tflops, devices
        self.steps: list[tuple[float, float]] = []  # (flops, seconds) per step, in order

    def step(self, flops: float, seconds: float) -> dict[str, float]:
        from alignkit.training.flops import achieved

        self.steps.append((flops, seconds))
        return achieved(flops, seconds, self.peak_tflops, self.devices)

    def summary(self) -> dict:
        from alignkit.training.flops import achieved

        counted = self.steps[1:] or self.steps
        out: dict = {"peak_tflops": self.peak_tflops, "steps_counted": len(counted), "tflops": None, "mfu": None}
        if counted:
            out.update(achieved(sum(f for f, _ in counted), sum(s for _, s in counted), self.peak_tflops, self.devices))
        return out
