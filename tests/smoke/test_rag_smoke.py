"""`alignkit rag index` then `alignkit rag ask` end to end: real MiniLM embedder, real tiny chat model, real cache."""

from __future__ import annotations

import pytest

from alignkit.cli import main

DOCS = {
    "pasta.md": "# Cooking pasta\n\n:label:`sec_pasta`\n\nBoil spaghetti in plenty of salted water for about ten "
    "minutes, until it is al dente.\n\n## Sauce\n\nA tomato sauce simmers with garlic, olive oil and basil.\n",
    "planets.txt": "Jupiter is the largest planet of the solar system.\n\nSaturn is famous for its bright rings.\n",
    "lists.html": "<html><head><style>p {}</style></head><body><h1>Python lists</h1>"
    "<p>A list grows with append and shrinks with pop.</p><script>alert(1)</script></body></html>",
    "garden/tomatoes.md": "# Tomatoes\n\nWater tomato plants at the roots every morning and stake them as they grow.\n",
}


@pytest.fixture(scope="module")
def embedder():
    from alignkit.rag.embed import Embedder

    return Embedder()


@pytest.fixture()
def shared_embedder(monkeypatch, embedder):
    """Every CLI call in a test reuses the one loaded MiniLM (loading it is most of a call's time)."""
    import alignkit.rag.commands as commands

    monkeypatch.setattr(commands, "_embedder", lambda name, device=None: embedder)
    return embedder


def test_index_then_ask_with_sources_and_cache(tmp_path, tiny_model_dir, shared_embedder, capsys):
    docs = tmp_path / "docs"
    for rel, text in DOCS.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (docs / "empty.txt").write_text("")
    index, cache = str(tmp_path / "index"), str(tmp_path / "cache")

    assert (
        main(["rag", "index", "--docs", str(docs), "--index", index, "--chunk-tokens", "64", "--overlap", "8", "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "4 new, 0 changed, 0 unchanged, 0 moved, 0 removed, 1 skipped" in out and "skipped empty.txt" in out
    assert "embedder sentence-transformers/all-MiniLM-L6-v2 (dim 384)" in out

    ask = [
        "rag",
        "ask",
        "--index",
        index,
        "--model",
        str(tiny_model_dir),
        "--cache",
        cache,
        "--top-k",
        "2",
        "--max-new-tokens",
        "8",
        "How long should I boil spaghetti?",
    ]
    assert main(ask) == 0
    first = capsys.readouterr().out
    assert "Sources:\n  [1] pasta.md — Cooking pasta (score " in first
    assert "  [2] " in first and "semantic cache" not in first

    assert main(ask) == 0
    second = capsys.readouterr().out
    assert second.rstrip().endswith("(answer from the semantic cache)")
    assert (
        second.split("Sources:")[1].replace("(answer from the semantic cache)", "").strip() == first.split("Sources:")[1].strip()
    )
    assert second.split("Sources:")[0] == first.split("Sources:")[0]  # the same answer text

    # a changed corpus changes the index version: the cached answer is not served for it
    (docs / "planets.txt").write_text("Mars is red.\n")
    assert (
        main(["rag", "index", "--docs", str(docs), "--index", index, "--chunk-tokens", "64", "--overlap", "8", "--no-progress"])
        == 0
    )
    assert "0 new, 1 changed, 3 unchanged, 0 moved, 0 removed, 1 skipped" in capsys.readouterr().out
    assert main(ask) == 0
    assert "semantic cache" not in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["rag", "ask", "--index", str(tmp_path / "none"), "--model", "x", "q?"]) == 2
    err = capsys.readouterr().err
    assert "no RAG index here" in err and err.count("\n") == 1
    assert (
        main(
            [
                "rag",
                "index",
                "--docs",
                str(tmp_path / "missing"),
                "--index",
                str(tmp_path / "i"),
                "--no-progress",
                "--embedder",
                "fake",
            ]
        )
        == 2
    )
    assert "missing: no such file or directory" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("text")
    assert (
        main(
            [
                "rag",
                "index",
                "--docs",
                str(tmp_path / "a.txt"),
                "--index",
                str(tmp_path / "i"),
                "--no-progress",
                "--embedder",
                str(tmp_path / "no-such-model"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no-such-model" in err and err.count("\n") == 1


def test_another_embedder_on_an_existing_index_is_refused(tmp_path, shared_embedder, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text to index.\n")
    index = str(tmp_path / "index")
    assert main(["rag", "index", "--docs", str(docs), "--index", index, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["rag", "index", "--docs", str(docs), "--index", index, "--embedder", "other/model"]) == 2
    err = capsys.readouterr().err
    assert "built with embedder sentence-transformers/all-MiniLM-L6-v2, not other/model" in err and err.count("\n") == 1
