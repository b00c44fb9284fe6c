#!/usr/bin/env bash
# The GPU check of issue 18, on one CUDA GPU, in under 8 minutes (each step has its own time limit, 465 s in all):
#   1. every test marked `gpu` (QLoRA on CUDA, bf16 SFT, MFU on CUDA, FSDP2 / ZeRO-3-offload single-GPU memory and
#      sharded checkpoints/resume/final, vLLM rollouts with verified weight pushes for full, LoRA and QLoRA
#      policies, a dead push caught, compare through vLLM, `alignkit plan` against torch.cuda.max_memory_allocated);
#   2. the matmul peak, and the SFT / GRPO / PPO benchmarks with --device cuda (alignkit's runs);
#   3. one JSON of results: $OUT/gpu_check.json (the card, each test's outcome, each benchmark's figures).
#
# usage: bash scripts/gpu_check.sh [OUT_DIR]      (default runs/gpu-check; run from the repository root, with
#        alignkit installed: `make setup`, plus `pip install -e '.[vllm]'` and `pip install deepspeed` for those
#        checks, which are skipped, and say so in the JSON, when the package is missing)
set -uo pipefail
OUT=${1:-runs/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2
  exit 2
fi
"$PY" -c "import torch; print(torch.cuda.get_device_name(0))" > "$OUT/gpu_name.txt"
echo "gpu_check on $(cat "$OUT/gpu_name.txt"), results in $OUT"
export VLLM_ENABLE_V1_MULTIPROCESSING=0 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

step() {  # step NAME SECONDS CMD...: run with a time limit, keep the exit code and the log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((SECONDS - t0))}" > "$OUT/$name.rc.json"
  echo "  $name: exit $rc in $((SECONDS - t0)) s"
}

# 1. the gpu-marked tests (one pytest run; junit XML for the JSON)
step tests 280 "$PY" -m pytest -q --rungpu -m gpu tests -p no:cacheprovider -rs --junitxml="$OUT/tests.xml"

# 2. benchmarks (short settings: a check that they run and what they measure on this card)
step matmul_peak 25 "$PY" -m benchmarks.matmul_peak --device cuda --dtypes fp32 bf16 --sizes 4096 8192 --repeats 3 \
  --out "$OUT/matmul_peak.json"
step sft_bench 60 "$PY" -m benchmarks.sft_vs_trl --device cuda --size small --steps 10 --warmup 2 --repeats 1 \
  --out "$OUT/sft_bench.json"
step grpo_bench 50 "$PY" -m benchmarks.grpo_vs_trl --device cuda --size small --steps 6 --warmup 2 --out "$OUT/grpo_bench.json"
step ppo_bench 50 "$PY" -m benchmarks.ppo_vs_trl --device cuda --size small --runs alignkit-separate alignkit-shared-base \
  --steps 6 --out "$OUT/ppo_bench.json"

# 3. one JSON
"$PY" - "$OUT" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
result = {"gpu": (out / "gpu_name.txt").read_text().strip(), "steps": {}, "tests": [], "benchmarks": {}}
for rc in sorted(out.glob("*.rc.json")):
    result["steps"][rc.name.removesuffix(".rc.json")] = json.loads(rc.read_text())
xml = out / "tests.xml"
if xml.exists():
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, detail = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[kind]
                detail = (node.get("message") or "")[:300]
        result["tests"].append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                                "seconds": float(case.get("time") or 0), "detail": detail})
for name in ("matmul_peak", "sft_bench", "grpo_bench", "ppo_bench"):
    f = out / f"{name}.json"
    result["benchmarks"][name] = json.loads(f.read_text()) if f.exists() else None
counts = {}
for t in result["tests"]:
    counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
result["test_counts"] = counts
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(f"tests: {counts}; wrote {out / 'gpu_check.json'}")
EOF
