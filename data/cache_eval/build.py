"""Build the semantic-cache evaluation set: ``source.txt`` (+ two shipped prompt sets) -> ``dev.jsonl``, ``test.jsonl``.

Each output row is one (cached question, query) pair:
``{"id", "group", "topic", "kind", "variant", "cached", "query", "same_answer"}``. The benchmark caches
every distinct ``cached`` question (its answer id is ``group``) and looks up every ``query``:
``same_answer`` true means the cached answer is the right one (a paraphrase); false means the query's
answer is not in the cache (a hard or easy negative). Groups, not pairs, are split between dev and test
(stratified by topic, fixed seed), so no cached question or near-copy of one is in both splits.

Run from the repository root:  python data/cache_eval/build.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SEED = 20240611
VARIANTS = {"number", "entity", "negation", "unit", "word", "antonym", "direction", "scope"}


def parse_source(text: str) -> list[dict]:
    """Groups of the hand-written source: ``{"topic", "question", "paraphrases": [...], "negatives": [(variant, q)]}``."""
    groups: list[dict] = []
    topic, cur = None, None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("## "):
            topic, cur = line[3:].strip(), None
            continue
        if not line or line.startswith("#"):
            cur = None if not line else cur
            continue
        tag, _, rest = line.partition(" ")
        if tag == "Q":
            cur = {"topic": topic, "question": rest.strip(), "paraphrases": [], "negatives": []}
            groups.append(cur)
        elif tag == "P" and cur:
            cur["paraphrases"].append(rest.strip())
        elif tag == "N" and cur:
            variant, _, q = rest.partition("|")
            if variant.strip() not in VARIANTS:
                raise ValueError(f"source.txt:{n}: unknown variant {variant.strip()!r}")
            cur["negatives"].append((variant.strip(), q.strip()))
        else:
            raise ValueError(f"source.txt:{n}: cannot parse {line!r}")
    return groups


def _norm(q: str) -> str:
    return re.sub(r"\W+", " ", q.casefold()).strip()


def easy_negative_pairs() -> list[dict]:
    """Unrelated (cached, query) pairs from shipped prompt sets: self-instruct instructions are cached,
    MT-Bench first turns and other self-instruct instructions are asked."""
    si = [json.loads(line)["instruction"] for line in (REPO / "data/self-instruct/seed_tasks.jsonl").open()]
    mt = [json.loads(line)["turns"][0] for line in (REPO / "data/mt-bench/question.jsonl").open()]
    queries = mt + si[120:160]
    return [
        {"group": f"easy-{i:03d}", "topic": "easy", "kind": "easy_negative", "variant": None, "cached": si[i],
         "query": q, "same_answer": False}
        for i, q in enumerate(queries)
    ]  # fmt: skip


def build() -> dict[str, list[dict]]:
    groups = parse_source((HERE / "source.txt").read_text())
    rng = random.Random(SEED)
    split_of: dict[int, str] = {}
    for topic in sorted({g["topic"] for g in groups}):
        idx = [i for i, g in enumerate(groups) if g["topic"] == topic]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            split_of[i] = "dev" if j % 2 == 0 else "test"
    rows: dict[str, list[dict]] = {"dev": [], "test": []}
    counters: dict[str, int] = {}
    for i, g in enumerate(groups):
        counters[g["topic"]] = counters.get(g["topic"], 0) + 1
        gid = f"{g['topic']}-{counters[g['topic']]:03d}"
        pairs = [("paraphrase", None, q, True) for q in g["paraphrases"]]
        pairs += [("hard_negative", v, q, False) for v, q in g["negatives"]]
        for j, (kind, variant, q, same) in enumerate(pairs):
            rows[split_of[i]].append({"id": f"{gid}-{j}", "group": gid, "topic": g["topic"], "kind": kind,
                                      "variant": variant, "cached": g["question"], "query": q, "same_answer": same})  # fmt: skip
    for j, pair in enumerate(easy_negative_pairs()):
        split = "dev" if j % 2 == 0 else "test"
        rows[split].append({"id": f"{pair['group']}-0", **pair})
    cached = {_norm(r["cached"]) for split in rows.values() for r in split}
    queries = [_norm(r["query"]) for split in rows.values() for r in split]
    clash = cached.intersection(queries)
    if clash:
        raise ValueError(f"queries that are also cached questions (their answer would be in the cache): {sorted(clash)[:5]}")
    if len(set(queries)) != len(queries):
        raise ValueError("a query appears twice")
    return rows


def main() -> None:
    rows = build()
    for split, split_rows in rows.items():
        (HERE / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows))
        kinds: dict[str, int] = {}
        for r in split_rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        print(f"{split}: {len(split_rows)} pairs, {len({r['cached'] for r in split_rows})} cached questions, {kinds}")


if __name__ == "__main__":
    main()
