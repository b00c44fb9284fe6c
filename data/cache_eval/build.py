"""Build the semantic-cache evaluation set: ``source.txt`` + ``source_fresh.txt`` .. ``source_fresh4.txt`` ->
``dev.jsonl``, ``source_fresh5.txt`` -> ``test.jsonl`` (+ shipped prompt sets for the easy negatives).

Each output row is one (cached question, query) pair:
``{"id", "group", "topic", "kind", "variant", "cached", "query", "same_answer"}``. The benchmark caches
every distinct ``cached`` question (its answer id is ``group``) and looks up every ``query``:
``same_answer`` true means the cached answer is the right one (a paraphrase); false means the query's
answer is not in the cache (a hard or easy negative). The splits come from source files written at
different times by different writers (see README.md), so no cached question or near-copy of one is in both.

Run from the repository root:  python data/cache_eval/build.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
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


def _si_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in (REPO / "data/self-instruct/seed_tasks.jsonl").open()]


def easy_negative_pairs_dev() -> list[dict]:
    """Unrelated (cached, query) pairs from shipped prompt sets: self-instruct instructions are cached,
    MT-Bench first turns and other self-instruct instructions are asked."""
    si = _si_instructions()
    mt = [json.loads(line)["turns"][0] for line in (REPO / "data/mt-bench/question.jsonl").open()]
    queries = mt + si[120:160]
    return [
        {"group": f"easy-{i:03d}", "topic": "easy", "kind": "easy_negative", "variant": None, "cached": si[i],
         "query": q, "same_answer": False}
        for i, q in enumerate(queries)
    ]  # fmt: skip


def easy_negative_pairs_hh(start: int, n: int = 60) -> list[dict]:
    """Unrelated pairs: distinct short first human turns ``start .. start + n - 1`` of the shipped hh-rlhf
    transcripts (real user questions, often red-team ones) are asked; self-instruct instructions are cached."""
    import gzip

    si = _si_instructions()
    seen: list[str] = []
    with gzip.open(REPO / "data/hh-rlhf-harmless/harmless-base.jsonl.gz", "rt") as f:
        for line in f:
            turn = json.loads(line)["chosen"].split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip()
            if 10 <= len(turn) <= 160 and _norm(turn) not in {_norm(t) for t in seen}:
                seen.append(turn)
            if len(seen) == start + n:
                break
    return [
        {"group": f"easy-hh-{i:03d}", "topic": "easy", "kind": "easy_negative", "variant": None, "cached": si[i - start],
         "query": q, "same_answer": False}
        for i, q in enumerate(seen) if i >= start
    ]  # fmt: skip


def group_rows(groups: list[dict], prefix: str = "") -> list[dict]:
    """One row per paraphrase and hard negative of each group; group ids ``{prefix}{topic}-{n:03d}``."""
    rows: list[dict] = []
    counters: dict[str, int] = {}
    for g in groups:
        counters[g["topic"]] = counters.get(g["topic"], 0) + 1
        gid = f"{prefix}{g['topic']}-{counters[g['topic']]:03d}"
        pairs = [("paraphrase", None, q, True) for q in g["paraphrases"]]
        pairs += [("hard_negative", v, q, False) for v, q in g["negatives"]]
        for j, (kind, variant, q, same) in enumerate(pairs):
            rows.append({"id": f"{gid}-{j}", "group": gid, "topic": g["topic"], "kind": kind,
                         "variant": variant, "cached": g["question"], "query": q, "same_answer": same})  # fmt: skip
    return rows


def build() -> dict[str, list[dict]]:
    """dev: every group of ``source.txt`` and ``source_fresh.txt`` .. ``source_fresh4.txt`` (the rules and the
    default threshold were chosen on them), MT-Bench / self-instruct and hh-rlhf easy negatives (first turns
    0-269). test: every group of ``source_fresh5.txt`` (written last, by another writer who saw neither the rules
    nor any result) and the next 90 hh-rlhf easy negatives."""
    rows = {
        "dev": group_rows(parse_source((HERE / "source.txt").read_text()))
        + group_rows(parse_source((HERE / "source_fresh.txt").read_text()), prefix="fresh-")
        + group_rows(parse_source((HERE / "source_fresh2.txt").read_text()), prefix="fresh2-")
        + group_rows(parse_source((HERE / "source_fresh3.txt").read_text()), prefix="fresh3-")
        + group_rows(parse_source((HERE / "source_fresh4.txt").read_text()), prefix="fresh4-")
        + [
            {"id": f"{p['group']}-0", **p}
            for p in easy_negative_pairs_dev()
            + easy_negative_pairs_hh(0, 120)
            + easy_negative_pairs_hh(120, 60)
            + easy_negative_pairs_hh(180, 90)
        ],
        "test": group_rows(parse_source((HERE / "source_fresh5.txt").read_text()), prefix="fresh5-")
        + [{"id": f"{p['group']}-0", **p} for p in easy_negative_pairs_hh(270, 90)],
    }
    for split, split_rows in rows.items():  # an hh-rlhf prompt that is also a written question is not "unrelated"
        written = {_norm(r["query"]) for r in split_rows if r["kind"] != "easy_negative"}
        rows[split] = [r for r in split_rows if r["kind"] != "easy_negative" or _norm(r["query"]) not in written]
    for split, split_rows in rows.items():
        cached = {_norm(r["cached"]) for r in split_rows}
        clash = cached.intersection(_norm(r["query"]) for r in split_rows)
        if clash:
            raise ValueError(f"{split}: queries that are also cached questions (their answer would be in the cache): "
                             f"{sorted(clash)[:5]}")  # fmt: skip
    for split, split_rows in rows.items():
        queries = [_norm(r["query"]) for r in split_rows]
        if len(set(queries)) != len(queries):
            raise ValueError(f"{split}: a query appears twice")
    fresh = {_norm(r["cached"]) for r in rows["test"] if r["kind"] != "easy_negative"}
    if fresh & {_norm(r["cached"]) for r in rows["dev"]}:
        raise ValueError("a fresh cached question is also a dev cached question")
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
