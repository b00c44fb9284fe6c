"""The OpenAI-compatible HTTP API: ``POST /v1/chat/completions`` (plain or server-sent events), ``GET /v1/models``,
``GET /health``.

:func:`create_app` takes every component it uses (a :class:`~alignkit.models.backends.ChatBackend`, optionally a RAG
pipeline and a semantic cache) and keeps them in the app it returns: no module globals, so tests build as many apps
as they like. Three modes:

- plain: each request's messages go to ``backend.chat`` / ``backend.stream``;
- ``rag``: the last user message is the question for ``rag.answer``; the answer's sources are returned in a
  top-level ``sources`` field (each a :class:`~alignkit.rag.retrieve.Hit` as its ``to_dict``: chunk id, text,
  source file, heading path, score, rank, ``pages`` ``[first, last]`` for a PDF chunk, and the ``citation``
  ``"book.pdf pages 12-13 — 1 Chapter > 1.2 Section"``) and ``X-Alignkit-Cache: hit|miss`` says whether the
  pipeline's cache answered;
- ``cache`` without ``rag``: greedy (temperature 0) requests are looked up in / stored to the semantic cache, keyed
  on the last user message with a context string naming the model, the generation settings and a hash of the earlier
  messages (``X-Alignkit-Cache`` says hit or miss). Sampled requests bypass the cache: a stored sample would be
  returned for every later request, which is not what asking for a sample means.

Generation runs in worker threads (the event loop stays free); the backend serialises or batches it. Every error is
OpenAI-shaped JSON (``{"error": {"message", "type", "param", "code"}}``); a failure inside one request is that
request's 500 and nothing else's.

Limits: a request body over ``max_request_bytes`` (default 1 MiB) is a 413, refused from its ``Content-Length`` or,
for a chunked body, as soon as the bytes read pass the limit -- before it is parsed; a message with text that is not
valid Unicode (a lone surrogate) and a ``seed`` outside the 64-bit signed range are 400s naming the field.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from alignkit.models.backends import ChatBackend, Completion, GenerationSettings
from alignkit.models.errors import ModelError
from alignkit.rag.errors import RagError
from alignkit.rag.pipeline import CacheLike

logger = logging.getLogger("alignkit.serve")

CACHE_HEADER = "X-Alignkit-Cache"
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: a chat request's JSON body; far above any prompt a small model's context holds
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # torch seeds are 64-bit
DEFAULT_MAX_TOKENS = GenerationSettings().max_new_tokens


class RagLike(Protocol):
    """What the server needs from the RAG pipeline (:class:`alignkit.rag.pipeline.RagPipeline`)."""

    def answer(self, question: str) -> Any:  # -> RagAnswer: .text (str), .sources (list), .cached (bool)
        ...


# ---------------------------------------------------------------- requests


def _valid_unicode(v):
    """Strings must be encodable as UTF-8: JSON's ``\\ud800`` escapes decode to lone surrogates, which no tokenizer
    (and no JSON response) can encode."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"not valid Unicode: a lone surrogate {v[err.start]!r} at character {err.start} (send UTF-8 text)"
            ) from None
    return v


class TextPart(BaseModel):
    """One part of a message's content given as a list (``[{"type": "text", "text": ...}]``); only text is served."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = Field(description="the part's kind; only 'text' is supported")
    text: str

    @field_validator("text")
    @classmethod
    def _unicode(cls, v):
        return _valid_unicode(v)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"] = Field(description="who speaks; developer = system")
    content: str | list[TextPart] = Field(description="the text, or a list of text parts (joined)")
    name: str | None = Field(None, description="accepted for compatibility and ignored")

    @field_validator("content", "name")
    @classmethod
    def _unicode(cls, v):
        return _valid_unicode(v)

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="send a last chunk with the usage before [DONE]")


class ChatRequest(BaseModel):
    """The accepted subset of OpenAI's chat-completion request. Unknown fields are rejected by name (a misspelt
    ``max_token`` must not be silently ignored); fields that would change the answer in ways this server does not
    implement (n > 1, stop sequences, penalties, logprobs) are rejected with a message saying so."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="must be the served model's name (GET /v1/models); omitted: that model")
    messages: list[ChatMessage] = Field(min_length=1, description="the conversation, oldest first")
    max_tokens: int | None = Field(None, ge=1, description="most new tokens (default 256)")
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name of max_tokens; wins if both given")
    temperature: float | None = Field(None, ge=0, le=2, description="0 or omitted: greedy")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass (sampling only)")
    seed: int | None = Field(
        None, ge=SEED_MIN, le=SEED_MAX, description="seeds sampling (a 64-bit signed integer); omitted: a fresh sample each call"
    )
    stream: bool = Field(False, description="answer as server-sent events of chat.completion.chunk objects")
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, description="choices per request; only 1 is served")
    stop: str | list[str] | None = Field(None, description="stop sequences: not supported (only null or [])")
    presence_penalty: float | None = Field(None, description="only 0 / null")
    frequency_penalty: float | None = Field(None, description="only 0 / null")
    logprobs: bool | None = Field(None, description="only false / null")
    user: str | None = Field(None, description="accepted and ignored")

    @field_validator("model", "user")
    @classmethod
    def _unicode(cls, v):
        return _valid_unicode(v)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError(f"only n=1 is supported (this server returns one choice per request), got {v}")
        return v

    @field_validator("stop")
    @classmethod
    def _no_stop(cls, v):
        if v:  # None, "" and [] mean no stop sequences
            raise ValueError("stop sequences are not supported by this server; omit 'stop'")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v):
        if v:
            raise ValueError("presence and frequency penalties are not supported; omit them or send 0")
        return v

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("logprobs are not supported by this server")
        return v

    def generation_fields_set(self) -> bool:
        """Whether the request asks for particular generation settings (else a RAG pipeline keeps its own)."""
        return bool({"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed"} & self.model_fields_set)

    def settings(self, base: GenerationSettings | None = None) -> GenerationSettings:
        """The generation settings: the request's fields over ``base``'s (default: greedy, 256 tokens). Greedy is
        normalised (top_p 1, seed 0: neither changes a greedy answer, so cache keys do not split on them); a sampled
        request without a seed gets ``seed=None``, a fresh sample each call, as OpenAI's API does."""
        base = base or GenerationSettings()
        max_new = self.max_completion_tokens or self.max_tokens or base.max_new_tokens
        temperature = float(base.temperature if self.temperature is None else self.temperature)
        if temperature == 0:
            return GenerationSettings(max_new_tokens=max_new, temperature=0.0, top_p=1.0, seed=0)
        top_p = float(base.top_p if self.top_p is None else self.top_p)
        return GenerationSettings(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=self.seed)


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered as OpenAI-shaped JSON with ``status``."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def _validation_error(exc: RequestValidationError) -> ApiError:
    """The first validation problem as one line naming the field (``messages.0.role: Input should be ...``)."""
    errors = exc.errors()
    if not errors:
        return ApiError(400, "invalid request")
    err = next((e for e in errors if e.get("type") == "value_error"), errors[0])  # our own checks say the most
    # a union's branch names ("str", "list[TextPart]") are not part of the field's path
    loc = [str(x) for x in err.get("loc", ()) if x != "body" and x != "str" and "[" not in str(x)]
    if err.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
    if err.get("type") == "model_attributes_type" or (not loc and err.get("type") in ("dict_type", "missing")):
        return ApiError(400, "the request body must be a JSON object with 'messages'")
    field = ".".join(loc)
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (not supported by this server)"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ApiError(400, f"{field}: {msg}{more}", param=field or None)


def _internal_error(err: BaseException) -> ApiError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ApiError(
        500,
        f"the server failed on this request: {type(err).__name__}{': ' + text if text else ''}",
        type="server_error",
        code="internal_error",
    )


def _as_api_error(err: BaseException) -> ApiError:
    """A user's mistake found by the backend or pipeline (template, prompt too long) is a 400; anything else a 500."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, (ModelError, RagError)):
        return ApiError(400, str(err))
    logger.error("request failed", exc_info=err)
    return _internal_error(err)


class _ApiKeyMiddleware:
    """Every path but /health needs ``Authorization: Bearer <key>``; checked before the body is read."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/health":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                problem = "no API key given" if not given else "the API key is not valid"
                err = ApiError(401, f"{problem}: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
                await err.response({"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyLimitMiddleware:
    """A request body over ``max_bytes`` is a 413 before it is parsed: refused from its ``Content-Length`` without
    reading it, or (a chunked body) as soon as the bytes received pass the limit; at most ``max_bytes`` are held.
    The body read is handed on to the app, and later ``receive`` calls (a client's disconnect) go through."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> ApiError:
        return ApiError(
            413,
            f"the request body is {size} bytes, more than this server's limit of {self.max_bytes} bytes "
            "(alignkit serve --max-request-bytes)",
            code="request_too_large",
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await ApiError(400, "the Content-Length header is not a number").response()(scope, receive, send)
                return
            if declared > self.max_bytes:
                await self._too_large(str(declared)).response({"Connection": "close"})(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        first: dict | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it
                first = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(f"over {self.max_bytes}").response({"Connection": "close"})(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay = [first or {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


# ---------------------------------------------------------------- helpers


def _jsonable(x: Any) -> Any:
    """RAG sources (dataclasses, pydantic models, dicts, numpy scalars) as JSON values; a dataclass with a
    ``to_dict`` method (a RAG ``Hit``: it adds the citation) as what that returns."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type) and callable(getattr(x, "to_dict", None)):
        return _jsonable(x.to_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, BaseModel):
        return x.model_dump(mode="json")
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def cache_context(model_id: str, settings: GenerationSettings, earlier: list[dict]) -> str:
    """The plain-chat cache context: the same question only hits when the model, the settings and every earlier
    message are the same (a hash of the earlier messages keeps the string short)."""
    history = hashlib.sha256(json.dumps(earlier, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    return f"chat;model={model_id};{settings.key()};history={history}"


@dataclasses.dataclass
class _Answer:
    """What one request produced, before it is shaped as a response."""

    text: str
    finish_reason: str  # "stop" | "length"
    usage: dict | None  # {"prompt_tokens", "completion_tokens", "total_tokens"}; None when unknown
    cache: str | None = None  # "hit" | "miss"; None when no cache is involved
    sources: list | None = None  # RAG mode only


def _usage(c: Completion | None) -> dict | None:
    if c is None:
        return None
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


_NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # a cache hit generated nothing


_DONE = object()  # what _next returns at the end of a stream


def _next(it: Iterator[str]) -> Any:
    """The next delta, or ``_DONE`` (StopIteration cannot cross a thread-pool await)."""
    try:
        return next(it)
    except StopIteration:
        return _DONE


def _collect(stream: Iterator[str], parts: list[str]):
    """Yield ``stream``'s deltas, recording each in ``parts``; return the stream's :class:`Completion` if it returned
    one (see :meth:`ChatBackend.stream`), else None. Closing this generator closes ``stream`` (stops generation)."""
    it = iter(stream)
    try:
        while True:
            try:
                delta = next(it)
            except StopIteration as stop:
                return stop.value if isinstance(stop.value, Completion) else None
            parts.append(delta)
            yield delta
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------- the app


def create_app(
    backend: ChatBackend,
    *,
    rag: RagLike | None = None,
    cache: CacheLike | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    on_shutdown: Sequence[Callable[[], object]] = (),
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> FastAPI:
    """The API serving ``backend`` as ``model_name`` (default ``backend.model_id``); see the module docstring for the
    RAG and cache modes. ``api_key``: when set, every route but /health needs ``Authorization: Bearer <api_key>``.
    ``on_shutdown``: called when the server stops (the caller owns the components: e.g. ``cache.close`` saves the
    cache's vector index), in order, each failure logged. ``max_request_bytes``: larger request bodies are a 413."""
    if max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
    served = model_name or backend.model_id
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            for close in on_shutdown:
                try:
                    close()
                except Exception:
                    logger.exception("shutdown step %r failed", close)

    app = FastAPI(title="alignkit", description="OpenAI-compatible chat completions", version="1", lifespan=lifespan)
    app.add_middleware(_BodyLimitMiddleware, max_bytes=max_request_bytes)
    if api_key:  # added last: the outermost, so the key is checked before the body is read
        app.add_middleware(_ApiKeyMiddleware, api_key=api_key)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else None
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _as_api_error(exc).response()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served, "rag": rag is not None, "cache": cache is not None}

    def _model_card() -> dict:
        return {"id": served, "object": "model", "created": started, "owned_by": "alignkit"}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict:
        _check_model(model)
        return _model_card()

    def _check_model(model: str | None) -> None:
        if model is not None and model != served:
            raise ApiError(
                404, f"the model {model!r} does not exist; this server serves {served!r}", code="model_not_found", param="model"
            )

    # -- the three ways of answering, each run in a worker thread

    def _pipeline_for(body: ChatRequest) -> RagLike:
        """The pipeline, or a shallow copy generating with the request's settings when it names any; a sampled
        request's copy has no cache (a stored sample would be served to every later request)."""
        base = getattr(rag, "settings", None)
        if not body.generation_fields_set() or not isinstance(base, GenerationSettings):
            return rag
        settings = body.settings(base)
        if settings == base:
            return rag
        pipeline = copy.copy(rag)
        pipeline.settings = settings
        if settings.temperature > 0 and hasattr(pipeline, "cache"):
            pipeline.cache = None
        return pipeline

    def _answer_rag(pipeline: RagLike, messages: list[dict]) -> _Answer:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
        if question is None or not question.strip():
            raise ApiError(400, "messages: RAG mode needs a non-empty user message (the question)", param="messages")
        result = pipeline.answer(question)
        cached = getattr(result, "cached", False)
        completion = getattr(result, "completion", None)  # the generation's token counts and finish reason
        finish = getattr(result, "finish_reason", None) or getattr(completion, "finish_reason", None) or "stop"
        return _Answer(
            result.text,
            finish,
            _NO_TOKENS if cached else _usage(completion),
            "hit" if cached else "miss",
            _jsonable(list(getattr(result, "sources", []) or [])),
        )

    def _cache_slot(messages: list[dict], settings: GenerationSettings) -> tuple[str, str] | None:
        """``(question, context)`` when this request may use the cache: a cache, greedy, ending with a user turn."""
        if cache is None or settings.temperature != 0 or messages[-1]["role"] != "user":
            return None
        return messages[-1]["content"], cache_context(backend.model_id, settings, messages[:-1])

    def _cache_get(slot: tuple[str, str] | None) -> str | None:
        if slot is None:
            return None
        try:
            hit = cache.get(slot[0], context=slot[1])
            return hit if isinstance(hit, str) else None
        except Exception:  # a broken cache costs a regeneration, not the request
            logger.exception("semantic cache lookup failed; generating")
            return None

    def _cache_put(slot: tuple[str, str] | None, text: str) -> None:
        if slot is None:
            return
        try:
            cache.put(slot[0], text, context=slot[1])
        except Exception:
            logger.exception("semantic cache store failed; answer not cached")

    def _answer_chat(messages: list[dict], settings: GenerationSettings) -> _Answer:
        slot = _cache_slot(messages, settings)
        hit = _cache_get(slot)
        if hit is not None:
            return _Answer(hit, "stop", dict(_NO_TOKENS), "hit")
        (completion,) = backend.chat([messages], settings)
        if completion.finish_reason == "stop":  # a reply cut at max_tokens is not the answer to cache
            _cache_put(slot, completion.text)
        return _Answer(completion.text, completion.finish_reason, _usage(completion), None if slot is None else "miss")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        _check_model(body.model)
        messages = [m.as_dict() for m in body.messages]
        settings = body.settings()
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            pipeline = _pipeline_for(body) if rag is not None else None
            return await _stream(rid, created, messages, settings, pipeline, include_usage)
        try:
            if rag is not None:
                answer = await run_in_threadpool(_answer_rag, _pipeline_for(body), messages)
            else:
                answer = await run_in_threadpool(_answer_chat, messages, settings)
        except Exception as err:
            return _as_api_error(err).response()
        payload: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": served,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": answer.finish_reason}
            ],
        }
        if answer.usage is not None:
            payload["usage"] = answer.usage
        if answer.sources is not None:
            payload["sources"] = answer.sources
        headers = {CACHE_HEADER: answer.cache} if answer.cache else None
        return JSONResponse(payload, headers=headers)

    # -- streaming

    def _deltas(
        messages: list[dict],
        settings: GenerationSettings,
        pipeline: RagLike | None,
    ) -> tuple[Iterator[str], str | None, list[Completion]]:
        """``(text deltas, cache state, holder of the final Completion)``; a hit or a RAG answer is one delta."""
        final: list[Completion] = []
        if pipeline is not None:
            answer = _answer_rag(pipeline, messages)
            u = answer.usage or _NO_TOKENS
            final.append(Completion(answer.text, u["prompt_tokens"], u["completion_tokens"], answer.finish_reason))
            return iter([answer.text] if answer.text else []), answer.cache, final
        slot = _cache_slot(messages, settings)
        hit = _cache_get(slot)
        if hit is not None:
            final.append(Completion(hit, 0, 0, "stop"))
            return iter([hit] if hit else []), "hit", final

        def generate() -> Iterator[str]:
            parts: list[str] = []
            completion = yield from _collect(backend.stream(messages, settings), parts)
            if completion is not None:
                final.append(completion)
            if completion is not None and completion.finish_reason == "stop":
                _cache_put(slot, "".join(parts))

        return generate(), None if slot is None else "miss", final

    async def _stream(
        rid: str, created: int, messages: list[dict], settings: GenerationSettings, pipeline: RagLike | None, include_usage: bool
    ):
        """Errors found before the first delta (bad input, a backend that fails at once) are a normal JSON error
        response; a failure after the stream has started is sent as a last ``data: {"error": ...}`` event."""
        try:
            deltas, cache_state, final = await run_in_threadpool(_deltas, messages, settings, pipeline)
            first = await run_in_threadpool(_next, deltas)
        except Exception as err:
            return _as_api_error(err).response()

        def chunk(delta: dict, finish: str | None = None) -> str:
            obj = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""})
                delta = first
                while delta is not _DONE:
                    yield chunk({"content": delta})
                    delta = await run_in_threadpool(_next, deltas)
                completion = final[0] if final else None
                yield chunk({}, completion.finish_reason if completion else "stop")
                if include_usage:
                    obj = {
                        "id": rid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": served,
                        "choices": [],
                        "usage": _usage(completion),
                    }
                    yield f"data: {json.dumps(obj)}\n\n"
                yield "data: [DONE]\n\n"
            except Exception as err:
                yield f"data: {json.dumps(_as_api_error(err).body())}\n\n"
            finally:
                with contextlib.suppress(Exception):  # a client gone mid-stream: stop generating (see stream())
                    deltas.close()  # type: ignore[attr-defined]

        headers = {"Cache-Control": "no-cache"}
        if cache_state:
            headers[CACHE_HEADER] = cache_state
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app
