"""scripts/make_addition_data.py: the shipped data/addition files are what the script writes, disjoint, well formed."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "addition"


def _script():
    spec = importlib.util.spec_from_file_location("make_addition_data", REPO / "scripts" / "make_addition_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_the_shipped_bytes(tmp_path):
    script = _script()
    assert script.main(["--out", str(tmp_path)]) == 0
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes()
    assert script.main(["--out", str(SHIPPED), "--check"]) == 0


def test_check_notices_a_changed_file(tmp_path):
    script = _script()
    script.main(["--out", str(tmp_path)])
    rows = (tmp_path / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "eval.jsonl").write_text("\n".join(rows[1:]) + "\n", encoding="utf-8")
    assert script.main(["--out", str(tmp_path), "--check"]) == 1


def test_another_seed_gives_another_split():
    script = _script()
    assert script.build(seed=1) != script.build()


def test_splits_are_disjoint_and_cover_every_pair():
    train, evals = _rows(SHIPPED / "train.jsonl"), _rows(SHIPPED / "eval.jsonl")
    assert (len(train), len(evals)) == (9800, 200)
    train_prompts = {r["prompt"] for r in train}
    eval_prompts = {r["prompt"] for r in evals}
    assert not train_prompts & eval_prompts
    assert len(train_prompts | eval_prompts) == 10_000


def test_row_format():
    pattern = re.compile(r"What is (\d{1,2}) \+ (\d{1,2})\?")
    for path in (SHIPPED / "train.jsonl", SHIPPED / "eval.jsonl"):
        for row in _rows(path):
            assert list(row) == ["prompt", "completion"]
            m = pattern.fullmatch(row["prompt"])
            assert m is not None, row
            a, b = int(m.group(1)), int(m.group(2))
            assert str(int(m.group(1))) == m.group(1) and str(int(m.group(2))) == m.group(2)  # no leading zeros
            assert row["completion"] == str(a + b)
    assert _rows(SHIPPED / "eval.jsonl")[0] == {"prompt": "What is 13 + 54?", "completion": "67"}


def test_detected_as_prompt_completion():
    from alignkit.data.errors import RowRef
    from alignkit.data.formats import detect_format

    assert detect_format(_rows(SHIPPED / "train.jsonl")[0], RowRef("train.jsonl", 1)) == "prompt_completion"
