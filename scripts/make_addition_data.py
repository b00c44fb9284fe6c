"""Write the two-digit addition data set: ``data/addition/{train,eval}.jsonl``.

Every pair ``(a, b)`` with ``0 <= a, b <= 99`` (10,000 pairs) becomes one prompt-completion row
``{"prompt": "What is {a} + {b}?", "completion": "{a + b}"}``. A seeded shuffle puts the first
``--eval-size`` pairs (default 200) in ``eval.jsonl`` and the other 9,800 in ``train.jsonl``, so the
two sets are disjoint and the output is byte-identical for a given seed.

Usage::

    python scripts/make_addition_data.py                 # (re)write data/addition/
    python scripts/make_addition_data.py --check         # exit 1 if the files differ from a fresh run
    python scripts/make_addition_data.py --out DIR       # write elsewhere
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

MAX_OPERAND = 99
DEFAULT_SEED = 1234
DEFAULT_EVAL_SIZE = 200
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "addition"


def prompt_for(a: int, b: int) -> str:
    """The prompt text for ``a + b``: exactly ``What is {a} + {b}?``."""
    return f"What is {a} + {b}?"


def make_splits(seed: int = DEFAULT_SEED, eval_size: int = DEFAULT_EVAL_SIZE) -> tuple[list[dict], list[dict]]:
    """``(train_rows, eval_rows)``: all 10,000 pairs, shuffled with ``random.Random(seed)``.

    The first ``eval_size`` shuffled pairs are the eval rows, the rest the train rows; each row is
    ``{"prompt": str, "completion": str}``.
    """
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    if not 0 < eval_size < len(pairs):
        raise ValueError(f"eval_size must be between 1 and {len(pairs) - 1}, got {eval_size}")
    random.Random(seed).shuffle(pairs)
    rows = [{"prompt": prompt_for(a, b), "completion": str(a + b)} for a, b in pairs]
    return rows[eval_size:], rows[:eval_size]


def render(rows: list[dict]) -> bytes:
    """JSONL bytes: one compact JSON object a line, keys in order prompt, completion."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def build(seed: int = DEFAULT_SEED, eval_size: int = DEFAULT_EVAL_SIZE) -> dict[str, bytes]:
    """File name -> file bytes for ``train.jsonl`` and ``eval.jsonl``."""
    train, evals = make_splits(seed, eval_size)
    return {"train.jsonl": render(train), "eval.jsonl": render(evals)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: data/addition)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--eval-size", type=int, default=DEFAULT_EVAL_SIZE)
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = ap.parse_args(argv)
    files = build(args.seed, args.eval_size)
    if args.check:
        stale = [n for n, data in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != data]
        if stale:
            print(f"{args.out}: {', '.join(stale)} differ from a fresh run (rerun without --check)", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    print(f"wrote {', '.join(str(args.out / n) for n in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
