"""Copy PAWS-Wiki (../shared/data/paws/dev.tsv, 8,000 labelled pairs) into train/dev/test splits (gzip JSONL).

The source is one split, and one sentence often appears in several pairs (a source sentence paired with several
word-swapped or paraphrased versions). Pairs that share a sentence, directly or through other pairs, are kept in
the same split (connected components over the sentences), so no test sentence was seen in training. A component
goes to ``test`` when the sha256 of its smallest row id ends in digit 0 (mod 10), ``dev`` when 1, else ``train``
(about 80/10/10). Deterministic: ``python data/paws/build.py`` rewrites the same files.

Rows: ``{"id": int, "sentence1": str, "sentence2": str, "label": 0|1}`` (1: paraphrase).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / ".." / "shared" / "data" / "paws" / "dev.tsv"


def read_tsv(path: Path) -> list[dict]:
    """The PAWS TSV (no header: id, sentence1, sentence2, label) as row dicts; a malformed line is a located error."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 4 or parts[3] not in ("0", "1"):
            raise SystemExit(f"{path}:{n}: expected 4 tab-separated fields ending in label 0 or 1")
        rows.append({"id": int(parts[0]), "sentence1": parts[1], "sentence2": parts[2], "label": int(parts[3])})
    return rows


def components(rows: list[dict]) -> list[int]:
    """For each row, the smallest row id of its connected component (rows joined when they share a sentence)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        a, b = find(r["sentence1"]), find(r["sentence2"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    smallest: dict[str, int] = {}
    for r in rows:
        root = find(r["sentence1"])
        smallest[root] = min(smallest.get(root, r["id"]), r["id"])
    return [smallest[find(r["sentence1"])] for r in rows]


def split_of(component_id: int) -> str:
    digit = int(hashlib.sha256(str(component_id).encode()).hexdigest(), 16) % 10
    return "test" if digit == 0 else "dev" if digit == 1 else "train"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    rows = read_tsv(source)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for row, comp in zip(rows, components(rows)):
        splits[split_of(comp)].append(row)
    for name, part in splits.items():
        # mtime=0: the same bytes on every rebuild
        with open(HERE / f"{name}.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            for r in part:
                f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        pos = sum(r["label"] for r in part)
        print(f"{name}: {len(part)} pairs, {pos} paraphrases")


if __name__ == "__main__":
    main()
