"""Optional dependencies: a missing one is a one-line error naming the extra that installs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib

from alignkit.errors import EXTRAS, MissingExtra, UserError, require

REPO = Path(__file__).resolve().parents[2]


def test_every_extra_named_exists_in_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras), set(EXTRAS.values()) - set(extras)
    assert {"rag", "serve"} <= set(extras) and "alignkit[rag,serve]" in extras["dev"]  # make setup installs both


def test_require_imports_or_names_the_extra(monkeypatch):
    assert require("json", "x").dumps([1]) == "[1]"
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    with pytest.raises(MissingExtra) as err:
        require("faiss", "vector search")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("vector search needs faiss") and msg.endswith("pip install 'alignkit[rag]'")
    assert isinstance(err.value, UserError) and isinstance(err.value, ImportError)
    monkeypatch.setitem(sys.modules, "nosuchpkg", None)
    with pytest.raises(MissingExtra, match=r"pip install nosuchpkg$"):
        require("nosuchpkg.sub", "a feature")


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (["serve", "--model", "/nowhere"], "fastapi", "serve"),
        (["rag", "index", "--docs", "data/d2l", "--index", "{tmp}/idx"], "sentence_transformers", "rag"),
    ],
)
def test_cli_without_an_extra_is_one_line(argv, missing, extra, monkeypatch, tmp_path, capsys):
    from alignkit.cli import main

    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.chdir(REPO)
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.endswith(f"pip install 'alignkit[{extra}]'"), err
