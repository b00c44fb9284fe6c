"""How well a tokenizer covers a text: fertility and the other numbers ``alignkit tokenizer report`` prints.

Definitions (fixed, so that numbers compare across tools):

- each non-empty line of the text (a line with a non-space character) is encoded on its own, without special
  tokens;
- words are whitespace-separated (``str.split()``);
- a token belongs to the word its span overlaps, once the span's leading and trailing spaces are dropped (the
  fast tokenizer's offsets; a byte-level token " word" belongs to "word"; a token of spaces only belongs to no
  word);
- characters and bytes are those of the encoded lines (UTF-8 bytes), newlines not counted.

Only the tokenizers library and the tokenizer object are used here (no model); ``tokenizer`` is any transformers
tokenizer (fast tokenizers give the per-word split; a slow one reports it as ``None``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from alignkit.errors import UserError

# A SentencePiece byte-fallback piece: "<0xE0>"
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_WORD = re.compile(r"\S+")


class VocabError(UserError, ValueError):
    """A bad tokenizer, text file or argument for ``alignkit tokenizer``: the message names it."""


@dataclass(frozen=True)
class Coverage:
    """One tokenizer on one text. Rates are shares in [0, 1]; ``None`` where the tokenizer has no such thing."""

    tokenizer: str
    """The tokenizer as given (directory or hub id)."""
    text: str
    """The text file as given."""
    lines: int
    """Non-empty lines encoded."""
    words: int
    """Whitespace-separated words."""
    tokens: int
    """Tokens of all lines, no special tokens."""
    fertility: float
    """Tokens per word (``tokens / words``): 1.0 is one token a word; English on an English tokenizer is ~1.3."""
    chars_per_token: float
    """Characters (Unicode code points) of the lines per token."""
    bytes_per_token: float
    """UTF-8 bytes of the lines per token."""
    split_4plus: float | None
    """Share of words split into 4 tokens or more (``None``: a slow tokenizer without offsets)."""
    unk_rate: float | None
    """Share of tokens that are the unknown token (``None``: the tokenizer has no unknown token)."""
    byte_fallback_rate: float | None
    """Share of tokens that are SentencePiece byte pieces such as ``<0xE0>`` (``None``: no byte fallback)."""
    vocab_used: int
    """Distinct token ids the text uses."""
    vocab_size: int
    """Entries in the tokenizer's vocabulary (added tokens included)."""
    chars_lost: float
    """Share of the lines' non-space characters that ``decode(encode(line))`` does not give back, case ignored
    (a normaliser that strips accents deletes Tamil's vowel signs; an unknown token loses its characters)."""

    def as_dict(self) -> dict:
        return asdict(self)


def text_lines(path: str) -> list[str]:
    """The non-empty lines of the UTF-8 text file ``path`` (line ends removed). A missing, unreadable or empty file
    is a :class:`VocabError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except FileNotFoundError:
        raise VocabError(f"{path}: text file not found") from None
    except IsADirectoryError:
        raise VocabError(f"{path}: is a directory, expected a text file") from None
    except UnicodeDecodeError as err:
        raise VocabError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise VocabError(f"{path}: cannot read: {err.strerror}") from None
    if not lines:
        raise VocabError(f"{path}: no text (every line is empty)")
    return lines


def byte_fallback(tokenizer) -> bool | None:
    """Whether ``tokenizer``'s model falls back to byte pieces (``<0xE0>``) for unknown characters; ``None`` for a
    slow tokenizer, whose model cannot be read."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return bool(json.loads(backend.to_str())["model"].get("byte_fallback", False))


def _word_of(span: tuple[int, int], line: str, starts: list[int], ends: list[int]) -> int | None:
    """Index of the first word (``starts``/``ends``, sorted) that ``span`` overlaps once its spaces are dropped."""
    s, e = span
    while s < e and line[s].isspace():
        s += 1
    while e > s and line[e - 1].isspace():
        e -= 1
    if s >= e:
        return None
    for i, (ws, we) in enumerate(zip(starts, ends, strict=True)):
        if ws < e and s < we:
            return i
    return None


def lost_share(lines: Sequence[str], decoded: Sequence[str]) -> float:
    """Share of the non-space characters of ``lines`` missing from ``decoded`` (multiset difference, case folded)."""
    lost = total = 0
    for line, back in zip(lines, decoded, strict=True):
        want = Counter(c for c in line.casefold() if not c.isspace())
        got = Counter(c for c in back.casefold() if not c.isspace())
        total += sum(want.values())
        lost += sum((want - got).values())
    return lost / total if total else 0.0


def measure(tokenizer, lines: Sequence[str], *, tokenizer_name: str = "", text_name: str = "") -> Coverage:
    """The :class:`Coverage` of ``tokenizer`` on ``lines`` (non-empty strings, each encoded on its own)."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise VocabError(f"{text_name or 'text'}: no text (every line is empty)")
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(list(lines), add_special_tokens=False, return_offsets_mapping=fast, verbose=False)
    ids: list[list[int]] = enc["input_ids"]
    n_tokens = sum(len(x) for x in ids)
    n_words = sum(len(line.split()) for line in lines)
    n_chars = sum(len(line) for line in lines)
    n_bytes = sum(len(line.encode("utf-8")) for line in lines)

    split_4plus = None
    if fast:
        many = 0
        for line, offsets in zip(lines, enc["offset_mapping"], strict=True):
            spans = [(m.start(), m.end()) for m in _WORD.finditer(line)]
            starts, ends = [s for s, _ in spans], [e for _, e in spans]
            per_word = [0] * len(spans)
            for span in offsets:
                w = _word_of(tuple(span), line, starts, ends)
                if w is not None:
                    per_word[w] += 1
            many += sum(1 for n in per_word if n >= 4)
        split_4plus = many / n_words

    flat = Counter(i for row in ids for i in row)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    unk_rate = None if unk_id is None else flat.get(unk_id, 0) / n_tokens if n_tokens else 0.0
    fallback_rate = None
    if byte_fallback(tokenizer):
        pieces = tokenizer.convert_ids_to_tokens(list(flat))
        n_byte = sum(flat[i] for i, p in zip(flat, pieces, strict=True) if _BYTE_PIECE.fullmatch(p or ""))
        fallback_rate = n_byte / n_tokens if n_tokens else 0.0
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def per(x: int) -> float:
        return x / n_tokens if n_tokens else 0.0

    return Coverage(
        tokenizer=tokenizer_name,
        text=text_name,
        lines=len(lines),
        words=n_words,
        tokens=n_tokens,
        fertility=n_tokens / n_words,
        chars_per_token=per(n_chars),
        bytes_per_token=per(n_bytes),
        split_4plus=split_4plus,
        unk_rate=unk_rate,
        byte_fallback_rate=fallback_rate,
        vocab_used=len(flat),
        vocab_size=len(tokenizer),
        chars_lost=lost_share(lines, decoded),
    )


_COLUMNS = (
    ("tokenizer", "tokenizer", "{}"),
    ("text", "text", "{}"),
    ("words", "words", "{:,}"),
    ("tokens", "tokens", "{:,}"),
    ("fertility", "tok/word", "{:.2f}"),
    ("chars_per_token", "chars/tok", "{:.2f}"),
    ("bytes_per_token", "bytes/tok", "{:.2f}"),
    ("split_4plus", "words>=4tok", "{:.1%}"),
    ("unk_rate", "unk", "{:.2%}"),
    ("byte_fallback_rate", "bytefb", "{:.2%}"),
    ("vocab_used", "vocab used", "{:,}"),
    ("chars_lost", "chars lost", "{:.1%}"),
)


def _cells(row: Coverage) -> list[str]:
    values = row.as_dict()
    return ["-" if values[key] is None else fmt.format(values[key]) for key, _, fmt in _COLUMNS]


def format_table(rows: Sequence[Coverage]) -> str:
    """The rows as a plain-text table, one line a tokenizer × text ("-": the tokenizer has no such thing)."""
    table = [[title for _, title, _ in _COLUMNS]] + [_cells(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
    out = []
    for n, r in enumerate(table):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_html(rows: Sequence[Coverage]) -> str:
    """A small self-contained HTML report: the table and a bar chart of fertility (inline SVG, no scripts)."""
    from html import escape

    top = max(r.fertility for r in rows) or 1.0
    bar_h, label_w, width = 22, 360, 420
    bars = []
    for i, r in enumerate(rows):
        y = i * (bar_h + 6)
        w = width * r.fertility / top
        label = escape(f"{r.tokenizer} · {r.text}")
        bars.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="12">{label}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4878a8"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 16}" font-size="12">{r.fertility:.2f}</text>'
        )
    height = len(rows) * (bar_h + 6)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 60}" height="{height}">{"".join(bars)}</svg>'
    head = "".join(f"<th>{escape(title)}</th>" for _, title, _ in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>alignkit tokenizer report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:nth-child(-n+2){text-align:left}</style>"
        "</head><body><h1>Tokenizer coverage</h1>"
        "<p>Fertility: tokens per whitespace-separated word, each non-empty line encoded on its own without special "
        "tokens. Lower is cheaper: training cost and context use grow with it.</p>"
        f"<h2>Fertility (tokens per word)</h2>{svg}<h2>All numbers</h2><table><tr>{head}</tr>{body}</table>"
        "</body></html>\n"
    )
