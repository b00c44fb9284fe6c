"""atomic_file / atomic_dir: the target is replaced whole on success and left as it was on an error."""

import pytest

from alignkit.io_atomic import atomic_dir, atomic_file, write_jsonl, write_text


def test_atomic_file_replaces_and_leaves_nothing_beside(tmp_path):
    out = tmp_path / "a.json"
    out.write_text("old")
    with atomic_file(out, mode=0o640) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        tmp.write_text("new")
        assert out.read_text() == "old"  # not visible before the block ends
    assert out.read_text() == "new" and out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_file_error_keeps_old_and_removes_temp(tmp_path):
    out = tmp_path / "a.json"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


class MyError(ValueError):
    pass


def test_atomic_dir_overwrite_rules_and_error_type(tmp_path):
    out = tmp_path / "d"
    with atomic_dir(out, overwrite=False) as tmp:
        (tmp / "x").write_text("1")
    assert (out / "x").read_text() == "1"
    with pytest.raises(MyError, match="not empty"), atomic_dir(out, overwrite=False, error=MyError):
        pass
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError, match="not a directory"), atomic_dir(tmp_path / "f", overwrite=True):
        pass


def test_write_text_and_jsonl_create_parent_and_replace_whole(tmp_path):
    path = write_jsonl(tmp_path / "new" / "rows.jsonl", [{"a": 1}, {"t": "ஆ"}])
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"t": "ஆ"}\n'  # UTF-8 kept, one row a line
    write_text(path, "x")
    assert path.read_text() == "x" and sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]


def test_write_text_mode_sets_permissions(tmp_path):
    import os

    old = os.umask(0o077)  # files would be created 0o600 without a mode
    try:
        plain = write_text(tmp_path / "plain.txt", "a")
        shared = write_text(tmp_path / "shared.txt", "b", mode=0o644)
    finally:
        os.umask(old)
    assert plain.stat().st_mode & 0o777 == 0o600
    assert shared.stat().st_mode & 0o777 == 0o644 and shared.read_text() == "b"
