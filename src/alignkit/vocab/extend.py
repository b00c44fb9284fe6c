"""Extend a byte-level BPE tokenizer with tokens learned on a new language, and a model's embeddings to match.

The extension (``extend_bpe``): a fresh BPE is trained on the language's text with the old tokenizer's normaliser,
pre-tokenizer and byte alphabet; its merges are walked in order, and a merge's result is kept when

- it holds at least one non-ASCII byte (so no new merge can ever fire on ASCII text: English and code tokenize
  exactly as before),
- it is not already in the old vocabulary, and
- the tokenizer extended so far splits it into exactly two pieces (then the merge of those two pieces is what
  makes it; a result the old merges would reach by another path is skipped).

Kept tokens get the next free ids and their merges go to the END of the merge list (lowest priority): the old
merges all apply first, so on any text the new tokens only join tokens the old tokenizer produced (a text never
gets more tokens than before).

The embeddings (``mean_rows``): new row = mean of the rows of the pieces the OLD tokenizer splits the token into,
for the input embeddings and, when untied, the LM head.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode  # the byte-level BPE alphabet (GPT-2's table)

from alignkit.vocab.coverage import VocabError

# ASCII text that any extension must tokenize exactly as before (checked in addition to any --keep-text).
ASCII_CHECK = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "def f(x):\n    return {'a': [x, x ** 2]}  # code, too",
    "".join(chr(c) for c in range(32, 127)),
    "  Leading spaces, trailing spaces,   and\ttabs.  ",
]


@dataclass
class Extension:
    """What ``extend_bpe`` did."""

    tokenizer_json: str
    """The extended tokenizer's ``tokenizer.json`` text."""
    added: list[str] = field(default_factory=list)
    """New tokens (byte-level strings), in id order."""
    ids: list[int] = field(default_factory=list)
    """Their ids (``ids[i]`` is ``added[i]``'s)."""


_NON_ASCII = {ch for b, ch in bytes_to_unicode().items() if b >= 128}


def _has_byte_level(node: dict | None) -> bool:
    if not node:
        return False
    if node.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(p) for p in node.get("pretokenizers", []) or [])


def tokenizer_family(spec: dict) -> str:
    """``"byte-level BPE" | "SentencePiece BPE" | "BPE" | "WordPiece" | "Unigram" | ...`` of a tokenizer.json dict."""
    model = spec.get("model", {})
    kind = model.get("type", "?")
    if kind == "BPE":
        if _has_byte_level(spec.get("pre_tokenizer")):
            return "byte-level BPE"
        return "SentencePiece BPE" if model.get("byte_fallback") else "BPE"
    return kind


# GPT-2's pre-tokenizer regex (the tokenizers ByteLevel default) with combining marks (\p{M}: Tamil's vowel signs and
# virama, Hindi's matras, decomposed accents) counted as letters, so a word stays one pre-token. On text without
# combining marks (all ASCII text) it splits exactly as the original.
GPT2_PATTERN_WITH_MARKS = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"""


def join_marks(spec: dict) -> dict:
    r"""``spec`` (a tokenizer.json dict) with its GPT-2 ByteLevel pre-tokenizer replaced by the same regex that keeps
    combining marks inside words (``GPT2_PATTERN_WITH_MARKS``) followed by ByteLevel without its own regex.

    GPT-2's regex matches letters with ``\p{L}+``; Tamil's vowel signs are marks (``\p{M}``), so every word breaks
    at each of them and no merge can ever join a whole Tamil word. Only a plain ``ByteLevel`` pre-tokenizer with
    ``use_regex`` is handled; others (Llama 3's ``Split`` regex) are a :class:`VocabError`."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise VocabError(
            "--join-marks handles the GPT-2 ByteLevel pre-tokenizer only (alignkit init-model, GPT-2); this "
            f"tokenizer's pre-tokenizer is {pre.get('type', 'none')}"
        )
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN_WITH_MARKS), behavior="isolated"),
            pre_tokenizers.ByteLevel(
                add_prefix_space=pre.get("add_prefix_space", False),
                trim_offsets=pre.get("trim_offsets", True),
                use_regex=False,
            ),
        ]
    )
    out = dict(spec)
    out["pre_tokenizer"] = json.loads(tok.to_str())["pre_tokenizer"]
    return out


def _merge_pairs(merges: list) -> list[tuple[str, str]]:
    """tokenizer.json merges (``"a b"`` strings or ``[a, b]`` pairs) as pairs."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def bpe_split(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """``word`` (byte-level characters) split by BPE with merge ``ranks`` (lower merges first)."""
    parts = list(word)
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def _train_merges(spec: dict, lines: Sequence[str], n_merges: int) -> list[tuple[str, str]]:
    """Merges of a fresh BPE trained on ``lines`` with ``spec``'s normaliser and pre-tokenizer, byte alphabet."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    old = Tokenizer.from_str(json.dumps(spec))
    tok = Tokenizer(models.BPE())
    if old.normalizer is not None:
        tok.normalizer = old.normalizer
    tok.pre_tokenizer = old.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + n_merges, min_frequency=2, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return _merge_pairs(json.loads(tok.to_str())["model"]["merges"])


def extend_bpe(tokenizer_json: str, lines: Sequence[str], n_add: int, *, marks_in_words: bool = False) -> Extension:
    """Add up to ``n_add`` tokens learned on ``lines`` to a byte-level BPE ``tokenizer.json`` (see the module doc).

    Fewer are added when the text does not yield ``n_add`` new tokens (``len(result.added)`` says how many).
    ``marks_in_words``: also change the pre-tokenizer so combining marks stay inside words (:func:`join_marks`);
    ASCII text still tokenizes as before, but text in other scripts with combining marks may not.
    A tokenizer that is not byte-level BPE is a :class:`VocabError` naming its family.
    """
    if n_add < 1:
        raise VocabError(f"--add must be at least 1, got {n_add}")
    spec = json.loads(tokenizer_json)
    family = tokenizer_family(spec)
    if family != "byte-level BPE":
        raise VocabError(
            f"extending a {family} tokenizer is not supported: only byte-level BPE (GPT-2, Llama 3, Qwen, "
            "alignkit init-model tokenizers) can be extended"
        )
    if marks_in_words:
        spec = join_marks(spec)
    model = spec["model"]
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise VocabError("extending a BPE with a subword prefix or end-of-word suffix is not supported")
    vocab: dict[str, int] = model["vocab"]
    old_pairs = _merge_pairs(model["merges"])
    ranks = {p: i for i, p in enumerate(old_pairs)}
    taken = set(vocab.values()) | {t["id"] for t in spec.get("added_tokens", [])}
    next_id = max(taken) + 1
    added_strings = {t["content"] for t in spec.get("added_tokens", [])}

    ext = Extension(tokenizer_json="")
    new_pairs: list[tuple[str, str]] = []
    asked = 2 * n_add + 64
    walked_until = 0
    for _ in range(4):  # train bigger until n_add tokens are found or the text yields no more merges
        merges = _train_merges(spec, lines, asked)
        for a, b in merges[walked_until:]:
            if len(ext.added) >= n_add:
                break
            walked_until += 1
            token = a + b
            if token in vocab or token in added_strings or not any(c in _NON_ASCII for c in token):
                continue
            parts = bpe_split(token, ranks)
            if len(parts) != 2:
                continue
            ranks[(parts[0], parts[1])] = len(ranks)
            new_pairs.append((parts[0], parts[1]))
            vocab[token] = next_id
            ext.added.append(token)
            ext.ids.append(next_id)
            next_id += 1
        if len(ext.added) >= n_add or len(merges) < asked:
            break
        asked *= 2
    if model["merges"] and isinstance(model["merges"][0], str):
        model["merges"] = model["merges"] + [f"{a} {b}" for a, b in new_pairs]
    else:
        model["merges"] = model["merges"] + [[a, b] for a, b in new_pairs]
    ext.tokenizer_json = json.dumps(spec, ensure_ascii=False)
    return ext


def old_pieces(old_tokenizer, tokens: Sequence[str]) -> list[list[int]]:
    """For each byte-level token string, the ids of the pieces ``old_tokenizer``'s BPE model splits it into."""
    model = old_tokenizer.backend_tokenizer.model
    return [[t.id for t in model.tokenize(token)] for token in tokens]


def mean_rows(weight: torch.Tensor, pieces: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(len(pieces), d)``: row ``i`` is the mean of ``weight``'s rows ``pieces[i]`` (``weight``: ``(V, d)``)."""
    if any(len(p) == 0 for p in pieces):
        raise ValueError("a new token with no old pieces")
    return torch.stack([weight[list(p)].float().mean(dim=0) for p in pieces]).to(weight.dtype)


def check_unchanged(old_tokenizer, new_tokenizer, lines: Sequence[str], where: str) -> None:
    """Raise :class:`VocabError` naming the first line of ``lines`` the two tokenizers encode differently."""
    old = old_tokenizer(list(lines), add_special_tokens=False, verbose=False)["input_ids"]
    new = new_tokenizer(list(lines), add_special_tokens=False, verbose=False)["input_ids"]
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        if a != b:
            raise VocabError(
                f"{where}: line {i + 1} tokenizes differently after the extension ({len(a)} -> {len(b)} tokens); "
                "the extended tokenizer was not saved"
            )


def resize_and_init(model, old_tokenizer, ext: Extension) -> dict:
    """Resize ``model``'s embeddings (and untied LM head) to hold ``ext``'s ids and set each new row to the mean of
    the old pieces' rows. Returns ``{"rows": new row count, "tied": bool}``. Tied embeddings stay tied."""
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    need = max(max(ext.ids) + 1, emb.weight.shape[0]) if ext.ids else emb.weight.shape[0]
    if need > emb.weight.shape[0]:
        model.resize_token_embeddings(need, mean_resizing=False)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if tied and head is not None and head.weight is not emb.weight:
        raise RuntimeError("resizing untied the model's tied embeddings")
    pieces = old_pieces(old_tokenizer, ext.added)
    with torch.no_grad():
        ids = torch.tensor(ext.ids)
        emb.weight[ids] = mean_rows(emb.weight, pieces)
        if head is not None and not tied:
            head.weight[ids] = mean_rows(head.weight, pieces)
            bias = getattr(head, "bias", None)
            if bias is not None:
                bias[ids] = torch.stack([bias[list(p)].float().mean() for p in pieces]).to(bias.dtype)
    return {"rows": int(emb.weight.shape[0]), "tied": tied}
