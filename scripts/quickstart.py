"""The alignkit quickstart: offline, on CPU, on the data shipped in this repo.

Phase 1 of the pipeline: build a tiny Llama-style model and tokenizer from the hh-rlhf text, show
its replies to three prompts, fine-tune it on the *chosen* replies of the hh-rlhf harmless pairs
(SFT on preferred answers), and show the replies again. Each step is the CLI command printed above it.
Later stages (reward model, RL, comparison) extend this same script.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

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
    print(f"\nquickstart done in {time.time() - t0:.0f} s; metrics in {RUN}/sft/metrics.jsonl, model in {RUN}/sft/final")


if __name__ == "__main__":
    main()
