"""What the corpus index's stores share: the stored rows' types, finding the documents, the version hash, and
:class:`CorpusBase`, the incremental update (new, changed, moved, removed files; re-chunking) written once over a
few storage primitives that the embedded store (:class:`~alignkit.rag.store.CorpusIndex`: SQLite + faiss) and the
server store (:class:`~alignkit.rag.store_pg.PgCorpusIndex`: PostgreSQL + pgvector) implement.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alignkit.rag.documents import (
    CLEANER_VERSION,
    SUFFIXES,
    Chunk,
    chunk_document,
    decode_document,
    embed_text,
    word_counter,
)
from alignkit.rag.embed import EmbedderLike
from alignkit.rag.errors import RagError

FORMAT = "1"


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk."""

    id: int  # chunk id (also its vector's id)
    source: str  # file path relative to the docs root
    heading: str  # heading path, "A > B > C"
    start: int  # char offsets in the file's cleaned text
    end: int
    text: str
    hash: str  # sha256 of the text, first 16 hex digits
    pages: tuple[int, int] | None = None  # PDF: (first, last) page from 1; None for the other formats

    def embed_text(self) -> str:
        return embed_text(self.heading, self.text)


@dataclass(frozen=True)
class IndexInfo:
    """What an index directory records (readable without loading an embedder)."""

    path: str
    embedder: str  # the embedder name the vectors were made with
    dim: int
    chunk_tokens: int
    overlap: int
    files: int
    chunks: int
    version: str  # 16 hex digits; changes whenever the corpus, the embedder or the chunking does


@dataclass
class IndexReport:
    """What one :meth:`CorpusIndex.update` did."""

    added: list[str] = field(default_factory=list)  # new files indexed
    changed: list[str] = field(default_factory=list)  # files whose content changed: chunks replaced
    unchanged: int = 0  # files skipped because their sha256 matched
    removed: list[str] = field(default_factory=list)  # files no longer among the docs: chunks removed
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old, new) path: same bytes, chunks kept
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): empty, not UTF-8, damaged PDF...
    no_text_pages: list[tuple[str, list[int]]] = field(default_factory=list)  # (PDF, its pages with no text layer)
    chunks_added: int = 0
    chunks_removed: int = 0
    rechunked: bool = False  # the chunking settings or the cleaner changed: every file was re-chunked
    seconds: float = 0.0


def discover(docs: Sequence[str | os.PathLike]) -> tuple[Path, list[tuple[Path, str]]]:
    """The files named by ``docs`` (files, or directories searched recursively for :data:`SUFFIXES`, hidden
    entries skipped) as (absolute path, path relative to the root), sorted; the root is the directories' and
    files' common parent (a single directory is its own root). A path that does not exist is a RagError."""
    if not docs:
        raise RagError("--docs: give at least one file or directory")
    found: dict[Path, None] = {}
    bases: list[Path] = []
    for d in docs:
        p = Path(d).expanduser().resolve()
        if not p.exists():
            raise RagError(f"{d}: no such file or directory")
        if p.is_dir():
            bases.append(p)
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.is_file() and f.suffix.lower() in SUFFIXES and not any(part.startswith(".") for part in rel):
                    found[f] = None
        else:
            bases.append(p.parent)
            found[p] = None
    root = Path(os.path.commonpath([str(b) for b in bases])) if bases else Path.cwd()
    return root, sorted(((f, f.relative_to(root).as_posix()) for f in found), key=lambda t: t[1])


def _sha(data: bytes | str, n: int | None = None) -> str:
    h = hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
    return h[:n] if n else h


def _check_format(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT or "embedder" not in meta:
        raise RagError(
            f"{path}: index format {meta.get('format')!r}, this alignkit reads {FORMAT!r}: re-index into a new directory"
        )


class CorpusBase:
    """The update logic of a corpus index; subclasses store (see the module doc). They set ``path``, ``embedder``,
    ``_lock`` (an RLock) and ``_version`` (None: recomputed), and implement :meth:`_read_meta`, :meth:`files`,
    :meth:`_mark_all_stale`, :meth:`_move`, :meth:`_replace` and :meth:`_save_vectors`."""

    path: object
    embedder: EmbedderLike

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def embedder_name(self) -> str:
        return self.embedder.name

    # --- writing ----------------------------------------------------------------------------------
    def update(
        self,
        docs: Sequence[str | os.PathLike],
        *,
        chunk_tokens: int = 256,
        overlap: int = 32,
        keep_code: bool = False,
        progress: bool = False,
        on_error: str = "skip",
    ) -> IndexReport:
        """Bring the index in line with ``docs`` (files and directories): index new and changed files, remove
        the chunks of files no longer among them, skip unchanged ones. See the module doc for crash safety.

        ``on_error``: what a file that cannot be read does (not UTF-8 text, an encrypted or damaged PDF):
        ``"skip"`` lists it in :attr:`IndexReport.skipped` and goes on; ``"error"`` stops with a one-line
        RagError naming it (the files indexed before it stay indexed)."""
        if on_error not in ("skip", "error"):
            raise RagError(f"on_error must be 'skip' or 'error', got {on_error!r}")
        started = time.perf_counter()
        max_tokens = getattr(self.embedder, "max_tokens", None)
        if max_tokens is not None and chunk_tokens > max_tokens:
            raise RagError(f"--chunk-tokens {chunk_tokens}: the embedder {self.embedder.name} reads at most {max_tokens} tokens")
        if chunk_tokens < 8:
            raise RagError(f"--chunk-tokens must be >= 8, got {chunk_tokens}")
        if not 0 <= overlap < chunk_tokens:
            raise RagError(f"--overlap must be >= 0 and below --chunk-tokens ({chunk_tokens}), got {overlap}")
        _, found = discover(docs)
        report = IndexReport()
        count = word_counter(self.embedder)
        with self._lock:
            meta = self._read_meta()
            settings = {
                "chunk_tokens": str(chunk_tokens),
                "overlap": str(overlap),
                "cleaner": CLEANER_VERSION,
                "keep_code": str(int(keep_code)),
            }
            known = self.files()
            if any(meta.get(k) != v for k, v in settings.items()):
                self._mark_all_stale(settings)  # one transaction: a crash midway re-chunks the rest next time
                report.rechunked = bool(known)
                known = dict.fromkeys(known, "stale")
            bar = _Progress(len(found)) if progress else None
            gone_by_sha: dict[str, list[str]] = {}  # files indexed before and not found now: a moved file's old path
            for rel in sorted(set(known) - {rel for _, rel in found}):
                gone_by_sha.setdefault(known[rel], []).append(rel)
            try:
                for abs_path, rel in found:
                    if bar:
                        bar.file(rel)
                    self._update_file(
                        abs_path, rel, known, gone_by_sha, report, count, chunk_tokens, overlap, keep_code, bar, on_error
                    )
                for rel in sorted(r for rels in gone_by_sha.values() for r in rels):
                    report.chunks_removed += self._replace(rel, None, [], None)
                    report.removed.append(rel)
            finally:
                if bar:
                    bar.close()
                self._version = None
                self._save_vectors()  # also after an error or Ctrl-C: what SQLite committed
        report.seconds = time.perf_counter() - started
        return report

    def _update_file(
        self,
        abs_path: Path,
        rel: str,
        known: dict[str, str],
        gone_by_sha: dict[str, list[str]],
        report: IndexReport,
        count,
        chunk_tokens: int,
        overlap: int,
        keep_code: bool,
        bar,
        on_error: str = "skip",
    ) -> None:
        try:
            data = abs_path.read_bytes()
        except OSError as err:
            return self._skip(rel, f"unreadable: {err.strerror or err}", known, report)
        sha = _sha(data)
        if known.get(rel) == sha:
            report.unchanged += 1
            return None
        if rel not in known and gone_by_sha.get(sha):  # moved or renamed (or the docs root changed): same chunks
            old = gone_by_sha[sha].pop(0)
            self._move(old, rel)
            report.moved.append((old, rel))
            return None
        try:
            doc = decode_document(data, abs_path, rel, keep_code=keep_code)  # the bytes hashed, not a second read
        except RagError as err:
            if on_error == "error":
                raise RagError(f"{abs_path}: {str(err).split(': ', 1)[-1]} (--on-error skip: skip such files)") from None
            return self._skip(rel, str(err).split(": ", 1)[-1], known, report)
        if doc.no_text_pages:
            report.no_text_pages.append((rel, list(doc.no_text_pages)))
        chunks = chunk_document(doc, count, chunk_tokens=chunk_tokens, overlap=overlap)
        if not chunks:
            if doc.no_text_pages and not doc.pages:  # a PDF with no text on any page, scans among them
                return self._skip(rel, "no text layer on any page (scanned?)", known, report)
            return self._skip(rel, "no text to index after cleaning (empty, or only headings and code)", known, report)
        vectors = self.embedder.encode([c.embed_text() for c in chunks])  # (n_chunks, dim)
        report.chunks_removed += self._replace(rel, sha, chunks, vectors)
        report.chunks_added += len(chunks)
        (report.changed if rel in known else report.added).append(rel)
        if bar:
            bar.chunks(len(chunks))
        return None

    def _skip(self, rel: str, why: str, known: dict[str, str], report: IndexReport) -> None:
        report.skipped.append((rel, why))
        if rel in known:  # it was indexed before: its old chunks no longer match the file
            report.chunks_removed += self._replace(rel, None, [], None)

    # --- storage primitives ---------------------------------------------------------------------
    def _read_meta(self) -> dict[str, str]:
        raise NotImplementedError

    def files(self) -> dict[str, str]:
        """Indexed files: relative path -> sha256."""
        raise NotImplementedError

    def _mark_all_stale(self, settings: dict[str, str]) -> None:
        """One transaction: record the new chunking ``settings`` and mark every file stale (re-chunked by the update)."""
        raise NotImplementedError

    def _move(self, old: str, rel: str) -> None:
        """One transaction: file ``old``'s chunks and file row now belong to path ``rel``."""
        raise NotImplementedError

    def _replace(self, rel: str, sha: str | None, chunks: list[Chunk], vectors: np.ndarray | None) -> int:
        """One transaction: drop ``rel``'s chunks, insert ``chunks`` with ``vectors`` (and its file row when ``sha``).
        Returns how many old chunks were dropped."""
        raise NotImplementedError

    def _save_vectors(self) -> None:
        """Persist derived vector data (after an update, also one stopped by an error)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _version(meta: dict[str, str], files: list[tuple[str, str]]) -> str:
    keys = ("embedder", "dim", "chunk_tokens", "overlap", "cleaner", "keep_code")
    payload = json.dumps({"meta": {k: meta.get(k) for k in keys}, "files": files}, sort_keys=True)
    return _sha(payload, 16)


class _Progress:
    """A rich progress bar on stderr: files done of total, and the chunks written so far."""

    def __init__(self, n_files: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._files = self._p.add_task("files", total=n_files, info="")
        self._chunks = self._p.add_task("chunks", total=None, info="")
        self._started = False
        self._p.start()

    def file(self, rel: str) -> None:
        if self._started:
            self._p.advance(self._files)
        self._started = True
        self._p.update(self._files, info=rel[-40:])

    def chunks(self, n: int) -> None:
        self._p.advance(self._chunks, n)

    def close(self) -> None:
        if self._started:
            self._p.advance(self._files)
        self._p.update(self._files, info="")
        self._p.stop()
