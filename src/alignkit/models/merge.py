"""Merge a LoRA adapter into its base model and save a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from alignkit.models._fs import atomic_dir
from alignkit.models.errors import ModelError
from alignkit.models.loading import (
    _adapter_base,
    _from_pretrained,
    _quiet_peft,
    is_adapter_dir,
    load_tokenizer,
    resolve_dtype,
    resolve_source,
    tokenizer_source,
)


def merge_adapter(adapter_dir: str, out_dir: str, *, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Load the base named in ``adapter_dir``, merge the adapter in (``merge_and_unload``), save to ``out_dir``.

    The result is a plain transformers model dir (safetensors, generation config, tokenizer — from
    the adapter dir if it has one, else the base), loadable without peft. Written atomically; an
    existing non-empty ``out_dir`` is an error unless ``overwrite``. Returns the absolute output path.
    """
    source = resolve_source(adapter_dir)
    if not is_adapter_dir(source):
        raise ModelError(f"{adapter_dir}: not an adapter directory (no adapter_config.json)")
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and out.resolve() == Path(source).resolve():
        raise ModelError(f"{out_dir}: the merged model cannot be written over its own adapter dir")
    torch_dtype = resolve_dtype(dtype)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with atomic_dir(out, overwrite=overwrite) as tmp:
        base_source, base_revision = _adapter_base(source)
        base = _from_pretrained(AutoModelForCausalLM, base_source, "model", dtype=torch_dtype, revision=base_revision)
        with _quiet_peft():
            model = PeftModel.from_pretrained(base, source).merge_and_unload()
        tokenizer = load_tokenizer(tokenizer_source(source))
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out
