"""Load and save causal LMs and tokenizers: full fine-tuning, LoRA and QLoRA.

Everything here takes explicit arguments; the algorithms read their config and call these.
``name_or_path`` is a local directory or a Hugging Face Hub id (downloaded only if the Hub is
reachable and not disabled by ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from alignkit.errors import first_line
from alignkit.models._fs import atomic_dir
from alignkit.models.errors import ModelError

logger = logging.getLogger(__name__)

FINETUNE_MODES = ("full", "lora", "qlora", "none")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# A Hub id is "name" or "owner/name" made of letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")

QLORA_HINT = (
    "QLoRA needs bitsandbytes and a CUDA GPU (or, on CPU, a bitsandbytes that quantizes there, e.g. 0.50): "
    "pip install 'alignkit[qlora]'"
)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """``"float32" | "bfloat16" | "float16"`` (or fp32/bf16/fp16, or ``"auto"``) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return "auto"
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; expected one of float32, bfloat16, float16, auto") from None


def resolve_source(name_or_path: str) -> str:
    """An absolute path for an existing local dir, the id itself for a Hub id.

    A Hub id whose files ship in an installed package (``models.bundled``) resolves to that copy.

    A string that can only be a local path (absolute, ``./``, ``~``, backslashes, several ``/``)
    and does not exist is a one-line :class:`ModelError`, never a Hub 404.
    """
    name_or_path = str(name_or_path)
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"{name_or_path}: not a directory (expected a model directory or a Hub id)")
        return str(p.resolve())
    looks_local = name_or_path.startswith((".", "/", "~")) or "\\" in name_or_path or not _HUB_ID.fullmatch(name_or_path)
    if looks_local:
        raise ModelError(f"model path {name_or_path!r} does not exist")
    from alignkit.models.bundled import bundled_path

    return bundled_path(name_or_path) or name_or_path


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True for a local directory holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def tokenizer_source(source: str) -> str:
    """Where the tokenizer of a resolved model or adapter source lives: the source itself, or, for an adapter
    directory saved without a tokenizer, the base model named in its ``adapter_config.json``."""
    if is_adapter_dir(source) and not any((Path(source) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
        return _adapter_base(source)[0]
    return source


def _adapter_base(adapter_dir: str) -> tuple[str, str | None]:
    """``(base model source, base revision)`` named in an adapter dir's ``adapter_config.json``."""
    cfg_path = Path(adapter_dir) / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{cfg_path}: cannot read adapter config: {err}") from None
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{cfg_path}: no base_model_name_or_path, so the base model is unknown")
    # A relative base path is tried as given, then relative to the adapter dir.
    if not Path(base).expanduser().exists() and (Path(adapter_dir) / base).exists():
        base = str((Path(adapter_dir) / base).resolve())
    return resolve_source(base), cfg.get("revision")


def _from_pretrained(loader, source: str, what: str, **kwargs):
    """Call ``loader.from_pretrained`` turning "not found" errors into one-line ModelErrors."""
    if what == "model" and Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ModelError(f"{source}: not a model directory (no config.json or adapter_config.json)")
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if isinstance(err, ModelError):
            raise
        if Path(source).is_dir():
            raise ModelError(f"{source}: cannot load {what}: {first_line(err)}") from err
        raise ModelError(
            f"cannot load {what} {source!r}: not a local directory, and the Hub lookup failed ({first_line(err)})"
        ) from err


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The tokenizer at ``name_or_path``, with a pad token (eos if it had none) and right padding."""
    from transformers import AutoTokenizer

    source = resolve_source(name_or_path)
    if Path(source).is_dir() and not any(
        (Path(source) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")
    ):
        raise ModelError(f"{source}: no tokenizer files (tokenizer.json / tokenizer_config.json) in this directory")
    tok = _from_pretrained(AutoTokenizer, source, "tokenizer", revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"tokenizer {name_or_path!r} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide a deprecation warning peft triggers inside transformers on every wrap (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@functools.cache
def _bnb_quantizes_on_cpu() -> bool:
    """Whether the installed bitsandbytes quantizes to 4-bit NF4 on the CPU (its multi-backend builds do)."""
    try:
        import bitsandbytes.functional as F

        F.quantize_4bit(torch.zeros(64, dtype=torch.bfloat16), quant_type="nf4")
    except Exception:  # an old build, or a CPU library that failed to load: no CPU path
        return False
    return True


def _check_qlora_available() -> int | str:
    """Where a 4-bit base is placed (a ``device_map`` value): the current CUDA device, else ``"cpu"`` when
    bitsandbytes quantizes there."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(QLORA_HINT)
    if torch.cuda.is_available():
        return torch.cuda.current_device()
    if _bnb_quantizes_on_cpu():
        return "cpu"
    raise ModelError(QLORA_HINT)


def _keep_4bit_trainable_on_cpu(model) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` weight the first time the layer runs in
    eval mode without gradients, and the repacked matmul (``gemv_4bit``) has no backward: every later training step
    gets wrong gradients for all but the last layers (PPO, and any run with an eval pass, switches modes).
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _enable_checkpointing(model) -> None:
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.x name
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def lora_keywords(lora: Mapping) -> dict:
    """A LoRA section as a dict (``{r, alpha, dropout, target_modules}``) -> :func:`load_causal_lm`'s ``lora_*``
    keywords."""
    return {
        "lora_r": lora["r"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
        "lora_target_modules": lora["target_modules"],
    }


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str = "float32",
    finetune: str = "full",
    lora_r: int = 16,
    lora_alpha: float = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: list[str] | str = "all-linear",
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """A causal LM ready to train (or to use frozen), on CPU unless ``finetune="qlora"`` on a CUDA machine.

    ``finetune``:
      - ``"full"``: every parameter trainable; returned in train mode.
      - ``"lora"``: a ``peft.PeftModel`` whose only trainable parameters are the LoRA adapters
        (``lora_target_modules="all-linear"`` targets every linear layer except the output head).
      - ``"qlora"``: as lora, on a base loaded in 4-bit NF4 (double quantisation, bf16 compute) and
        prepared with ``peft.prepare_model_for_kbit_training``; needs bitsandbytes. Placed on the
        current CUDA device, or on the CPU when there is none and bitsandbytes quantizes there (0.50 does).
      - ``"none"``: every parameter frozen, eval mode (reference / reward-scoring models).

    If ``name_or_path`` is a local PEFT adapter dir, its base is loaded and then: for lora/qlora
    the adapter itself is trained further (the ``lora_*`` arguments are ignored); for full/none the
    adapter is merged into the base, giving a plain model.

    ``attn_implementation="sdpa"`` falls back to ``"eager"`` for architectures without an SDPA path
    (Gemma2). Returns a ``transformers.PreTrainedModel`` or a ``peft.PeftModel``.
    """
    if finetune not in FINETUNE_MODES:
        raise ModelError(f"unknown finetune {finetune!r}; expected one of {', '.join(FINETUNE_MODES)}")
    torch_dtype = resolve_dtype(dtype)
    if finetune == "qlora":
        qlora_device = _check_qlora_available()  # before any download or load
    source = resolve_source(name_or_path)
    adapter_dir = source if is_adapter_dir(source) else None
    base_source, base_revision = _adapter_base(adapter_dir) if adapter_dir else (source, revision)

    from transformers import AutoModelForCausalLM

    kwargs: dict = {
        "dtype": torch_dtype,
        "attn_implementation": attn_implementation,
        "trust_remote_code": trust_remote_code,
    }
    if base_revision is not None:
        kwargs["revision"] = base_revision
    if finetune == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": qlora_device}
    try:
        model = _from_pretrained(AutoModelForCausalLM, base_source, "model", **kwargs)
    except ModelError as err:
        # Some architectures (Gemma2: logit soft-capping) have no SDPA path; use eager, as transformers would.
        if attn_implementation != "sdpa" or "does not support an attention implementation" not in str(err):
            raise
        logger.info("%s has no SDPA attention; using eager attention", base_source)
        kwargs["attn_implementation"] = "eager"
        model = _from_pretrained(AutoModelForCausalLM, base_source, "model", **kwargs)

    if finetune in ("full", "none"):
        if adapter_dir is not None:
            from peft import PeftModel

            with _quiet_peft():
                model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        if finetune == "none":
            model.requires_grad_(False)
            model.eval()
            return model
        model.requires_grad_(True)
        if gradient_checkpointing:
            _enable_checkpointing(model)
        model.train()
        return model

    # lora / qlora
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if finetune == "qlora" and qlora_device == "cpu":
        _keep_4bit_trainable_on_cpu(model)
    if finetune == "qlora":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        if gradient_checkpointing:
            model.config.use_cache = False
    elif gradient_checkpointing:
        _enable_checkpointing(model)

    if adapter_dir is not None:
        with _quiet_peft():
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    else:
        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_target_modules,
            bias="none",
            task_type="CAUSAL_LM",
            revision=revision,  # recorded in adapter_config.json, used when the base is reloaded
        )
        try:
            with _quiet_peft():
                model = get_peft_model(model, config)
        except ValueError as err:
            raise ModelError(f"cannot add LoRA adapters to {name_or_path!r}: {first_line(err)}") from err
    if gradient_checkpointing:
        model.enable_input_require_grads()
    model.train()
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` to 0: ``nn.Dropout`` modules and the functional attention
    dropout that configs carry (``attention_dropout``), as TRL's ``disable_dropout`` does."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        config = getattr(m, "config", None)
        if config is not None and isinstance(getattr(config, "attention_dropout", None), float):
            config.attention_dropout = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; 4-bit packed weights count as their unpacked size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            itemsize = getattr(getattr(param, "quant_storage", None), "itemsize", 1)
            n = n * 2 * itemsize
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def save_model(model, tokenizer, out_dir: str, *, adapters: list[str] | None = None) -> Path:
    """Save ``model`` (and ``tokenizer`` when given) to ``out_dir`` atomically, replacing it if present.

    A full model is saved whole (safetensors, with its generation config); a ``PeftModel`` saves
    only its adapter (``adapter_config.json`` names the base model) — load either back with
    :func:`load_for_inference`. ``adapters``: save only these of a ``PeftModel``'s adapters (the RL
    stages' policy adapter ``default``, not their value or frozen reference adapters). Returns the absolute
    output path.
    """
    model = getattr(model, "module", model)  # unwrap DDP-style wrappers
    with atomic_dir(out_dir, overwrite=True) as tmp:
        if adapters is not None:
            model.save_pretrained(str(tmp), selected_adapters=adapters)
        else:
            model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return Path(out_dir).expanduser().absolute()


def load_for_inference(path: str, *, dtype: str = "float32", device: str | torch.device = "cpu"):
    """``(model, tokenizer)`` from a full model dir / Hub id or a PEFT adapter dir, frozen, eval mode.

    For an adapter dir the base named in ``adapter_config.json`` is loaded, then the adapter (left
    unmerged). The tokenizer comes from the adapter dir if it has one, else from the base.
    """
    torch_dtype = resolve_dtype(dtype)
    source = resolve_source(path)
    from transformers import AutoModelForCausalLM

    if is_adapter_dir(source):
        from peft import PeftModel

        base_source, base_revision = _adapter_base(source)
        base = _from_pretrained(AutoModelForCausalLM, base_source, "model", dtype=torch_dtype, revision=base_revision)
        with _quiet_peft():
            model = PeftModel.from_pretrained(base, source)
    else:
        model = _from_pretrained(AutoModelForCausalLM, source, "model", dtype=torch_dtype)
    tokenizer = load_tokenizer(tokenizer_source(source))
    model.requires_grad_(False)
    model.to(device)
    model.eval()
    return model, tokenizer
