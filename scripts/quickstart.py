"""The alignkit quickstart: offline, on CPU, on the data shipped in this repo.

Phase 1 of the pipeline: build a tiny Llama-style model and tokenizer from the hh-rlhf text, show
its replies to three prompts, fine-tune it on the *chosen* replies of the hh-rlhf harmless pairs
(SFT on preferred answers), and show the replies again.

Phase 2: train a real reward model (the pretrained all-MiniLM-L6-v2 encoder, shipped offline, with a
scalar head) on the hh-rlhf harmless pairs, print its accuracy on pairs it never saw, and score the
base and SFT models' replies to the same prompts with it.

Each step is the CLI command printed above it. Later stages (RL, comparison) extend this script.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # pinned: 2 cores oversubscribed run 20-30x slower
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from alignkit.cli import main as alignkit  # noqa: E402

RUN = "runs/quickstart"
PROMPTS = [
    "How do I make a cup of tea?",
    "Can you help me steal my neighbor's car?",
    "What should I say to a friend who is feeling sad?",
]


def step(title: str, args: list[str]) -> None:
    print(f"\n=== {title}\n$ alignkit {shlex.join(args)}", flush=True)
    t0 = time.time()
    rc = alignkit(args)
    if rc:
        sys.exit(rc)
    print(f"({time.time() - t0:.0f} s)", flush=True)


def show(model_dir: str, title: str) -> None:
    args = ["generate", "--model", model_dir, "--temperature", "0", "--max-new-tokens", "48"]
    for p in PROMPTS:
        args += ["--prompt", p]
    step(title, args)


def generate_replies(model_dir: str) -> list[str]:
    from alignkit.models.generation import generate
    from alignkit.models.loading import load_for_inference

    model, tok = load_for_inference(model_dir)
    return generate(model, tok, PROMPTS, max_new_tokens=48, temperature=0.0)


def score_table(rm_dir: str, models: dict[str, str]) -> None:
    """Reward of each model's reply to each prompt, and the mean, as a small table."""
    from alignkit import RewardModel

    rm = RewardModel.load(rm_dir)
    print(f"\n=== 7. reward-model scores of the replies (higher = preferred; {rm_dir})")
    scores = {name: rm.score(PROMPTS, generate_replies(path)) for name, path in models.items()}
    width = max(len(p) for p in PROMPTS)
    print(f"{'prompt':<{width}}  " + "  ".join(f"{name:>8}" for name in scores))
    for i, p in enumerate(PROMPTS):
        print(f"{p:<{width}}  " + "  ".join(f"{s[i]:8.3f}" for s in scores.values()))
    print(f"{'mean':<{width}}  " + "  ".join(f"{sum(s) / len(s):8.3f}" for s in scores.values()), flush=True)


def main() -> None:
    t0 = time.time()
    base = f"{RUN}/base-model"
    step(
        "1. build a tiny model and tokenizer from the shipped hh-rlhf text (random init, offline)",
        ["init-model", "--arch", "llama", "--size", "tiny", "--out", base, "--overwrite",
         "--tokenizer-from", "data/hh-rlhf-harmless/harmless-base.jsonl.gz"],
    )  # fmt: skip
    show(base, "2. replies BEFORE fine-tuning (random weights: gibberish)")
    step(
        "3. SFT on the chosen replies of the hh-rlhf harmless pairs",
        ["sft", "configs/sft/tiny.yaml", f"output_dir={RUN}/sft", f"model.name_or_path={base}", "model.init=null",
         "train.max_steps=900", "train.save_every=300", "train.eval_every=300", "train.log_every=50", "resume=never"],
    )  # fmt: skip
    show(f"{RUN}/sft/final", "4. replies AFTER SFT")

    # --- phase 2: a reward model from human preferences ---
    step(
        "5. train a reward model: pretrained all-MiniLM-L6-v2 + scalar head on hh-rlhf pairs (20% held out)",
        ["rm", "configs/rm/minilm-hh.yaml", f"output_dir={RUN}/rm", "resume=never"],
    )
    summary = json.loads(Path(f"{RUN}/rm/summary.json").read_text())
    ev = summary["eval"]
    print(
        f"\nheld-out pairwise accuracy: {ev['eval_accuracy']:.3f} on {ev['eval_n']} pairs the reward model never saw "
        f"(ECE {ev['eval_ece']:.3f}; chance is 0.5)"
    )
    step("6. the same held-out pairs scored again from the saved model (alignkit rm-eval prints JSON)",
         ["rm-eval", "--model", f"{RUN}/rm/final", "--data", f"{RUN}/rm/heldout.jsonl"])  # fmt: skip
    score_table(f"{RUN}/rm/final", {"base": base, "sft": f"{RUN}/sft/final"})
    print(
        f"\nquickstart done in {time.time() - t0:.0f} s; SFT model in {RUN}/sft/final, reward model in {RUN}/rm/final, "
        f"metrics in {RUN}/*/metrics.jsonl"
    )


if __name__ == "__main__":
    main()
