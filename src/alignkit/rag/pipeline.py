"""Retrieval-augmented answers: cache check, retrieval, prompt, generation, answer with its sources.

:meth:`RagPipeline.answer` looks the question up in the semantic cache *first*: a hit costs one embedding and
skips both retrieval and generation. The cache context key names everything the answer depends on besides
the question -- the model id, the generation settings, the embedder, the corpus index version, the retrieval
settings, the context budget and the prompt version -- so an answer is never served for another model,
other settings or a changed corpus. The cached value is a JSON string holding the answer, its sources and its
finish reason, so a cached answer still shows where it came from and whether ``max_new_tokens`` cut it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

from alignkit.rag.documents import cite
from alignkit.rag.errors import RagError
from alignkit.rag.retrieve import Hit

PROMPT_VERSION = "rag-prompt-1"  # bump when the prompt changes: cached answers of the old prompt stop matching

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages you are given. "
    "Cite the passages you use by their numbers, like [1] or [2]. "
    "If the passages do not contain the answer, say that you do not know."
)


class CacheLike(Protocol):
    """What the pipeline needs from a semantic cache (:class:`alignkit.rag.cache.SemanticCache` has it)."""

    def get(self, question: str, context: str | None = None) -> str | None: ...

    def put(self, question: str, answer: str, context: str | None = None) -> None: ...


class RetrieverLike(Protocol):
    """What the pipeline needs from a retriever (:class:`alignkit.rag.retrieve.Retriever` has it)."""

    index: object  # has .version (str): changes whenever the corpus does
    embedder: object  # has .name and .count_tokens(text)

    def key(self) -> str: ...

    def retrieve(self, question: str) -> list[Hit]: ...


@dataclass
class RagAnswer:
    """An answer and the passages it was given."""

    text: str
    sources: list[Hit] = field(default_factory=list)  # numbered [1], [2]... in the prompt, in this order
    cached: bool = False  # served from the semantic cache (no retrieval, no generation)
    context_key: str = ""  # the cache context it was looked up / stored under
    completion: object | None = None  # the backend's Completion (token counts, finish_reason); None when cached
    finish_reason: str = "stop"  # "stop": the model ended its answer; "length": max_new_tokens cut it (cached too)
    left_out: int = 0  # retrieved passages left out because the prompt would not fit the model's context


def build_messages(question: str, hits: list[Hit]) -> list[dict]:
    """The chat conversation: a system message with the rules, a user message with numbered passages, each headed
    by its file (and pages, for a PDF: ``[2] book.pdf pages 12-13 (1 Chapter > 1.2 Section)``)."""
    if hits:
        passages = "\n\n".join(
            f"[{i}] {cite(h.source, h.pages)}" + (f" ({h.heading})" if h.heading else "") + f"\n{h.text}"
            for i, h in enumerate(hits, 1)
        )
    else:
        passages = "(no passages were found)"
    user = (
        f"Context passages:\n\n{passages}\n\n"
        f"Question: {question}\n"
        "Answer from the context passages above and cite them as [1], [2]."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class RagPipeline:
    """Answer questions from a corpus: ``answer(question) -> RagAnswer``.

    ``retriever``: a :class:`~alignkit.rag.retrieve.Retriever`; ``backend``: a
    :class:`~alignkit.models.backends.ChatBackend`; ``cache``: a semantic cache or None; ``settings``: the
    :class:`~alignkit.models.backends.GenerationSettings` (None: the defaults, greedy); ``max_context_tokens``:
    the passages' budget in the embedder's tokens (a proxy for the model's: passages past it are left out,
    the first is always kept). Then, when the backend tells its context (``max_positions``) and can count a
    prompt's tokens (``prompt_tokens``), the last passages are left out until the prompt and ``max_new_tokens``
    fit the model's context (the first is kept: if it alone does not fit, the backend's one-line error says so);
    :attr:`RagAnswer.left_out` counts them.
    """

    def __init__(
        self, retriever: RetrieverLike, backend, *, cache: CacheLike | None = None, settings=None, max_context_tokens: int = 1024
    ):
        if settings is None:
            from alignkit.models.backends import GenerationSettings

            settings = GenerationSettings()
        if max_context_tokens < 1:
            raise RagError(f"max_context_tokens must be >= 1, got {max_context_tokens}")
        self.retriever, self.backend, self.cache, self.settings = retriever, backend, cache, settings
        self.max_context_tokens = max_context_tokens

    def context_key(self) -> str:
        """Everything besides the question that the answer depends on, as one stable string."""
        parts = {
            "model": self.backend.model_id,
            "generation": self.settings.key(),
            "embedder": self.retriever.embedder.name,
            "index": self.retriever.index.version,
            "retrieval": self.retriever.key(),
            "max_context_tokens": str(self.max_context_tokens),
            "prompt": PROMPT_VERSION,
        }
        return "|".join(f"{k}={v}" for k, v in parts.items())

    def _fit(self, hits: list[Hit]) -> list[Hit]:
        """The leading hits whose texts fit ``max_context_tokens`` (at least one); their ranks stay 1..n."""
        count = self.retriever.embedder.count_tokens
        kept, used = [], 0
        for h in hits:
            n = count(h.text)
            if kept and used + n > self.max_context_tokens:
                break
            kept.append(h)
            used += n
        return kept

    def _fit_model(self, question: str, hits: list[Hit]) -> list[Hit]:
        """The leading hits whose prompt, with ``max_new_tokens``, fits the model's context (at least one)."""
        limit = getattr(self.backend, "max_positions", None)
        count = getattr(self.backend, "prompt_tokens", None)
        if limit is None or count is None:
            return hits
        room = limit - self.settings.max_new_tokens
        while len(hits) > 1 and count(build_messages(question, hits)) > room:
            hits = hits[:-1]
        return hits

    def answer(self, question: str) -> RagAnswer:
        question = question.strip()
        if not question:
            raise RagError("question: empty")
        key = self.context_key()
        if self.cache is not None:
            hit = _decode(self.cache.get(question, context=key))
            if hit is not None:
                text, sources, finish = hit
                return RagAnswer(text, sources, cached=True, context_key=key, finish_reason=finish)
        fitted = self._fit(self.retriever.retrieve(question))
        hits = self._fit_model(question, fitted)
        (completion,) = self.backend.chat([build_messages(question, hits)], self.settings)
        text = completion.text.strip()
        finish = getattr(completion, "finish_reason", "stop")
        # a cut-off answer is cached too (under the same settings, part of the key, the model gives the same one),
        # with its finish reason, so the repeat still says it was cut
        if self.cache is not None:
            value = {"answer": text, "sources": [h.to_dict() for h in hits], "finish_reason": finish}
            self.cache.put(question, json.dumps(value), context=key)
        return RagAnswer(
            text,
            hits,
            cached=False,
            context_key=key,
            completion=completion,
            finish_reason=finish,
            left_out=len(fitted) - len(hits),
        )


def _decode(value: str | None) -> tuple[str, list[Hit], str] | None:
    """A cached value as (answer, sources, finish reason); None for a miss or a value this pipeline did not write
    (an entry without a finish reason, written before it was stored, may be a cut-off answer: it is a miss too)."""
    if value is None:
        return None
    try:
        d = json.loads(value)
        finish = d["finish_reason"]
        if finish not in ("stop", "length"):
            return None
        return str(d["answer"]), [Hit.from_dict(s) for s in d["sources"]], finish
    except (ValueError, KeyError, TypeError):
        return None
