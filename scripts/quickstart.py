"""The alignkit quickstart: the whole seed pipeline, offline, on CPU, on the data shipped in this repo.

It runs ``alignkit pipeline configs/pipeline/quickstart.yaml`` (each stage prints what it does):

1. a tiny Llama-style policy and tokenizer built from the hh-rlhf text (random init, offline);
2. SFT on the *chosen* replies of the hh-rlhf harmless pairs;
3. a reward model: the pretrained all-MiniLM-L6-v2 encoder (shipped offline) + a scalar head, trained on the
   preference pairs with 20% held out;
4. PPO against that reward model, with a KL penalty to the SFT model;
5. base vs SFT vs PPO answers to held-out prompts, side by side, scored by the reward model
   (runs/quickstart/compare/compare.jsonl and report.html).

Then it prints the figures the pipeline is judged by. Re-running skips finished stages (delete
runs/quickstart to start over); extra arguments are config overrides, e.g. ``ppo.train.max_steps=10``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # pinned: 2 cores oversubscribed run 20-30x slower
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from alignkit.cli import main as alignkit  # noqa: E402

CONFIG = "configs/pipeline/quickstart.yaml"
RUN = Path("runs/quickstart")


def main(argv: list[str]) -> int:
    t0 = time.time()
    print(f"$ alignkit pipeline {CONFIG} {' '.join(argv)}".rstrip(), flush=True)
    rc = alignkit(["pipeline", CONFIG, *argv])
    if rc:
        return rc
    rm = json.loads((RUN / "rm" / "summary.json").read_text())["eval"]
    ppo = json.loads((RUN / "ppo" / "summary.json").read_text())["last_step"]
    cmp = json.loads((RUN / "compare" / "summary.json").read_text())["models"]
    w = cmp["ppo"]["win_rate_vs"]["sft"]
    print(f"\n=== quickstart figures ({time.time() - t0:.0f} s)")
    kinds = ", ".join(f"{k} {v['accuracy']:.3f} ({v['n']} pairs)" for k, v in rm.get("eval_subsets", {}).items())
    print(f"reward model: held-out pairwise accuracy {rm['eval_accuracy']:.3f} on {rm['eval_n']} pairs (chance 0.5): {kinds}")
    for name in ("base", "sft", "ppo"):
        s = cmp[name]
        print(
            f"{name:>4}: mean reward {s['mean_reward']:+.3f} ± {s['reward_se']:.3f} over {s['n']} held-out prompts, "
            f"mean answer {s['mean_length_tokens']:.1f} tokens; distinct answers {s['distinct_share']:.0%}, "
            f"most frequent answer {s['top_answer_share']:.0%}, length {s['length_ratio']:.2f}x SFT's"
        )
    print(
        f"PPO vs SFT win rate {w['win_rate']:.3f} [95% CI {w['ci_low']:.3f}, {w['ci_high']:.3f}]; "
        f"KL to the SFT model at the last PPO step {ppo['kl']:.2f} nats"
    )
    p, acc = cmp["ppo"], rm.get("eval_subsets", {})
    checks = {
        "reward model helpful accuracy >= 0.55": acc.get("helpful", {}).get("accuracy", 0) >= 0.55,
        "reward model harmless accuracy >= 0.60": acc.get("harmless", {}).get("accuracy", 0) >= 0.60,
        "PPO mean reward > SFT": p["mean_reward"] > cmp["sft"]["mean_reward"],
        "PPO win rate vs SFT >= 0.60": w["win_rate"] >= 0.6,
        "PPO distinct answers >= 70%": p["distinct_share"] >= 0.7,
        "PPO most frequent answer <= 10%": p["top_answer_share"] <= 0.1,
        "PPO length >= 0.5x SFT": p["length_ratio"] >= 0.5,
        "KL to SFT < 10 nats": ppo["kl"] < 10,
    }
    for what, ok in checks.items():
        print(f"  [{'met' if ok else 'NOT met'}] {what}")
    for warning in p.get("warnings", []):
        print(f"  warning (ppo): {warning}")
    print("targets: " + ("all met" if all(checks.values()) else "NOT all met"))
    print(f"report: {RUN / 'compare' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
