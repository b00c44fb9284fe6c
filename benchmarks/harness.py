"""The plumbing every benchmark shares: child processes measured alone, timing windows, repeats, versions, the
matmul peak, the JSON report and the markdown / "alignkit vs peer" tables.

Standard library only at import time: the child processes import this module too, among them the PPO
benchmark's TRL child, which runs in another virtual environment without alignkit.

Benchmarks run as modules from the repository root (``python -m benchmarks.sft_vs_trl``); a benchmark starts
its own children with :func:`module_cmd`, so they import the same package the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH_RLHF = REPO / "data" / "hh-rlhf-harmless" / "harmless-base.jsonl.gz"
PACKAGES = ("alignkit", "torch", "transformers", "trl", "accelerate", "datasets")

# ------------------------------------------------------------------------------------------ child processes


def child_env(threads: int, device: str = "cpu") -> dict[str, str]:
    """A child's environment: pinned threads, offline; ``device`` cpu hides any GPU."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def module_cmd(module: str, *args: str, python: str | os.PathLike = sys.executable) -> list[str]:
    """The command that runs benchmark ``module`` (e.g. ``"benchmarks.sft_vs_trl"``) with ``args`` in a child.

    :func:`run_child` starts it in the repository root, so ``-m`` finds the ``benchmarks`` package there.
    """
    return [str(python), "-m", module, *args]


def run_child(cmd: list[str], *, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` in the repository root with output to ``log``; ``(peak RSS MiB, wall seconds)`` of that process alone.

    ``os.wait4`` returns the rusage of exactly this child (and any children it waited for), unlike
    ``RUSAGE_CHILDREN``, which is the maximum over every child reaped so far. A failed child ends the
    benchmark with its last 40 log lines.
    """
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); last lines of {log}:\n{tail}")
    return usage.ru_maxrss / 1024.0, wall  # ru_maxrss is in KiB on Linux


def launcher_peak_rss_mib() -> float:
    """This process's own peak RSS (MiB): on Linux a child's ``ru_maxrss`` starts at its parent's RSS when
    spawned, so no child can read lower than this."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_role(a, *, trl_child=None, probes: dict | None = None, prepare=None) -> bool:
    """Do a child process's work when ``a`` (the parsed arguments) says this process is one: ``--run-trl SPEC``
    (``trl_child(SPEC)``), ``--probe-imports NAME`` (import ``probes[NAME]``) or ``--prepare`` (``prepare(a)``).
    Returns whether it was a child (then the benchmark's ``main`` returns 0)."""
    if trl_child is not None and getattr(a, "run_trl", None):
        trl_child(a.run_trl)
    elif probes is not None and getattr(a, "probe_imports", None):
        probe_imports(probes[a.probe_imports])
    elif prepare is not None and getattr(a, "prepare", False):
        prepare(a)
    else:
        return False
    return True


def import_floors(
    module: str,
    names: Iterable[str],
    *,
    work: Path,
    smoke: bool,
    env: Callable[[str], dict[str, str]],
    python: Callable[[str], str] = lambda name: sys.executable,
) -> dict[str, float | None]:
    """``{name: peak RSS (MiB) of a child that only imports what run ``name`` imports}`` (``python -m module
    --probe-imports NAME`` with ``env(name)``, log ``work/probe-NAME.log``): the floor under each run's peak.
    ``smoke``: no probe children (they only add a memory figure), None each."""
    if smoke:
        return {name: None for name in names}
    return {
        name: run_child(
            module_cmd(module, "--probe-imports", name, python=python(name)), env=env(name), log=work / f"probe-{name}.log"
        )[0]
        for name in names
    }


def probe_imports(modules: Iterable[str]) -> None:
    """A probe child's whole work: import ``modules`` (what a framework's run imports before it loads anything)."""
    import importlib

    for module in modules:
        importlib.import_module(module)


# ------------------------------------------------------------------------------------------ timing and repeats


def timed_window(steps: int, warmup: int) -> range:
    """1-based optimizer steps that are timed: warmup+1 .. steps."""
    return range(warmup + 1, steps + 1)


SMOKE_WORKERS = 2  # --smoke: runs (child processes) at a time; a smoke run's figures mean nothing anyway


def run_repeats(plan: Sequence[tuple], repeats: int, describe: Callable[[object], str], *, smoke: bool = False) -> dict:
    """Run every ``(key, label, run)`` of ``plan`` ``repeats`` times, interleaved (repeat 1 of each, then 2, ...),
    printing ``[rep/repeats] label: describe(result) (seconds)`` after each; ``{key: [result per repeat]}``.

    ``smoke``: up to :data:`SMOKE_WORKERS` of a repeat's runs at once (smoke mode only: concurrent runs disturb
    each other's timings), each ``run`` in a thread that waits on its own child process; the result keeps the
    plan's order."""
    runs: dict = {}
    for rep in range(repeats):
        jobs = {key: (label, run) for key, label, run in plan}
        done = run_jobs(
            jobs,
            smoke,
            lambda label, r, s, rep=rep: print(f"[{rep + 1}/{repeats}] {label}: {describe(r)} ({s:.0f}s)", flush=True),
        )
        for key, r in done.items():
            runs.setdefault(key, []).append(r)
    return runs


def run_jobs(jobs: dict, smoke: bool, report: Callable[[str, object, float], None]) -> dict:
    """``{key: run()}`` for ``jobs`` ``{key: (label, run)}``, in their order; ``report(label, result, seconds)``
    after each. One at a time; with ``smoke``, up to :data:`SMOKE_WORKERS` at once in threads (for runs that
    each wait on a child process), the first error raised once all have ended."""
    workers = SMOKE_WORKERS if smoke else 1

    def one(label: str, run: Callable[[], object]):
        t = time.perf_counter()
        r = run()
        report(label, r, time.perf_counter() - t)
        return r

    if workers <= 1:
        return {key: one(label, run) for key, (label, run) in jobs.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(one, label, run) for key, (label, run) in jobs.items()}
    return {key: f.result() for key, f in futures.items()}


def median_run(runs: list, key: str, fmt: str, *, upper: bool = False, unit: str = ""):
    """The repeat whose ``key`` is the median ((lower) median, or the upper one with ``upper``), given the highest
    peak RSS of the repeats (and the highest peak CUDA memory when every repeat has one).

    A note on the pick lists every repeat's ``key`` (``format(value, fmt) + unit``).
    """
    ordered = sorted(runs, key=lambda r: getattr(r, key))
    pick = ordered[len(ordered) // 2 if upper else (len(ordered) - 1) // 2]
    if len(runs) > 1:
        pick.notes.append(f"median of {len(runs)} repeats: " + ", ".join(format(getattr(r, key), fmt) + unit for r in runs))
        pick.peak_rss_mib = max(r.peak_rss_mib for r in runs)
        cuda = [getattr(r, "peak_cuda_memory_mib", None) for r in runs]
        if hasattr(pick, "peak_cuda_memory_mib") and all(c is not None for c in cuda):
            pick.peak_cuda_memory_mib = max(cuda)
    return pick


# ------------------------------------------------------------------------------------------ context


def versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (the packages a run's figures depend on)."""
    from importlib.metadata import version

    return {name: version(name) for name in names}


def host() -> str:
    """One line on the host: CPUs visible and the load average now."""
    return f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f} at the end"


def measured_peak(*, peak_tflops: float | None, precision: str, threads: int, device: str = "cpu", smoke: bool = False) -> dict:
    """The matmul peak in ``precision`` on ``device`` (at ``threads`` on CPU): ``peak_tflops`` when given, else
    measured now by :func:`benchmarks.matmul_peak.measure` (``smoke``: one small size, once: a figure that only
    shows the path runs)."""
    if peak_tflops:
        return {"peak_tflops": {precision: peak_tflops}, "threads": threads, "source": "--peak-tflops"}
    from benchmarks.matmul_peak import measure

    if smoke:
        res = measure(threads=threads, dtypes=[precision], sizes=[256], repeats=1, min_seconds=0.05, device=device)
    else:
        sizes = [4096, 8192] if device == "cuda" else [1024, 2048]
        res = measure(threads=threads, dtypes=[precision], sizes=sizes, repeats=5, min_seconds=0.5, device=device)
    res["source"] = "benchmarks/matmul_peak.py, measured after the runs in this process"
    return res


# ------------------------------------------------------------------------------------------ comparison


def ratio(x: float | None, y: float | None) -> float | None:
    """``x / y``, or None when either is missing or zero."""
    return None if not x or not y else x / y


def meets(value: float | None, goal: float, *, at_least: bool) -> bool:
    """Whether a measured ratio meets its goal (``>= goal`` or ``<= goal``); a missing ratio does not."""
    if value is None:
        return False
    return value >= goal if at_least else value <= goal


def print_goals(goals: dict[str, bool], width: int) -> None:
    """``goal: <label> MET | NOT MET``, one line each, labels padded to ``width``."""
    for goal, ok in goals.items():
        print(f"goal: {goal:<{width}} {'MET' if ok else 'NOT MET'}")


def rank_metrics(first_ranks: Sequence[int | None]) -> dict:
    """Retrieval figures from each question's first relevant rank (None: not in the top 10): recall@1, recall@5,
    MRR@10 (a miss counts 0) and the ranks themselves."""
    n = len(first_ranks)
    return {
        "recall@1": sum(1 for r in first_ranks if r is not None and r <= 1) / n,
        "recall@5": sum(1 for r in first_ranks if r is not None and r <= 5) / n,
        "mrr@10": sum(1.0 / r for r in first_ranks if r is not None) / n,
        "first_rank": list(first_ranks),
    }


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    """A markdown table's lines: ``align`` has one letter per column, ``l`` (``---``) or ``r`` (``---:``)."""
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns")
    rule = "|".join("---" if c == "l" else "---:" for c in align)

    def line(cells: Sequence[str]) -> str:
        return "|" + "".join(f" {c} |" if c else " |" for c in cells)  # an empty cell is "| |"

    return [line(header), f"|{rule}|", *(line(r) for r in rows)]


# ------------------------------------------------------------------------------------------ output and smoke mode


def write_report(doc: dict, out: str | os.PathLike) -> Path:
    """Write ``doc`` as indented JSON to ``out`` (folders made) and say where."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def add_smoke_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a check that the benchmark runs, not a measurement: tiny settings, one repeat, output under a new "
        "temporary folder unless --work-dir / --out are given",
    )


def apply_smoke(a: argparse.Namespace, p: argparse.ArgumentParser, settings: dict, *, name: str) -> Path | None:
    """With ``--smoke``: set ``settings`` (dest -> value) on ``a``, point ``work_dir`` and ``out`` (where the
    benchmark has them and they are still at their defaults) into one new temporary folder, and return that
    folder; without it: None, ``a`` untouched."""
    if not getattr(a, "smoke", False):
        return None
    for dest, value in settings.items():
        setattr(a, dest, value)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-smoke-{name}-"))
    for dest, leaf in (("work_dir", "work"), ("out", f"{name}.json")):
        if hasattr(a, dest) and getattr(a, dest) == p.get_default(dest):
            setattr(a, dest, str(tmp / leaf))
    return tmp
