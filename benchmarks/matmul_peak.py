"""Measure this machine's matmul peak (TFLOP/s) with torch: the denominator of MFU (``train.peak_tflops``).

Large square matmuls ``C = A @ B`` (2·n³ FLOPs each) at a pinned thread count, timed in repeats; the peak
is the best repeat (the least disturbed by other work), the median is printed beside it. fp32 always;
bf16 too with ``--dtypes fp32 bf16`` (on CPUs without native bf16 matmul it is slower than fp32, which is
worth knowing before choosing ``mixed_precision: bf16`` there).

The thread count is pinned with ``torch.set_num_threads(--threads)`` (default 1: this project's CPU runs,
benchmarks included, use one thread per process; measure at the thread count the training will use, since
the peak scales with it). On CUDA (``--device cuda``) the thread count does not matter and TF32 stays as
torch leaves it (off for fp32 matmuls unless you turn it on), so the fp32 figure is true fp32.

Run:  OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.matmul_peak [--threads 1] [--dtypes fp32 bf16]
      [--sizes 1024 2048] [--repeats 5] [--device cpu|cuda] [--out runs/bench/matmul_peak.json]
      [--smoke: n=256, one short repeat, a temporary folder: a check that it runs]
Then set ``train.peak_tflops`` to the printed fp32 (or bf16, for bf16 training) peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_matmuls(n: int, dtype: str, *, repeats: int, min_seconds: float, device: str = "cpu") -> list[float]:
    """TFLOP/s of each of ``repeats`` timings of back-to-back (n × n) @ (n × n) matmuls in ``dtype``;
    each timing runs as many matmuls as fill ``min_seconds`` (at least one), after one untimed warm-up."""
    import torch

    dt = getattr(torch, DTYPES[dtype])
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dt)
    out = torch.empty(n, n, device=device, dtype=dt)
    torch.matmul(a, b, out=out)  # warm-up: allocation, kernel choice
    _sync(device)
    t0 = time.perf_counter()
    torch.matmul(a, b, out=out)
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(min_seconds / one))
    rates = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=out)
        _sync(device)
        rates.append(2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e12)
    return rates


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def measure(*, threads: int, dtypes: list[str], sizes: list[int], repeats: int, min_seconds: float, device: str = "cpu") -> dict:
    """The peak per dtype (best TFLOP/s over sizes and repeats) and every size's best and median."""
    import torch

    torch.set_num_threads(threads)
    result: dict = {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "repeats": repeats,
        "peak_tflops": {},
        "by_size": {},
    }
    for dtype in dtypes:
        rows = {}
        for n in sizes:
            rates = time_matmuls(n, dtype, repeats=repeats, min_seconds=min_seconds, device=device)
            rows[str(n)] = {"best_tflops": max(rates), "median_tflops": statistics.median(rates)}
        result["by_size"][dtype] = rows
        result["peak_tflops"][dtype] = max(r["best_tflops"] for r in rows.values())
    return result


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; use the training's count)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32"], help="matmul dtypes to measure")
    p.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048], help="square matmul sizes n")
    p.add_argument("--repeats", type=int, default=5, help="timings per size; the best is the peak")
    p.add_argument("--min-seconds", type=float, default=0.5, help="length of each timing")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--out", default=str(REPO / "runs" / "bench" / "matmul_peak.json"), help="JSON report")
    # imported here: measure() stays loadable from this file alone (benchmarks.harness imports it)
    from benchmarks import harness

    harness.add_smoke_argument(p)
    a = p.parse_args(argv)
    harness.apply_smoke(a, p, {"sizes": [256], "repeats": 1, "min_seconds": 0.05}, name="matmul_peak")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    res = measure(
        threads=a.threads, dtypes=a.dtypes, sizes=a.sizes, repeats=a.repeats, min_seconds=a.min_seconds, device=a.device
    )
    print(f"matmul peak on {res['device_name']} ({res['device']}), {res['threads']} thread(s), torch {res['torch']}:")
    for dtype, rows in res["by_size"].items():
        for n, r in rows.items():
            print(f"  {dtype:>4} n={n:>5}: best {r['best_tflops']:.4f} TFLOP/s, median {r['median_tflops']:.4f}")
        print(f"  {dtype:>4} peak: {res['peak_tflops'][dtype]:.4f} TFLOP/s  -> train.peak_tflops={res['peak_tflops'][dtype]:.4g}")
    from benchmarks import harness

    harness.write_report(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
