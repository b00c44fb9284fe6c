"""Greedy exact match of a model on the addition eval set (``data/addition/eval.jsonl``).

Each prompt is encoded as one user turn with the chat template and a generation prompt, decoded
greedily (temperature 0) for at most ``--max-new-tokens`` tokens; a reply is correct when its last
integer equals ``a + b`` (``alignkit.rl.verifiable.addition``). "Well formed" means the reply is
only an integer and ended with EOS.

Usage::

    python scripts/addition_probe.py MODEL_DIR [MODEL_DIR ...]      # a model or checkpoint model dirs
    python scripts/addition_probe.py RUN_DIR --checkpoints            # every RUN_DIR/checkpoints/step-*/model
    python scripts/addition_probe.py MODEL_DIR --show 10              # print 10 sample replies
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

DEFAULT_EVAL = Path(__file__).resolve().parent.parent / "data" / "addition" / "eval.jsonl"
_PLAIN_INT = re.compile(r"-?\d+")


def probe(model_dir: str, prompts: list[str], *, max_new_tokens: int = 8, batch_size: int = 64) -> dict:
    """``{"exact": share correct, "well_formed": share that are just an integer then EOS, "replies": [str]}``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data.chat import encode_chat
    from alignkit.models.generation import generate_ids
    from alignkit.rl.verifiable import addition

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    encoded = [encode_chat(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts]
    out = generate_ids(model, tokenizer, encoded, max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    replies = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in out]
    scores = addition(prompts, replies)
    well = [ended and bool(_PLAIN_INT.fullmatch(r.strip())) for r, (_, ended) in zip(replies, out)]
    n = len(prompts)
    return {"exact": sum(scores) / n, "well_formed": sum(well) / n, "replies": replies, "scores": scores}


def _step(path: Path) -> int:
    m = re.search(r"step-(\d+)", str(path))
    return int(m.group(1)) if m else -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="model directories, or run directories with --checkpoints")
    ap.add_argument("--checkpoints", action="store_true", help="probe every checkpoints/step-*/model of each run dir")
    ap.add_argument("--eval", default=str(DEFAULT_EVAL), help="eval JSONL (default: data/addition/eval.jsonl)")
    ap.add_argument("--show", type=int, default=0, help="print this many sample replies per model")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args(argv)

    rows = [json.loads(line) for line in Path(args.eval).read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows]
    dirs: list[Path] = []
    for p in map(Path, args.paths):
        dirs.extend(sorted((p / "checkpoints").glob("step-*/model"), key=_step) if args.checkpoints else [p])
    for d in dirs:
        t0 = time.perf_counter()
        res = probe(str(d), prompts, max_new_tokens=args.max_new_tokens)
        print(
            json.dumps(
                {
                    "model": str(d),
                    "step": _step(d),
                    "exact": round(res["exact"], 3),
                    "well_formed": round(res["well_formed"], 3),
                    "probe_s": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )
        for p, r, s in list(zip(prompts, res["replies"], res["scores"]))[: args.show]:
            print(f"  {p!r} -> {r!r} {'ok' if s else 'WRONG'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
