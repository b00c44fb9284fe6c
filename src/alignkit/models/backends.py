"""Chat generation backends: the one interface the server and the RAG pipeline generate through.

A backend turns chat conversations (lists of ``{"role", "content"}`` dicts) into completions. Two ship:

- :class:`TransformersBackend`: the model in this process through transformers ``generate`` with the KV
  cache (CPU or one GPU). Reuses :mod:`alignkit.models.generation` (chat template, eos handling, seeded
  sampling) and :mod:`alignkit.models.loading` (full models and LoRA adapters). One ``threading.Lock``
  serialises generation: concurrent callers wait their turn and never share a batch, so a greedy answer
  does not depend on what else is being served.
- :class:`VLLMBackend`: vLLM's offline ``LLM.chat`` on a CUDA GPU (``pip install 'alignkit[vllm]'``) with
  paged attention and continuous batching; concurrent callers are gathered into one ``LLM.chat`` call.
  This is the way to scale serving on GPUs. vLLM is imported lazily; it is not a dependency of alignkit.

Anything with the :class:`ChatBackend` shape (a test double, a remote API client) can be passed instead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from alignkit.errors import first_line
from alignkit.models.errors import ModelError

MAX_CHARS_PER_TOKEN = 16  # a prompt longer than context x this many characters cannot fit: refused before tokenising
VLLM_HINT = "the vllm backend needs vLLM on a CUDA machine: pip install 'alignkit[vllm]'"
BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class GenerationSettings:
    """How to generate one completion. ``temperature == 0`` is greedy (``top_p`` and ``seed`` then unused)."""

    max_new_tokens: int = 256  # most new tokens per completion (the EOS token included)
    temperature: float = 0.0  # 0: greedy; > 0: sampling at this temperature
    top_p: float = 1.0  # nucleus sampling mass, in (0, 1]
    seed: int | None = 0  # seeds sampling (a forked RNG); None: the process RNG, so repeated calls differ

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ModelError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ModelError(f"top_p must be in (0, 1], got {self.top_p}")

    def key(self) -> str:
        """A stable string of every field (``max_new_tokens=256,temperature=0.0,top_p=1.0,seed=0``): cache keys."""
        return ",".join(f"{name}={value!r}" for name, value in asdict(self).items())


@dataclass
class Completion:
    """One generated reply."""

    text: str  # the new text only, decoded without special tokens
    prompt_tokens: int  # tokens of the chat-templated prompt
    completion_tokens: int  # new tokens generated, the final EOS included
    finish_reason: str  # "stop": the model ended its turn (EOS); "length": max_new_tokens was reached


@runtime_checkable
class ChatBackend(Protocol):
    """What the server and the RAG pipeline need from a generator."""

    model_id: str  # names the model (the server's default model name; part of cache keys)

    def chat(self, conversations: list[list[dict]], settings: GenerationSettings) -> list[Completion]:
        """One completion per conversation, in order."""
        ...

    def stream(self, conversation: list[dict], settings: GenerationSettings) -> Iterator[str]:
        """The reply to one conversation as text deltas; concatenated they equal ``chat``'s text for greedy settings.

        A generator may *return* the final :class:`Completion` (``completion = yield from backend.stream(...)``)
        so callers learn the token counts and finish reason; one that returns None is allowed."""
        ...


def check_device(device: str | None) -> None:
    """A one-line :class:`ModelError` for a device torch does not know (``tpu``) or this machine does not have
    (``cuda`` without a GPU, ``cuda:3`` on a two-GPU machine); None (the default) is always fine. Cheap: call it
    before loading anything."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"--device {device!r}: not a device (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"--device {device!r}: no CUDA GPU is available on this machine")
        if dev.index is not None and dev.index >= count:
            raise ModelError(f"--device {device!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelError(f"--device {device!r}: MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ModelError(f"--device {device!r}: not supported (expected cpu, cuda, cuda:N or mps)")


def _device_and_dtype(device: str | None, dtype: str | None) -> tuple[str, str]:
    """The device (None: cuda when available, else cpu) and dtype (None: bf16 on a GPU that has it, else fp32)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return device, dtype


class TransformersBackend:
    """A causal LM in this process, generating with transformers ``generate`` and the KV cache.

    ``chat`` renders each conversation with the tokenizer's chat template and runs
    :func:`alignkit.models.generation.generate_ids` (left-padded batches of ``batch_size``); ``stream`` runs the
    same function in a worker thread with a ``TextIteratorStreamer``, so greedy streaming gives the same text.
    Build one from a directory with :meth:`load`, or wrap a model and tokenizer you already hold.
    """

    def __init__(self, model, tokenizer, *, model_id: str, batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.batch_size = batch_size
        self.max_positions: int | None = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self._lock = threading.Lock()  # one generate at a time: it flips train/eval mode and forks the global RNG

    @classmethod
    def load(
        cls, path: str, *, device: str | None = None, dtype: str | None = None, model_id: str | None = None, batch_size: int = 8
    ) -> TransformersBackend:
        """From a model directory, Hub id or LoRA adapter directory (merged into its base for faster generation)."""
        from alignkit.models.loading import load_causal_lm, load_tokenizer, resolve_source, tokenizer_source

        device, dtype = _device_and_dtype(device, dtype)
        source = resolve_source(path)
        model = load_causal_lm(source, dtype=dtype, finetune="none").to(device)
        return cls(model, load_tokenizer(tokenizer_source(source)), model_id=model_id or str(path), batch_size=batch_size)

    def prompt_tokens(self, conversation: list[dict]) -> int:
        """How many tokens the chat-templated prompt of ``conversation`` takes (no length check: a RAG pipeline
        asks this to leave out passages the model's context cannot hold)."""
        from alignkit.data.chat import encode_chat

        return len(encode_chat(self.tokenizer, conversation, add_generation_prompt=True))

    def encode(self, conversation: list[dict], settings: GenerationSettings) -> list[int]:
        """The chat-templated prompt's token ids; a template that rejects the messages or a prompt too long for the
        model's context is a one-line :class:`ModelError`. A prompt of more than ``MAX_CHARS_PER_TOKEN`` characters per
        context position is refused before anything is tokenised (tokenising megabytes costs seconds and gigabytes;
        no tokenizer averages 16 characters a token), then the token count is checked."""
        from alignkit.data.chat import encode_chat

        if self.max_positions is not None:
            chars = sum(len(str(m.get("content") or "")) for m in conversation)
            if chars > self.max_positions * MAX_CHARS_PER_TOKEN:
                raise ModelError(
                    f"the prompt is {chars} characters: more than the model's context of {self.max_positions} tokens "
                    f"can hold (at most {MAX_CHARS_PER_TOKEN} characters a token)"
                )
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError("the tokenizer has no chat template, so chat prompts cannot be rendered")
        try:  # content is tokenized as text: "<|im_end|>" typed by a user never becomes the control token
            ids = encode_chat(self.tokenizer, conversation, add_generation_prompt=True)
        except ModelError:
            raise
        except Exception as err:  # jinja2 TemplateError and the like: the messages do not fit the template
            first = first_line(err)
            raise ModelError(f"the chat template rejected the messages: {first}") from None
        if self.max_positions is not None and len(ids) + settings.max_new_tokens > self.max_positions:
            raise ModelError(
                f"the prompt is {len(ids)} tokens and max_new_tokens {settings.max_new_tokens}: more than the model's "
                f"context of {self.max_positions} tokens"
            )
        return ids

    def _completion(self, prompt_ids: list[int], new_ids: list[int], ended: bool) -> Completion:
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        return Completion(text, len(prompt_ids), len(new_ids), "stop" if ended else "length")

    def chat(self, conversations: list[list[dict]], settings: GenerationSettings) -> list[Completion]:
        from alignkit.models.generation import generate_ids

        encoded = [self.encode(c, settings) for c in conversations]
        if not encoded:
            return []
        with self._lock:
            new = generate_ids(
                self.model,
                self.tokenizer,
                encoded,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
                batch_size=self.batch_size,
            )
        return [self._completion(p, ids, ended) for p, (ids, ended) in zip(encoded, new)]

    def stream(self, conversation: list[dict], settings: GenerationSettings) -> Iterator[str]:
        """Text deltas as tokens are generated; returns the :class:`Completion` (``yield from``).

        Closing the generator early (a client that went away) stops generation at the next token, so the lock is
        freed for the next request."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from alignkit.models.generation import generate_ids

        prompt_ids = self.encode(conversation, settings)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

        hooked = _GenerateHook(self.model, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancel()]))
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with self._lock:
                    if cancelled.is_set():
                        raise _Cancelled
                    result["new"] = generate_ids(
                        hooked,
                        self.tokenizer,
                        [prompt_ids],
                        max_new_tokens=settings.max_new_tokens,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        seed=settings.seed,
                        batch_size=1,
                    )[0]
            except BaseException as err:  # handed to the consumer; the streamer is ended so it does not wait forever
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=work, name="alignkit-stream", daemon=True)
        worker.start()
        try:
            for delta in streamer:
                if delta:
                    yield delta
            worker.join()
        finally:
            cancelled.set()
        if "error" in result:
            raise result["error"]
        ids, ended = result["new"]
        return self._completion(prompt_ids, ids, ended)


class _Cancelled(Exception):
    """The stream was closed before its generation started."""


class _GenerateHook:
    """A model whose ``generate`` also gets ``extra`` keyword arguments (a streamer, stopping criteria); every other
    attribute is the model's. Lets :func:`generate_ids` stream without a copy of its logic."""

    def __init__(self, model, **extra):
        self._model = model
        self._extra = extra

    def generate(self, **kwargs):
        return self._model.generate(**kwargs, **self._extra)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


@dataclass
class _Pending:
    """A ``chat`` call waiting for the vLLM batcher."""

    conversations: list[list[dict]]
    settings: GenerationSettings
    future: Future  # resolves to list[Completion]


class VLLMBackend:
    """vLLM's offline engine (``vllm.LLM``) on a CUDA GPU: paged attention, CUDA graphs, continuous batching.

    Concurrent ``chat`` calls (the server's requests) are queued and a batcher thread hands everything waiting to
    one ``LLM.generate`` call (prompts as token ids from ``data.chat.encode_chat``) with a ``SamplingParams`` per conversation (per-request seeds, so a request's sample
    does not depend on its batch); if a batch fails, its calls are retried one by one so a bad request fails alone.
    The offline engine does not stream: :meth:`stream` yields the whole reply as one delta.
    ``llm_kwargs`` go to ``vllm.LLM`` (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``...).
    A LoRA adapter directory must be merged first (``alignkit merge``).
    """

    def __init__(
        self,
        path: str,
        *,
        model_id: str | None = None,
        dtype: str | None = None,
        max_batch: int = 256,
        llm_kwargs: dict | None = None,
    ):
        try:
            import vllm
        except ImportError:
            raise ModelError(VLLM_HINT) from None
        from alignkit.models.loading import is_adapter_dir, resolve_source

        source = resolve_source(path)
        if is_adapter_dir(source):
            raise ModelError(f"{path}: a LoRA adapter; the vllm backend serves full models: merge it first with 'alignkit merge'")
        self._llm = vllm.LLM(model=source, dtype=dtype or "auto", **(llm_kwargs or {}))
        self._tokenizer = self._llm.get_tokenizer()
        self._sampling_params = vllm.SamplingParams
        self.model_id = model_id or str(path)
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._batcher: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _params(self, settings: GenerationSettings):
        if settings.temperature == 0:
            return self._sampling_params(max_tokens=settings.max_new_tokens, temperature=0.0)
        return self._sampling_params(
            max_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed
        )

    @staticmethod
    def _completion(output) -> Completion:
        out = output.outputs[0]
        reason = "length" if out.finish_reason == "length" else "stop"
        return Completion(out.text, len(output.prompt_token_ids or []), len(out.token_ids), reason)

    def _run(self, pending: list[_Pending]) -> None:
        """One ``LLM.generate`` call for every pending conversation; results split back to each caller's future.
        Conversations are encoded here with ``data.chat.encode_chat`` (the chat template's control tokens from the
        template only, message content as text) and handed to vLLM as token ids: ``LLM.chat`` would render and
        tokenize the content itself, turning a ``<|im_start|>`` typed by a user into the control token. Every
        future is resolved, whatever happens (a caller must never wait forever)."""
        from alignkit.data.chat import encode_chat

        convs = [c for p in pending for c in p.conversations]
        try:
            params = [self._params(p.settings) for p in pending for _ in p.conversations]
            prompts = [{"prompt_token_ids": encode_chat(self._tokenizer, c, add_generation_prompt=True)} for c in convs]
            completions = [self._completion(o) for o in self._llm.generate(prompts, params, use_tqdm=False)]
            if len(completions) != len(convs):
                raise RuntimeError(f"vLLM returned {len(completions)} outputs for {len(convs)} conversations")
        except Exception as err:
            if len(pending) > 1:  # isolate the request at fault
                for p in pending:
                    self._run([p])
            else:
                pending[0].future.set_exception(err)
            return
        start = 0
        for p in pending:
            n = len(p.conversations)
            p.future.set_result(completions[start : start + n])
            start += n

    def _batch_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0].conversations)
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item.conversations)
            self._run(batch)

    def chat(self, conversations: list[list[dict]], settings: GenerationSettings) -> list[Completion]:
        if not conversations:
            return []
        with self._start_lock:
            if self._batcher is None:
                self._batcher = threading.Thread(target=self._batch_loop, name="alignkit-vllm-batcher", daemon=True)
                self._batcher.start()
        pending = _Pending(conversations, settings, Future())
        self._queue.put(pending)
        return pending.future.result()

    def stream(self, conversation: list[dict], settings: GenerationSettings) -> Iterator[str]:
        (completion,) = self.chat([conversation], settings)
        if completion.text:
            yield completion.text
        return completion


def load_backend(
    model: str, *, backend: str = "transformers", device: str | None = None, dtype: str | None = None
) -> ChatBackend:
    """The backend named ``backend`` ("transformers" | "vllm") serving ``model`` (a directory or Hub id; the
    transformers backend also takes LoRA adapter directories). ``device``: transformers only (None: cuda when
    available, else cpu); vLLM places the model on the GPU itself. ``dtype`` None: bf16 on a GPU, fp32 on CPU."""
    if backend == "transformers":
        check_device(device)
        return TransformersBackend.load(model, device=device, dtype=dtype)
    if backend == "vllm":
        if device not in (None, "cuda"):
            raise ModelError(f"the vllm backend runs on CUDA GPUs; device {device!r} is not supported")
        return VLLMBackend(model, dtype=dtype)
    raise ModelError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
