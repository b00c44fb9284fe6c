"""``alignkit tokenizer report|extend``: measure a tokenizer on a language, extend it and a model where it falls
short (argparse only at import; see docs/tokenizer.md)."""

from __future__ import annotations

import argparse
import sys


def _load(name: str):
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import load_tokenizer
    from alignkit.vocab.coverage import VocabError

    try:
        return load_tokenizer(name)
    except ModelError as err:
        raise VocabError(f"--tokenizer {name}: {err}") from None


def cmd_report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from alignkit.vocab.coverage import format_table, measure, render_html, text_lines

    texts = {path: text_lines(path) for path in args.text}  # every file checked before any tokenizer loads
    rows = []
    for name in args.tokenizer:
        tok = _load(name)
        rows += [measure(tok, lines, tokenizer_name=name, text_name=path) for path, lines in texts.items()]
    if args.html:
        from alignkit.io_atomic import atomic_file

        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(args.html) as tmp:
            tmp.write_text(render_html(rows), encoding="utf-8")
    if args.json:
        print(json.dumps({"rows": [r.as_dict() for r in rows]}, indent=2, ensure_ascii=False))
    else:
        print(format_table(rows))
        if args.html:
            print(f"wrote {args.html}")
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from alignkit.models._fs import atomic_dir
    from alignkit.models.hf_logging import quiet_libraries
    from alignkit.vocab.coverage import VocabError, format_table, measure, text_lines
    from alignkit.vocab.extend import ASCII_CHECK, check_unchanged, extend_bpe, resize_and_init

    quiet_libraries()
    if args.add < 1:
        raise VocabError(f"--add must be at least 1, got {args.add}")
    texts = {path: text_lines(path) for path in args.text}
    keep = {path: text_lines(path) for path in args.keep_text or []}
    old = _load(args.tokenizer)
    if getattr(old, "backend_tokenizer", None) is None:
        raise VocabError(f"--tokenizer {args.tokenizer}: a slow (Python) tokenizer cannot be extended; a fast one can")
    model_source = None
    if args.model:  # checked before the slow work
        from alignkit.models.errors import ModelError
        from alignkit.models.loading import is_adapter_dir, resolve_source

        try:
            model_source = resolve_source(args.model)
        except ModelError as err:
            raise VocabError(f"--model {args.model}: {err}") from None
        if is_adapter_dir(model_source):
            raise VocabError(f"--model {args.model}: a LoRA adapter directory; merge it first (alignkit merge)")
    lines = [line for ls in texts.values() for line in ls]
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:  # checks --out before the slow work
        ext = extend_bpe(old.backend_tokenizer.to_str(), lines, args.add, marks_in_words=args.join_marks)
        if not ext.added:
            raise VocabError(f"{', '.join(texts)}: no new token found (the tokenizer already has this text's merges)")
        from transformers import AutoTokenizer

        old.save_pretrained(str(tmp))
        (tmp / "tokenizer.json").write_text(ext.tokenizer_json, encoding="utf-8")
        new = AutoTokenizer.from_pretrained(str(tmp))
        if len(new) != len(old) + len(ext.added):
            raise VocabError(f"{args.out}: the saved tokenizer has {len(new)} tokens, expected {len(old) + len(ext.added)}")
        check_unchanged(old, new, ASCII_CHECK, "built-in ASCII check")
        for path, ls in keep.items():
            check_unchanged(old, new, ls, path)
        info = None
        if args.model:
            from alignkit.models.loading import load_causal_lm

            model = load_causal_lm(model_source, finetune="none")
            info = resize_and_init(model, old, ext)
            model.save_pretrained(str(tmp))
            new.save_pretrained(str(tmp))

    rows = []
    for tag, tok in (("before", old), ("after", new)):
        for path, ls in {**texts, **keep}.items():
            rows.append(measure(tok, ls, tokenizer_name=f"{tag}: {args.tokenizer}", text_name=path))
    summary = {
        "out": str(Path(args.out)),
        "asked": args.add,
        "added": len(ext.added),
        "vocab_size": len(new),
        "model": info,
        "rows": [r.as_dict() for r in rows],
    }
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    if len(ext.added) < args.add:
        print(f"added {len(ext.added)} of the {args.add} tokens asked: the text yields no more new merges", file=sys.stderr)
    print(format_table(rows))
    what = f"tokenizer and model ({info['rows']} embedding rows, {'tied' if info['tied'] else 'untied'})" if info else "tokenizer"
    print(f"added {len(ext.added)} tokens (vocabulary {len(old)} -> {len(new)}); wrote the {what} to {args.out}")
    return 0


def add_parsers(sub) -> None:
    """Register ``alignkit tokenizer report|extend`` on the ``alignkit`` parser's subparsers ``sub``."""
    t = sub.add_parser("tokenizer", help="tokenizer tools: report coverage of a language, extend the vocabulary")
    act = t.add_subparsers(dest="tokenizer_cmd", required=True, metavar="ACTION")

    r = act.add_parser(
        "report",
        help="fertility (tokens per word) and coverage of each tokenizer on each text",
        description="For every tokenizer x text: words, tokens, fertility (tokens per word), characters and bytes per "
        "token, the share of words split into >= 4 tokens, unknown-token and byte-fallback rates, vocabulary used and "
        "the share of characters the tokenizer does not give back. Each non-empty line is encoded on its own without "
        "special tokens; words are whitespace-separated.",
    )
    r.add_argument("--tokenizer", action="append", required=True, metavar="T", help="tokenizer dir or hub id (repeat)")
    r.add_argument("--text", action="append", required=True, metavar="FILE", help="UTF-8 text file (repeat)")
    r.add_argument("--json", action="store_true", help='print {"rows": [{"tokenizer", "text", "words", ...}]} as JSON')
    r.add_argument("--html", metavar="OUT", help="also write an HTML report with a bar chart here")
    r.set_defaults(func=cmd_report)

    e = act.add_parser(
        "extend",
        help="add N tokens learned on a language's text (byte-level BPE); with --model, resize and init embeddings",
        description="Train N new BPE merges on the text and append them with the lowest priority, so ASCII text "
        "(English, code) tokenizes exactly as before (checked, and on every --keep-text). With --model, the model's "
        "embeddings (and untied LM head) grow and each new row is the mean of the rows of the pieces the old "
        "tokenizer split the token into.",
    )
    e.add_argument("--tokenizer", required=True, metavar="T", help="tokenizer dir or hub id (byte-level BPE)")
    e.add_argument("--text", action="append", required=True, metavar="FILE", help="the language's text (repeat)")
    e.add_argument("--add", type=int, required=True, metavar="N", help="how many tokens to add")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory (tokenizer, and the model with --model)")
    e.add_argument("--model", metavar="M", help="causal LM dir or hub id whose embeddings to extend")
    e.add_argument("--keep-text", action="append", metavar="FILE", help="text that must tokenize exactly as before (repeat)")
    e.add_argument(
        "--join-marks",
        action="store_true",
        help="keep combining marks (Tamil vowel signs) inside words in the pre-tokenizer (GPT-2 ByteLevel only): "
        "whole words can then become tokens; ASCII text is unchanged, other scripts with marks may change",
    )
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    e.add_argument("--json", action="store_true", help="print the summary and before/after rows as JSON")
    e.set_defaults(func=cmd_extend)
