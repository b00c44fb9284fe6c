"""read_rows: every local source kind, row references, and clear errors (no network)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from alignkit.data.errors import DataError, RowRef
from alignkit.data.sources import read_rows, read_rows_or_errors

ROWS = [{"prompt": "What is 2+2?", "completion": "4"}, {"prompt": "Say hi.", "completion": "Hi!"}]
REPO = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, rows: list[dict], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def _one_line(err: DataError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_jsonl_rows_and_line_numbers_skip_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    got = list(read_rows(str(path)))
    assert [row for row, _ in got] == ROWS
    assert [ref for _, ref in got] == [RowRef(str(path), 1), RowRef(str(path), 3)]


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.json.gz"])
def test_gzipped_json_lines(tmp_path, name):
    path = _jsonl(tmp_path / name, ROWS, opener=gzip.open)
    got = list(read_rows(str(path)))
    assert [row for row, _ in got] == ROWS
    assert got[1][1] == RowRef(str(path), 2)


def test_json_list_and_json_lines_named_json(tmp_path):
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(ROWS, indent=2))
    got = list(read_rows(str(as_list)))
    assert [row for row, _ in got] == ROWS and [ref.line for _, ref in got] == [1, 2]
    as_lines = _jsonl(tmp_path / "lines.json", ROWS)
    assert [row for row, _ in read_rows(str(as_lines))] == ROWS


def test_gzipped_json_list(tmp_path):
    path = tmp_path / "list.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(ROWS, f)
    assert [row for row, _ in read_rows(str(path))] == ROWS


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    got = list(read_rows(str(path)))
    assert [row for row, _ in got] == ROWS and [ref.line for _, ref in got] == [1, 2]


def test_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\n"What is 2+2?",4\n"Say hi.","Hi!"\n')
    got = list(read_rows(str(path)))
    assert [row for row, _ in got] == ROWS and [ref.line for _, ref in got] == [1, 2]


def test_datasets_dir_dataset_and_datasetdict(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert [row for row, _ in read_rows(str(tmp_path / "ds"))] == ROWS

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    got = list(read_rows(str(tmp_path / "dd"), split="test"))
    assert [row for row, _ in got] == ROWS[:1]
    assert got[0][1] == RowRef(f"{tmp_path / 'dd'}[test]", 1)
    with pytest.raises(DataError, match=r"split 'validation' not found; available: train, test"):
        list(read_rows(str(tmp_path / "dd"), split="validation"))


@pytest.mark.parametrize("source", ["missing/data.jsonl", "nope.parquet", "./nope", "/abs/missing/dir", "a/b/c", "x.csv"])
def test_missing_local_path_is_not_found_not_hub(source, monkeypatch):
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("must not reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    with pytest.raises(DataError, match="not found") as err:
        read_rows(source)  # raised by the call itself, before iteration
    assert source in _one_line(err.value)


def test_hub_name_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = list(read_rows("someone/some-data", split="test"))
    assert calls == [("someone/some-data", "test")]
    assert got[0] == (ROWS[0], RowRef("someone/some-data[test]", 1))


def test_hub_failure_is_one_line(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        list(read_rows("someone/unreachable"))
    msg = _one_line(err.value)
    assert msg.startswith("someone/unreachable: ") and "ConnectionError" in msg


def test_unsupported_file_kind(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello\n")
    with pytest.raises(DataError, match="unsupported file kind"):
        read_rows(str(path))


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", \n' + json.dumps(ROWS[1]) + "\n")
    rows = read_rows(str(path))
    assert next(rows)[0] == ROWS[0]
    with pytest.raises(DataError) as err:
        next(rows)
    text = _one_line(err.value)
    assert text.startswith(f"{path}:2: malformed JSON")
    # the error-yielding reader goes on past the bad line
    got = list(read_rows_or_errors(str(path)))
    assert isinstance(got[1][0], DataError) and got[2][0] == ROWS[1]


def test_row_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"list.jsonl:1: row is a JSON list, expected a JSON object"):
        list(read_rows(str(path)))


def test_malformed_json_list_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(DataError) as err:
        list(read_rows(str(path)))
    assert _one_line(err.value).startswith(f"{path}:3: malformed JSON")


def test_real_files_stream():
    hh = REPO / "data/hh-rlhf-harmless/harmless-base.jsonl.gz"
    rows = read_rows(str(hh))
    first = [next(rows) for _ in range(20)]
    assert all(set(row) == {"chosen", "rejected"} for row, _ in first)
    assert first[19][1] == RowRef(str(hh), 20)
    sharegpt = list(read_rows(str(REPO / "data/fastchat/dummy_conversation.json")))
    assert len(sharegpt) == 500 and sharegpt[0][0]["id"] == "identity_0"
    mt = list(read_rows(str(REPO / "data/mt-bench/question.jsonl")))
    assert len(mt) == 80 and mt[0][0]["question_id"] == 81


NOT_UTF8 = {  # one Latin-1 "é" (byte 0xe9) in the second row
    "bad.jsonl": b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n',
    "bad.json": b'[{"prompt": "a", "completion": "b"},\n {"prompt": "caf\xe9", "completion": "b"},\n {"prompt": "c", "completion": "d"}]',
    "bad.csv": b"prompt,completion\na,b\ncaf\xe9,b\nc,d\n",
}


@pytest.mark.parametrize("name", [*NOT_UTF8, "bad.jsonl.gz"])
def test_a_byte_that_is_not_utf8_is_a_located_row_error_and_can_be_skipped(tmp_path, name):
    """Issue 16: ``file:line: not UTF-8 (byte N ...)``, one line, and ``on_error="skip"`` skips only that row."""

    from alignkit.data.formats import load_examples

    path = tmp_path / name
    raw = NOT_UTF8[name.removesuffix(".gz")]
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(DataError) as err:
        load_examples(str(path), fmt="auto", on_error="raise")
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: ") and "not UTF-8 (byte " in msg and "0xe9" in msg and "\n" not in msg
    loaded = load_examples(str(path), fmt="auto", on_error="skip")
    assert [ex.prompt[0].content for ex in loaded.examples] == ["a", "c"]
    assert [str(e.ref) for e in loaded.skipped] == [f"{path}:2"]


def test_data_inspect_reports_a_byte_that_is_not_utf8(tmp_path):
    from alignkit.data.inspect import inspect_data

    path = tmp_path / "bad.jsonl"
    path.write_bytes(NOT_UTF8["bad.jsonl"])
    report = inspect_data(str(path))
    assert (report.rows, report.examples, report.skipped) == (3, 2, 1)
    assert report.first_error.startswith(f"{path}:2: not UTF-8 (byte 16 of the line: 0xe9)")
