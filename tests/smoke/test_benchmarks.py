"""Every benchmark runs end to end in its ``--smoke`` mode and writes a JSON report with the keys and finite figures
that docs/benchmarks.md is built from, so that no benchmark can silently rot.

Each runs as the documented command (``python -m benchmarks.NAME --smoke``) in a subprocess, offline, one thread,
its work folder and report under ``tmp_path``. Smoke figures mean nothing (2 steps of a tiny model); only the
shape of the report and the finiteness of the numbers are checked.

The TRL side runs too, wherever the benchmark compares with TRL: SFT (padded and padding-free ``SFTTrainer``),
``RewardTrainer``, ``DPOTrainer`` and the experimental ``ORPOTrainer``, ``GRPOTrainer`` (and the GRPO
identical-rollout loss check). Exception: PPO's TRL runs need the separate TRL 1.12 venv (``.venv-trl112``, see
benchmarks/ppo_vs_trl.py); without it only alignkit's PPO run is checked.

A trainer comparison's smoke mode runs every distinct code path once: 2 optimizer steps (1 warm-up + 1 timed, the
fewest the timing windows allow), the smallest data (2 rows or pairs per step), one repeat, the matmul peak at one
small size, no import-memory probe children (``import_floor_rss_mib`` keeps its keys, each None), and its runs two
at a time (each its own one-thread process). Runs that are another run with one setting changed, through the same
benchmark code, are left out: SFT's ``alignkit-packed`` (``data.packing=true``), DPO's ``alignkit-dpo-copy`` and
``trl-dpo-copy`` (the ``-precompute`` runs with the reference pass off), and PPO's ``alignkit-shared-base``
(``memory: shared-base`` with LoRA; not asked for here).

Time on this 2-core machine (one thread each): matmul_peak ~2 s, plan_vs_measured ~10 s, rag_retrieval ~14 s,
rag_pdf ~21 s, semantic_cache ~23 s (latency at 1k entries; the quality sweep, which embeds every cache_eval and
PAWS question, is skipped). A trainer comparison's time is nearly all process start (imports of torch +
transformers (+ TRL), the tiny model built or loaded: ~9-12 s a process): sft_vs_trl ~29 s (the launcher builds
the data, then 3 runs), rm_vs_trl ~19 s (prepare, then 2 runs), ppo_vs_trl ~18 s (prepare, 1 alignkit run),
grpo_vs_trl ~29 s (prepare, then 2 runs and the loss check) and dpo_vs_trl ~39 s (prepare, then 4 runs): ~135 s
together (~150 s with other work on the machine); the whole file ~3.5 min.
"""

from __future__ import annotations

import json
import math
import subprocess

from benchmarks.harness import child_env, module_cmd

from tests.conftest import REPO

TRL_PPO_PYTHON = REPO / ".venv-trl112" / "bin" / "python"


def run_benchmark(name: str, tmp_path, *args: str, out_flag: str = "--out", work: bool = True) -> object:
    """``python -m benchmarks.<name> --smoke`` with its report (and work folder) under ``tmp_path``; the report."""
    out = tmp_path / f"{name}.json"
    cmd = module_cmd(f"benchmarks.{name}", "--smoke", out_flag, str(out), *args)
    if work:
        cmd += ["--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(1), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


def finite(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def assert_run(r: dict, rate: str) -> None:
    """A training run's result: its headline rate, time and peak RSS are finite and positive, every loss finite."""
    for key in (rate, "timed_seconds", "peak_rss_mib", "process_seconds"):
        assert finite(r[key]) and r[key] > 0, (r.get("name", ""), key, r[key])
    assert r["losses"] and all(finite(x) for x in r["losses"]), r["losses"]


# ------------------------------------------------------------------------------------------ light


def test_matmul_peak(tmp_path):
    doc = run_benchmark("matmul_peak", tmp_path, "--threads", "1", work=False)
    assert set(doc) >= {"device", "device_name", "threads", "torch", "peak_tflops", "by_size"}
    assert doc["threads"] == 1 and list(doc["by_size"]["fp32"]) == ["256"]
    assert finite(doc["peak_tflops"]["fp32"]) and doc["peak_tflops"]["fp32"] > 0


def test_plan_vs_measured(tmp_path):
    rows = run_benchmark("plan_vs_measured", tmp_path, out_flag="--json", work=False)
    assert [(r["size"], r["finetune"], r["optimizer"]) for r in rows] == [("tiny", "full", "adamw"), ("tiny", "lora", "adamw")]
    for r in rows:
        for part in ("weights", "gradients", "optimizer"):
            assert finite(r[f"{part}_measured"]) and r[f"{part}_measured"] > 0 and finite(r[f"{part}_plan"])


def test_rag_retrieval(tmp_path):
    doc = run_benchmark("rag_retrieval", tmp_path)
    assert doc["docs"] == "data/d2l/chapter_installation" and doc["files"] >= 1 and doc["chunks"] >= 1
    assert doc["reindex_chunks_added"] == 0  # the unchanged corpus is not embedded again
    for key in ("index_build_s", "chunks_per_s", "reindex_unchanged_s", "embedder_load_s"):
        assert finite(doc[key]), key
    for name in ("top-k", "mmr"):
        assert finite(doc["query_ms_median"][name])
        for level in ("section", "file"):
            r = doc["results"][name][level]
            assert all(0 <= r[k] <= 1 for k in ("recall@1", "recall@5", "mrr@10"))
            assert len(r["first_rank"]) == doc["questions"]


def test_rag_pdf(tmp_path):
    doc = run_benchmark("rag_pdf", tmp_path)
    assert doc["pdf"] == "data/d2l_pdf/d2l_mlp_chapter.pdf" and doc["pages"] == 22 and doc["chunks"] >= 1
    assert doc["questions"] == 3 and doc["reindex_chunks_added"] == 0
    for key in ("extract_pages_per_s", "index_pages_per_s", "chunks_per_s", "index_build_s", "query_ms_median"):
        assert finite(doc[key]) and doc[key] > 0, key
    r = doc["results"]
    assert all(0 <= r[k] <= 1 for k in ("recall@1", "recall@5", "mrr@10")) and len(r["first_rank"]) == 3
    assert all(c is None or " page" in c for c in doc["top1_citations"])  # PDF chunks are cited with their pages


def test_semantic_cache(tmp_path):
    doc = run_benchmark("semantic_cache", tmp_path, "--threads", "1")
    assert "quality" not in doc and set(doc["latency"]) == {"1000"}
    lat = doc["latency"]["1000"]
    for key in ("get_with_embed", "get_no_embed"):
        assert finite(lat[key]["p99_ms"]) and lat[key]["p99_ms"] > 0, key


# ------------------------------------------------------------------------------------------ trainer comparisons (~135 s)


def test_sft_vs_trl(tmp_path):
    doc = run_benchmark("sft_vs_trl", tmp_path, "--threads", "1")
    assert set(doc) >= {"benchmark", "setup", "results", "import_floor_rss_mib", "ratios", "goals", "matmul_peak"}
    assert set(doc["results"]) == {"alignkit", "trl", "trl-padding-free"}  # no alignkit-packed run in smoke mode
    for r in doc["results"].values():
        assert_run(r, "tokens_per_second")
        assert len(r["losses"]) == 2
        assert finite(r["mfu"]) and r["mfu"] > 0
    assert all(doc["same_batches_as_planned"].values())  # both frameworks saw the planned batches
    for key in (
        "alignkit_over_trl_tokens_per_second",
        "alignkit_over_trl_end_to_end_tokens_per_second",
        "alignkit_over_trl_peak_rss",
    ):
        assert finite(doc["ratios"][key]), key
    for key in (  # CPU; no packed run
        "alignkit_over_trl_peak_cuda_memory",
        "alignkit_packed_over_unpacked_tokens_per_second",
        "alignkit_packed_over_trl_padding_free_tokens_per_second",
    ):
        assert doc["ratios"][key] is None, key
    assert len(doc["goals"]) == 3 and all(isinstance(v, bool) for v in doc["goals"].values())
    assert doc["import_floor_rss_mib"] == {"alignkit": None, "trl": None}  # the probes are skipped in smoke mode


def test_rm_vs_trl(tmp_path):
    doc = run_benchmark("rm_vs_trl", tmp_path, "--threads", "1")
    assert set(doc) >= {"setup", "results", "import_floor_rss_mib", "ratios", "goals", "checks", "markdown"}
    assert set(doc["results"]) == {"alignkit", "trl"}
    for r in doc["results"].values():
        assert_run(r, "pairs_per_second")
        assert len(r["losses"]) == 2
    assert all(finite(x) for x in doc["ratios"].values()) and len(doc["ratios"]) == 3
    assert doc["import_floor_rss_mib"] == {"alignkit": None, "trl": None}  # the probes are skipped in smoke mode
    assert doc["checks"]["same_token_ids"] is True
    assert "| alignkit / TRL |" in doc["markdown"]


def test_dpo_vs_trl(tmp_path):
    doc = run_benchmark("dpo_vs_trl", tmp_path, "--threads", "1")
    assert set(doc) >= {"setup", "import_floor_rss_mib", "modes", "goals", "markdown", "matmul_peak", "mfu"}
    assert set(doc["modes"]) == {"dpo", "orpo"}
    assert set(doc["modes"]["dpo"]["results"]) == {"alignkit-dpo-precompute", "trl-dpo-precompute"}  # no -copy runs
    assert set(doc["modes"]["orpo"]["results"]) == {"alignkit-orpo", "trl-orpo"}
    for mode in doc["modes"].values():
        for r in mode["results"].values():
            assert_run(r, "pairs_per_second")
            assert len(r["losses"]) == 2
        assert mode["ratios"] and all(finite(x) for x in mode["ratios"].values())
        assert all(isinstance(v, bool) for v in mode["goals"].values())
        assert mode["loss_checks"]  # every alignkit run was compared with the TRL run of its mode
    assert set(doc["mfu"]) == {"alignkit-dpo-precompute", "trl-dpo-precompute", "alignkit-orpo", "trl-orpo"}
    assert all(finite(m["tflops"]) for m in doc["mfu"].values())
    assert doc["import_floor_rss_mib"] == {"alignkit": None, "trl-dpo": None, "trl-orpo": None}  # probes skipped


def test_grpo_vs_trl(tmp_path):
    doc = run_benchmark("grpo_vs_trl", tmp_path, "--threads", "1")
    assert set(doc) >= {"setup", "results", "loss_check", "ratios", "goals"}
    assert set(doc["results"]) == {"trl", "alignkit"}
    for r in doc["results"].values():
        assert finite(r["tokens_per_second"]) and r["tokens_per_second"] > 0
        assert finite(r["peak_rss_mib"]) and r["prompt_tokens_as_planned"] is True
    assert finite(doc["ratios"]["tokens/s alignkit / TRL"]) and finite(doc["ratios"]["peak RSS alignkit / TRL"])
    assert finite(doc["loss_check"]["loss_abs_diff"])


def test_ppo_vs_trl(tmp_path):
    runs = ["alignkit-separate"]  # shared-base is the same alignkit `ppo` run with memory: shared-base and LoRA
    if TRL_PPO_PYTHON.exists():
        runs += ["trl-full", "trl-lora"]
    doc = run_benchmark("ppo_vs_trl", tmp_path, "--threads", "1", "--runs", *runs)
    assert set(doc["results"]) == set(runs)
    assert "load_prompts gives the same messages and ids" in doc["checks"]["alignkit_ids"], doc["checks"]["alignkit_ids"]
    assert set(doc["import_floor_rss_mib"]) == {r.split("-")[0] for r in runs}
    assert all(v is None for v in doc["import_floor_rss_mib"].values())  # the probes are skipped in smoke mode
    for r in doc["results"].values():
        assert finite(r["seconds_per_step"]) and r["seconds_per_step"] > 0 and finite(r["peak_rss_mib"])
        assert len(r["step_seconds"]) == 2
