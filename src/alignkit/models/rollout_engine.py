"""Where the RL stages (PPO, GRPO) sample their rollouts: the policy itself, or an inference engine with its own
copy of the weights (vLLM), kept in sync after every update and checked at every sync.

``generation.backend``:

- ``transformers`` (default): :class:`PolicyEngine`, ``generate`` on the policy being trained. Nothing to sync.
- ``vllm``: :class:`VLLMEngine`, an in-process ("colocated", as TRL's default) ``vllm.LLM`` on the same GPU,
  built from the policy's base weights; sleep mode frees its memory while the trainer works. After every policy
  update, :class:`WeightSync` pushes the full weights (a LoRA policy's as base + B·A, dequantised when the base
  is 4-bit, computed without touching the trained module) and then **verifies the push**: the trainer and the
  engine score the same probe tokens, and :func:`alignkit.rl.rollout_sync.check_sync` stops the run with one
  line when the engine does not compute the trainer's policy, or when its log-probs did not move although the
  trainer's did (a push that silently did nothing).

:class:`CopyEngine` is the same design on transformers: its own copy of the weights, loaded from the base model
path, updated only through ``load_weights``. It is what the tests run the vLLM code path with on a CPU (vLLM
does not install there), and a way to rehearse a vLLM run's orchestration on any machine.

Every engine returns, with each sampled response, the engine's own log-probs of the sampled tokens at the
sampling temperature; the stages log their gap to the trainer's and can correct for it with truncated
importance sampling (``generation.tis_cap``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from alignkit.models.errors import ModelError
from alignkit.training.errors import TrainingError

MIN_MOVE = 1e-3  # mean |Δ log-prob| of the probe tokens above which the engine must be seen to move too
VLLM_HINT = "generation.backend vllm needs vLLM on a CUDA machine: pip install 'alignkit[vllm]'"


@dataclass
class Sample:
    """One sampled response."""

    ids: list[int]  # new tokens, up to and including the first EOS
    ended: bool  # stopped at EOS (False: cut at max_new_tokens)
    logps: list[float] | None  # the engine's log-prob of each of ``ids`` at the sampling temperature (None: not given)


class RolloutEngine(Protocol):
    """What the RL stages need from a sampler."""

    needs_sync: bool  # holds its own weights: they must be pushed after every update

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float, top_p: float, seed: int
    ) -> list[Sample]:
        """One response per token-id prompt, in order; sampling seeded by ``seed`` (row i: ``seed + i`` where
        the engine seeds per request)."""
        ...

    def score(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[list[float]]:
        """The log-prob (temperature 1) of every response token given its prompt and the tokens before it."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Take these tensors, named as in the base model's ``state_dict``."""
        ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...


# ------------------------------------------------------------------------------------------ log-probs


def response_logps(
    model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, temperature: float = 1.0, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model``'s log-probs of each response token at ``temperature`` (no gradient, eval mode), as (N, W) with a
    (N, W) mask: row i holds response i's tokens from column 0."""
    from alignkit.algorithms.rollouts import collate_rollout
    from alignkit.models.logprobs import completion_token_logps

    device = next(model.parameters()).device
    width = max(len(r) for r in responses)
    batch, _ = collate_rollout(prompts, responses, pad_token_id=pad_token_id, max_row_tokens=10**9)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = completion_token_logps(model, batch.to(device), len(responses), width, temperature=temperature)
    finally:
        model.train(was_training)
    return out.logps.cpu(), out.mask.cpu()


def as_padded(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """Ragged float rows -> (N, width), zero-padded."""
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.float32)
    return out


# ------------------------------------------------------------------------------------------ weights


def merged_weights(model, adapter: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The full weights of ``model`` under its base model's ``state_dict`` names, one tensor at a time.

    A plain model: its parameters. A peft model: every LoRA layer as base weight + its ``adapter``'s delta
    (default: the active adapter), in float32 (the engine rounds once, to its dtype), computed from a dequantised
    copy when the base is 4-bit, so the trained module is never modified (no merge/unmerge round trip, which re-quantises a 4-bit base each time); the
    adapters' own tensors and other adapters are left out. Tied weights are yielded once, as ``named_parameters``
    does."""
    if not hasattr(model, "peft_config"):
        for name, p in model.named_parameters():
            yield name, _dense(p)
        return
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    adapter = adapter or model.active_adapter
    base = model.get_base_model()
    seen: set[int] = set()
    for mod_name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            layer = module.get_base_layer()
            w = dequantize_module_weight(layer).detach().to(torch.float32)
            if adapter in module.lora_A:
                w = w + module.get_delta_weight(adapter).detach().to(torch.float32)
            yield f"{mod_name}.weight", w  # float32: one rounding, by the engine, to its own dtype
            if getattr(layer, "bias", None) is not None:
                yield f"{mod_name}.bias", layer.bias.detach()
            continue
        if any(isinstance(parent, LoraLayer) for parent in _parents(base, mod_name)):
            continue  # the base layer and adapter tensors of a LoRA layer: yielded above
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield (f"{mod_name}.{pname}" if mod_name else pname), _dense(p, module)


def _parents(root, name: str):
    parts = name.split(".") if name else []
    node = root
    for part in parts[:-1]:
        node = getattr(node, part)
        yield node


def _dense(p: torch.Tensor, module=None) -> torch.Tensor:
    if type(p).__name__ == "Params4bit":  # a 4-bit weight outside any LoRA layer
        from peft.utils.integrations import dequantize_module_weight

        return dequantize_module_weight(module).detach().to(torch.float32)
    return p.detach()


# ------------------------------------------------------------------------------------------ engines


class PolicyEngine:
    """Samples from the policy being trained (transformers ``generate``): nothing to sync."""

    needs_sync = False

    def __init__(self, model, tokenizer, *, batch_size: int | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, seed, batch_size=None) -> list[Sample]:
        from alignkit.models.generation import generate_ids

        got = generate_ids(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            batch_size=batch_size or self.batch_size or max(len(prompts), 1),
        )
        return [Sample(ids, ended, None) for ids, ended in got]

    def score(self, prompts, responses) -> list[list[float]]:
        logps, mask = response_logps(self.model, prompts, responses, pad_token_id=_pad_id(self.tokenizer))
        return [row[: int(m.sum())].tolist() for row, m in zip(logps, mask)]

    def load_weights(self, weights) -> None:  # the policy itself: always current
        pass

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass


class CopyEngine(PolicyEngine):
    """A transformers model of its own, loaded from ``path`` (the policy's base weights, as vLLM loads them),
    changed only by :meth:`load_weights`: the vLLM engine's design and interface without vLLM. Like vLLM it
    returns its own log-probs of what it sampled."""

    needs_sync = True

    def __init__(self, path: str, tokenizer=None, *, dtype: str = "float32", device: str | torch.device = "cpu", batch_size=None):
        from alignkit.models.loading import load_for_inference

        model, own_tokenizer = load_for_inference(path, dtype=dtype, device=device)
        super().__init__(model, tokenizer or own_tokenizer, batch_size=batch_size)
        self.pushes = 0

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, seed, batch_size=None) -> list[Sample]:
        got = super().generate(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size
        )
        responses = [x.ids if x.ids else [self.tokenizer.eos_token_id] for x in got]
        logps, _ = response_logps(
            self.model, prompts, responses, temperature=temperature or 1.0, pad_token_id=_pad_id(self.tokenizer)
        )
        return [Sample(x.ids, x.ended, row[: len(x.ids)].tolist()) for x, row in zip(got, logps)]

    def load_weights(self, weights) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights:
                if name not in params:
                    raise ModelError(f"rollout engine: no parameter named {name!r} in the engine's model")
                params[name].copy_(tensor.to(params[name].dtype))
        self.pushes += 1


class VLLMEngine:
    """vLLM's offline engine in this process on this GPU (``vllm.LLM``), built from ``path`` (a full model
    directory or hub id: the policy's base). ``llm_kwargs`` go to ``vllm.LLM`` (``gpu_memory_utilization``,
    ``max_model_len``, ``enable_sleep_mode``...). Log-probs are vLLM's processed ones (after temperature), the
    distribution sampled. Checked on a GPU by ``scripts/gpu_check.sh``; not runnable on a CPU-only machine."""

    needs_sync = True

    def __init__(self, path: str, *, dtype: str = "auto", seed: int = 0, sleep_mode: bool = True, llm_kwargs: dict | None = None):
        try:
            import vllm
        except ImportError:
            raise ModelError(VLLM_HINT) from None
        if not torch.cuda.is_available():
            raise ModelError("generation.backend vllm needs a CUDA GPU; on this machine use generation.backend transformers")
        self._vllm = vllm
        self.sleep_mode = sleep_mode
        self.llm = vllm.LLM(
            model=path,
            dtype=dtype,
            seed=seed,
            enable_sleep_mode=sleep_mode,
            logprobs_mode="processed_logprobs",
            **(llm_kwargs or {}),
        )
        self._asleep = False

    def _model(self):
        """The engine's torch model (the colocated, single-process layout)."""
        engine = self.llm.llm_engine
        for chain in (
            ("model_executor", "driver_worker", "model_runner", "model"),
            ("model_executor", "driver_worker", "worker", "model_runner", "model"),
        ):
            node = engine
            try:
                for attr in chain:
                    node = getattr(node, attr)
                return node
            except AttributeError:
                continue
        raise ModelError(
            "cannot reach the vLLM engine's model to load weights (set VLLM_ENABLE_V1_MULTIPROCESSING=0 so the "
            "engine runs in this process)"
        )

    def generate(self, prompts, *, max_new_tokens, temperature, top_p, seed) -> list[Sample]:
        self.wake_up()
        params = [
            self._vllm.SamplingParams(
                n=1, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed + i, logprobs=0
            )
            for i in range(len(prompts))
        ]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sampling_params=params, use_tqdm=False)
        samples = []
        for out in outs:
            o = out.outputs[0]
            ids = list(o.token_ids)
            logps = [step[t].logprob for step, t in zip(o.logprobs, ids)] if o.logprobs is not None else None
            samples.append(Sample(ids, o.finish_reason == "stop", logps))
        return samples

    def score(self, prompts, responses) -> list[list[float]]:
        self.wake_up()
        params = self._vllm.SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p) + list(r)} for p, r in zip(prompts, responses)], sampling_params=params, use_tqdm=False
        )
        rows = []
        for out, p, r in zip(outs, prompts, responses):
            pl = out.prompt_logprobs  # one dict per prompt token (None for the first)
            rows.append([pl[len(p) + k][tok].logprob for k, tok in enumerate(r)])
        return rows

    def load_weights(self, weights) -> None:
        self.wake_up()
        model = self._model()
        for name, tensor in weights:
            model.load_weights([(name, tensor.to("cuda"))])
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.sleep_mode and not self._asleep:
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache freed: the trainer gets the GPU
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False


class EngineTexts:
    """Answers of a saved model (full or LoRA adapter directory) through a separate engine: what ``compare`` and
    ``self-reward`` use with ``backend: vllm``. Prompts (a str: one user message, or a message list) go through
    the model's chat template (:func:`alignkit.models.generation.encode_prompt`); row i is sampled with seed
    ``seed + i`` (vLLM seeds per request, so an answer does not depend on its batch). A LoRA adapter is merged
    into its base first (``scratch_dir``/merged), since the engine loads full models."""

    def __init__(self, path: str, *, dtype: str = "auto", scratch_dir: str | None = None, llm_kwargs: dict | None = None):
        import tempfile

        from alignkit.data.tokenize import ensure_chat_template
        from alignkit.models import rollout_engine
        from alignkit.models.loading import is_adapter_dir, load_tokenizer, resolve_source

        source = resolve_source(path)
        if is_adapter_dir(source):
            from alignkit.models.merge import merge_adapter

            self._scratch = tempfile.TemporaryDirectory(dir=scratch_dir, prefix="alignkit-merged-")
            source = str(
                merge_adapter(source, str(Path(self._scratch.name) / "merged"), dtype="bfloat16" if dtype == "auto" else dtype)
            )
        self.tokenizer = load_tokenizer(source)
        ensure_chat_template(self.tokenizer)
        # looked up at call time: tests put a stand-in in VLLMEngine's place
        self.engine = rollout_engine.VLLMEngine(source, dtype=dtype, sleep_mode=False, llm_kwargs=llm_kwargs)

    def generate(self, prompts, *, max_new_tokens: int, temperature: float, top_p: float = 1.0, seed: int = 0) -> list[str]:
        from alignkit.models.generation import encode_prompt

        if not prompts:
            return []
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        got = self.engine.generate(ids, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        return self.tokenizer.batch_decode([x.ids for x in got], skip_special_tokens=True)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# ------------------------------------------------------------------------------------------ sync


class WeightSync:
    """Pushes the policy's weights to ``engine`` and proves the push worked.

    ``probe_prompts``: a few token-id prompts. At the first push the engine answers them greedily
    (``probe_tokens`` tokens); those fixed probe tokens are then scored by both sides after every push and
    compared by :func:`alignkit.rl.rollout_sync.check_sync` (``tolerance`` on the mean absolute log-prob gap).
    A failed check raises :class:`TrainingError` before any rollout is sampled from the wrong weights."""

    def __init__(
        self,
        engine: RolloutEngine,
        tokenizer,
        probe_prompts: Sequence[Sequence[int]],
        *,
        tolerance: float,
        probe_tokens: int = 16,
        adapter: str | None = None,
    ):
        self.engine, self.tokenizer = engine, tokenizer
        self.probe_prompts = [list(p) for p in probe_prompts]
        self.tolerance, self.probe_tokens, self.adapter = tolerance, probe_tokens, adapter
        self.probe_responses: list[list[int]] | None = None
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pushes = 0

    def push(self, model) -> dict[str, float]:
        """Push ``model``'s weights (a peft model: merged with ``adapter``) and verify. Returns the check's
        figures for the metrics (``sync/gap``, ``sync/trainer_moved``, ``sync/engine_moved``)."""
        from alignkit.rl.rollout_sync import check_sync

        self.engine.wake_up()
        self.engine.load_weights(merged_weights(model, self.adapter))
        self.pushes += 1
        if self.probe_responses is None:
            got = self.engine.generate(self.probe_prompts, max_new_tokens=self.probe_tokens, temperature=0.0, top_p=1.0, seed=0)
            self.probe_responses = [s.ids if s.ids else [self.tokenizer.eos_token_id] for s in got]
        trainer, mask = response_logps(model, self.probe_prompts, self.probe_responses, pad_token_id=_pad_id(self.tokenizer))
        engine = as_padded(self.engine.score(self.probe_prompts, self.probe_responses), trainer.shape[1])
        check = check_sync(trainer, engine, mask, tolerance=self.tolerance, previous=self.previous, min_move=MIN_MOVE)
        if not check.ok:
            raise TrainingError(f"weight sync {self.pushes} to the rollout engine failed: {check.problem}")
        if check.trainer_moved is None or check.trainer_moved > MIN_MOVE:
            # the next push is compared with this one; until the trainer has moved measurably, with the last
            # push it had: small updates add up, so a failing push is caught however low the learning rate
            self.previous = (trainer, engine)
        figures = {"sync/gap": check.gap}
        if check.trainer_moved is not None:
            figures["sync/trainer_moved"] = check.trainer_moved
            figures["sync/engine_moved"] = check.engine_moved
        return figures


def sample_rollouts(
    engine: RolloutEngine, prompts, *, max_new_tokens: int, temperature: float, top_p: float = 1.0, seed: int, batch_size: int
) -> list[Sample]:
    """One :class:`Sample` per token-id prompt from ``engine``: the policy itself generates in batches of
    ``batch_size`` (exactly transformers' ``generate``, as before engines existed); a separate engine takes them
    all at once and is put to sleep after, so the trainer gets the memory back."""
    if not engine.needs_sync:  # the policy itself
        return engine.generate(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size
        )
    out = engine.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    engine.sleep()
    return out


def engine_correction(
    trainer_logps: torch.Tensor, engine_logps: Sequence[Sequence[float] | None], mask: torch.Tensor, tis_cap: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """For rollouts a separate engine sampled: the per-token weights of the policy loss, (N, W) — truncated
    importance weights with ``tis_cap``, else ones — and the figures to log (``rollout/logprob_gap_*``, the mean
    TIS weight). ``trainer_logps`` (N, W): the trainer's log-probs of the sampled tokens at the sampling temperature;
    ``engine_logps``: the engine's, per row (None where it gave none: weight 1, left out of the gap)."""
    from alignkit.rl.rollout_sync import logprob_gap, truncated_is_weights

    width = trainer_logps.shape[1]
    given = torch.tensor([float(row is not None) for row in engine_logps]).unsqueeze(-1)  # (N, 1)
    rollout = as_padded([row if row is not None else [] for row in engine_logps], width)
    gap_mask = mask * given
    figures = {f"rollout/logprob_gap_{k}": v for k, v in logprob_gap(trainer_logps, rollout, gap_mask).items()}
    weights = torch.ones_like(trainer_logps)
    if tis_cap is not None:
        weights = truncated_is_weights(trainer_logps, rollout, gap_mask, tis_cap) + (1 - gap_mask)
        figures["rollout/tis_weight_mean"] = float((weights * mask).sum() / mask.sum().clamp(min=1))
    return weights, figures


def engine_base_path(name_or_path: str) -> str:
    """The full model a separate engine loads for a policy that starts from ``name_or_path``: the path itself, or
    an adapter directory's base model."""
    from alignkit.models.loading import _adapter_base, is_adapter_dir, resolve_source

    source = resolve_source(name_or_path)
    return _adapter_base(source)[0] if is_adapter_dir(source) else source


def build_engine(generation, *, policy, tokenizer, base_path: str, dtype: str, seed: int, device, batch_size=None):
    """The engine ``generation.backend`` names. ``base_path``: the full model the policy starts from (an adapter
    directory's base for a LoRA policy): what a separate engine loads before the first push."""
    if generation.backend == "transformers":
        return PolicyEngine(policy, tokenizer, batch_size=batch_size)
    if generation.backend == "vllm":
        v = generation.vllm
        kwargs = {"gpu_memory_utilization": v.gpu_memory_utilization}
        if v.max_model_len:
            kwargs["max_model_len"] = v.max_model_len
        return VLLMEngine(base_path, dtype=v.dtype, seed=seed, sleep_mode=v.sleep_mode, llm_kwargs=kwargs)
    raise ModelError(f"unknown generation.backend {generation.backend!r}")


def start_engine(
    generation, *, policy, tokenizer, name_or_path: str, dtype: str, seed: int, device, batch_size, probe_prompts, log
):
    """The rollout engine ``generation.backend`` names, and for a separate one its :class:`WeightSync`, after the
    first push (verified). ``policy``: the trained model (a peft model: its ``default`` adapter is the policy);
    ``probe_prompts``: token-id prompts for the sync check (the first ``sync_check.probe_prompts`` are used).
    Returns ``(engine, sync or None)``."""
    from alignkit.models import rollout_engine  # looked up at call time: tests put a stand-in in build_engine's place

    engine = rollout_engine.build_engine(
        generation,
        policy=policy,
        tokenizer=tokenizer,
        base_path=engine_base_path(name_or_path),
        dtype=dtype,
        seed=seed,
        device=device,
        batch_size=batch_size,
    )
    if not engine.needs_sync:
        return engine, None
    c = generation.sync_check
    sync = WeightSync(
        engine,
        tokenizer,
        list(probe_prompts)[: c.probe_prompts],
        tolerance=c.tolerance,
        probe_tokens=c.probe_tokens,
        adapter="default" if hasattr(policy, "peft_config") else None,
    )
    figures = sync.push(policy)
    log(f"rollouts from a separate {generation.backend} engine; first weight push verified (probe gap {figures['sync/gap']:.2e})")
    return engine, sync
