"""``alignkit tokenizer report|extend``: measure a tokenizer on a language, extend it and a model where it falls
short (see docs/tokenizer.md). The options schemas (pydantic only at import) and the entry points that take them;
registered in :data:`alignkit.commands.COMMANDS`."""

from __future__ import annotations

import sys
from typing import Annotated

from pydantic import Field

from alignkit.commands import Opt
from alignkit.config.base import Closed


def _load(name: str):
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import load_tokenizer
    from alignkit.vocab.coverage import VocabError

    try:
        return load_tokenizer(name)
    except ModelError as err:
        raise VocabError(f"--tokenizer {name}: {err}") from None


class ReportOptions(Closed):
    """``alignkit tokenizer report --tokenizer T... --text FILE...``."""

    tokenizer: Annotated[list[str], Opt(metavar="T")] = Field(description="tokenizer dir or hub id (repeat)")
    text: Annotated[list[str], Opt(metavar="FILE")] = Field(description="UTF-8 text file (repeat)")
    as_json: Annotated[bool, Opt(flag="--json")] = Field(
        False, description='print {"rows": [{"tokenizer", "text", "words", ...}]} as JSON'
    )
    html: Annotated[str | None, Opt(metavar="OUT")] = Field(None, description="also write an HTML report with a bar chart here")


def report(opts: ReportOptions) -> int:
    import json

    from alignkit.vocab.coverage import format_table, measure, render_html, text_lines

    texts = {path: text_lines(path) for path in opts.text}  # every file checked before any tokenizer loads
    rows = []
    for name in opts.tokenizer:
        tok = _load(name)
        rows += [measure(tok, lines, tokenizer_name=name, text_name=path) for path, lines in texts.items()]
    if opts.html:
        from alignkit.io_atomic import write_text

        write_text(opts.html, render_html(rows))
    if opts.as_json:
        print(json.dumps({"rows": [r.as_dict() for r in rows]}, indent=2, ensure_ascii=False))
    else:
        print(format_table(rows))
        if opts.html:
            print(f"wrote {opts.html}")
    return 0


class ExtendOptions(Closed):
    """``alignkit tokenizer extend --tokenizer T --text FILE... --add N --out DIR [--model M]``."""

    tokenizer: Annotated[str, Opt(metavar="T")] = Field(description="tokenizer dir or hub id (byte-level BPE)")
    text: Annotated[list[str], Opt(metavar="FILE")] = Field(description="the language's text (repeat)")
    add: Annotated[int, Opt(metavar="N")] = Field(description="how many tokens to add")
    out: Annotated[str, Opt(metavar="DIR")] = Field(description="output directory (tokenizer, and the model with --model)")
    model: Annotated[str | None, Opt(metavar="M")] = Field(None, description="causal LM dir or hub id whose embeddings to extend")
    keep_text: Annotated[list[str] | None, Opt(metavar="FILE")] = Field(
        None, description="text that must tokenize exactly as before (repeat)"
    )
    join_marks: bool = Field(
        False,
        description="keep combining marks (Tamil vowel signs) inside words in the pre-tokenizer (GPT-2 ByteLevel only): "
        "whole words can then become tokens; ASCII text is unchanged, other scripts with marks may change",
    )
    overwrite: bool = Field(False, description="replace a non-empty --out directory")
    as_json: Annotated[bool, Opt(flag="--json")] = Field(False, description="print the summary and before/after rows as JSON")


def extend(opts: ExtendOptions) -> int:
    import json
    from pathlib import Path

    from alignkit.models._fs import atomic_dir
    from alignkit.vocab.coverage import VocabError, format_table, measure, text_lines
    from alignkit.vocab.extend import ASCII_CHECK, check_unchanged, extend_bpe, resize_and_init

    if opts.add < 1:
        raise VocabError(f"--add must be at least 1, got {opts.add}")
    texts = {path: text_lines(path) for path in opts.text}
    keep = {path: text_lines(path) for path in opts.keep_text or []}
    old = _load(opts.tokenizer)
    if getattr(old, "backend_tokenizer", None) is None:
        raise VocabError(f"--tokenizer {opts.tokenizer}: a slow (Python) tokenizer cannot be extended; a fast one can")
    model_source = None
    if opts.model:  # checked before the slow work
        from alignkit.models.errors import ModelError
        from alignkit.models.loading import is_adapter_dir, resolve_source

        try:
            model_source = resolve_source(opts.model)
        except ModelError as err:
            raise VocabError(f"--model {opts.model}: {err}") from None
        if is_adapter_dir(model_source):
            raise VocabError(f"--model {opts.model}: a LoRA adapter directory; merge it first (alignkit merge)")
    lines = [line for ls in texts.values() for line in ls]
    with atomic_dir(opts.out, overwrite=opts.overwrite) as tmp:  # checks --out before the slow work
        ext = extend_bpe(old.backend_tokenizer.to_str(), lines, opts.add, marks_in_words=opts.join_marks)
        if not ext.added:
            raise VocabError(f"{', '.join(texts)}: no new token found (the tokenizer already has this text's merges)")
        from transformers import AutoTokenizer

        old.save_pretrained(str(tmp))
        (tmp / "tokenizer.json").write_text(ext.tokenizer_json, encoding="utf-8")
        new = AutoTokenizer.from_pretrained(str(tmp))
        if len(new) != len(old) + len(ext.added):
            raise VocabError(f"{opts.out}: the saved tokenizer has {len(new)} tokens, expected {len(old) + len(ext.added)}")
        check_unchanged(old, new, ASCII_CHECK, "built-in ASCII check")
        for path, ls in keep.items():
            check_unchanged(old, new, ls, path)
        info = None
        if opts.model:
            from alignkit.models.loading import load_causal_lm

            model = load_causal_lm(model_source, finetune="none")
            info = resize_and_init(model, old, ext)
            model.save_pretrained(str(tmp))
            new.save_pretrained(str(tmp))

    rows = []
    for tag, tok in (("before", old), ("after", new)):
        for path, ls in {**texts, **keep}.items():
            rows.append(measure(tok, ls, tokenizer_name=f"{tag}: {opts.tokenizer}", text_name=path))
    summary = {
        "out": str(Path(opts.out)),
        "asked": opts.add,
        "added": len(ext.added),
        "vocab_size": len(new),
        "model": info,
        "rows": [r.as_dict() for r in rows],
    }
    if opts.as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    if len(ext.added) < opts.add:
        print(f"added {len(ext.added)} of the {opts.add} tokens asked: the text yields no more new merges", file=sys.stderr)
    print(format_table(rows))
    what = f"tokenizer and model ({info['rows']} embedding rows, {'tied' if info['tied'] else 'untied'})" if info else "tokenizer"
    print(f"added {len(ext.added)} tokens (vocabulary {len(old)} -> {len(new)}); wrote the {what} to {opts.out}")
    return 0
