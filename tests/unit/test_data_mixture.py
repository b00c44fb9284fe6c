"""Several training sources: concatenation with per-source names, errors naming the row's own file,
repeat applied after the hold-out, and the config's list form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignkit.config.reward import RewardConfig
from alignkit.data.errors import DataError
from alignkit.data.formats import load_examples
from alignkit.data.mixture import DataSource, as_sources, describe, repeat_by_source


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _pairs(n: int, tag: str) -> list[dict]:
    return [{"prompt": f"{tag} question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]


def test_sources_are_concatenated_and_named(tmp_path):
    a = _jsonl(tmp_path / "harmless.jsonl", _pairs(3, "a"))
    b = _jsonl(tmp_path / "helpful.jsonl.gz".replace(".gz", ""), _pairs(2, "b") + [{**_pairs(1, "c")[0], "subset": "own"}])
    loaded = load_examples(as_sources([a, {"path": b, "name": "help", "repeat": 2}]), fmt="preference")
    assert loaded.rows_read == 6 and len(loaded.examples) == 6 and loaded.format == "preference"
    assert [ex.meta["subset"] for ex in loaded.examples] == ["harmless"] * 3 + ["help", "help", "own"]  # a row's own subset wins
    assert [ex.ref.source for ex in loaded.examples] == [a] * 3 + [b] * 3


def test_per_source_max_rows(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _pairs(5, "a"))
    b = _jsonl(tmp_path / "b.jsonl", _pairs(5, "b"))
    loaded = load_examples([DataSource(a, "a", max_rows=2), DataSource(b, "b")], fmt="preference", max_rows=4)
    assert [ex.ref.source for ex in loaded.examples] == [a] * 2 + [b] * 4  # a source's own limit, else the global one


def test_a_bad_row_names_its_own_file_and_line(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _pairs(2, "a"))
    b = _jsonl(tmp_path / "b.jsonl", _pairs(2, "b") + [{"prompt": "x", "chosen": "same"}])
    with pytest.raises(DataError, match=r"b\.jsonl:3: field 'rejected'"):
        load_examples(as_sources([a, b]), fmt="preference")
    skipped = load_examples(as_sources([a, b]), fmt="preference", on_error="skip")
    assert len(skipped.examples) == 4 and [str(e.ref) for e in skipped.skipped] == [f"{b}:3"]


def test_repeat_after_holdout_and_describe(tmp_path):
    sources = as_sources(["x.jsonl", {"path": "y.jsonl", "repeat": 3}])
    items = [("x.jsonl", 0), ("y.jsonl", 1), ("x.jsonl", 2), ("y.jsonl", 3)]
    got = repeat_by_source(items, sources, lambda it: it[0])
    assert got == [items[0], items[1], items[1], items[1], items[2], items[3], items[3], items[3]]
    assert repeat_by_source(items, "x.jsonl", lambda it: it[0]) is items
    assert describe(sources) == "x.jsonl + y.jsonl (x3)"


def test_a_source_listed_twice_is_an_error():
    with pytest.raises(DataError, match="twice"):
        as_sources(["x.jsonl", {"path": "x.jsonl", "repeat": 2}])


def test_config_list_form():
    base = {"output_dir": "o", "model": {"name_or_path": "m"}}
    one = RewardConfig.model_validate({**base, "data": {"train": "a.jsonl"}})
    assert one.data.train_sources() == "a.jsonl"
    many = RewardConfig.model_validate(
        {**base, "data": {"train": ["data/a.jsonl.gz", {"path": "b.jsonl", "repeat": 3, "name": "helpful"}]}}
    )
    assert many.data.train_sources() == [DataSource("data/a.jsonl.gz", "a"), DataSource("b.jsonl", "helpful", 3)]
    with pytest.raises(Exception, match="repaet"):
        RewardConfig.model_validate({**base, "data": {"train": [{"path": "b.jsonl", "repaet": 3}]}})
    with pytest.raises(Exception, match="greater than or equal to 1"):
        RewardConfig.model_validate({**base, "data": {"train": [{"path": "b.jsonl", "repeat": 0}]}})
