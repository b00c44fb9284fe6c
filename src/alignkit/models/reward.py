"""Reward models: a backbone plus a scalar head, trained, saved and loaded for scoring.

Two layouts, both ``save_pretrained`` directories with the tokenizer and ``alignkit_reward.json``
(what is needed to score text again: template, pooling, max length, truncation side, reward stats):

- ``pooling="last"`` (decoder LMs) and ``"cls"`` (encoders): a ``*ForSequenceClassification`` with
  ``num_labels=1``. The directory loads with plain ``AutoModelForSequenceClassification``. alignkit
  reads a decoder's reward at the last attended token, found from the attention mask (packed: the
  sequence's last token) — not from ``config.pad_token_id`` as transformers does, which reads one token
  early when the pad token is the EOS token that ends the sequence. BERT-like encoders use their [CLS]
  pooler.
- ``pooling="mean"`` / ``"response_mean"``: an ``AutoModel`` backbone saved as usual plus
  ``reward_head.safetensors`` (a ``Linear(hidden, 1)`` on the mean of the last hidden states over all
  tokens, or over the response's tokens only — the prompt is still attended to). transformers has no
  mean-pooling classification class, so this layout needs alignkit (``RewardModel.load``).

LoRA reward models train adapters (and the head); what is saved is always merged, a plain model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from alignkit.models._fs import atomic_dir
from alignkit.models.errors import ModelError

SPEC_FILE = "alignkit_reward.json"
HEAD_FILE = "reward_head.safetensors"
POOLINGS = ("last", "cls", "mean", "response_mean")
HEAD_POOLINGS = ("mean", "response_mean")  # pooled by alignkit, scored by a saved Linear head


@dataclass
class RewardSpec:
    """How a saved reward model turns (prompt, response) into a score; stored as ``alignkit_reward.json``."""

    kind: str  # "decoder" | "encoder"
    pooling: str  # "last" | "cls" | "mean" | "response_mean"
    template: str  # "chat" | "plain" (see alignkit.data.pairs.render_text)
    max_length: int  # longest scored sequence; longer ones are cut from the left
    truncation_side: str = "left"
    reward_mean: float | None = None  # over the training pairs (both sides), for RL reward normalisation
    reward_std: float | None = None
    base_model: str | None = None
    extra: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        (Path(directory) / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: str | Path) -> RewardSpec | None:
        path = Path(directory) / SPEC_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ModelError(f"{path}: not a valid reward-model spec: {err}") from None


def backbone_kind(config) -> str:
    """ "encoder" for masked-LM families (BERT, RoBERTa, DeBERTa ...), else "decoder"."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return "encoder" if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "decoder"


def resolve_pooling(pooling: str, kind: str) -> str:
    if pooling == "auto":
        return "last" if kind == "decoder" else "mean"
    if pooling not in POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; expected auto or one of {', '.join(POOLINGS)}")
    if pooling == "last" and kind == "encoder":
        raise ModelError("pooling 'last' is for decoder LMs; use 'cls' or 'mean' with an encoder")
    if pooling == "cls" and kind == "decoder":
        raise ModelError("pooling 'cls' is for encoders; use 'last' or 'mean' with a decoder LM")
    return pooling


class RewardScorer(torch.nn.Module):
    """``forward(input_ids, attention_mask) -> (N,)`` rewards.

    ``model`` is a ``*ForSequenceClassification`` (num_labels=1; pooling last/cls) or, for
    ``pooling="mean"``, a bare ``AutoModel`` backbone with ``head`` a ``Linear(hidden, 1)``.
    Either may be wrapped by peft (LoRA).
    """

    def __init__(self, model, pooling: str, kind: str, head: torch.nn.Linear | None = None):
        super().__init__()
        if (pooling in HEAD_POOLINGS) != (head is not None):
            raise ValueError(f"a head is needed exactly when pooling is one of {HEAD_POOLINGS}")
        self.model = model
        self.head = head
        self.pooling = pooling
        self.kind = kind

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        ends: torch.Tensor | None = None,
        pool_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Padded: input_ids, attention_mask (N, T) right-padded -> (N,) rewards.

        Packed (padding-free, decoders with pooling "last"): input_ids, position_ids (R, L), each row
        holding several sequences, positions restarting at 0 for each (transformers then masks
        attention block-diagonally); ends (N,) the flat index (row * L + column) of each sequence's
        last token -> (N,) rewards.

        ``pool_mask`` (N, T): the response tokens, which pooling "response_mean" averages.
        """
        kwargs = {"use_cache": False} if self.kind == "decoder" else {}
        if ends is not None:
            if self.kind != "decoder" or self.pooling != "last":
                raise ValueError("packed scoring needs a decoder with pooling 'last'")
            backbone, head = self._backbone_and_head()
            hidden = backbone(input_ids=input_ids, position_ids=position_ids, **kwargs).last_hidden_state  # (R, L, H)
            return head(hidden.flatten(0, 1)[ends]).squeeze(-1).float()  # (N,)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.pooling == "last":
            # The last attended token, from the mask: transformers' *ForSequenceClassification takes the last id that
            # is not the pad id, one token early when the pad token is the EOS token that ends the sequence.
            backbone, head = self._backbone_and_head()
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state  # (N, T, H)
            last = last_token_positions(attention_mask)  # (N,)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (N, H)
            return head(pooled).squeeze(-1).float()  # (N,)
        if self.head is None:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return out.logits[:, 0].float()  # (N,) the encoder's [CLS] pooler
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state  # (N, T, H)
        if self.pooling == "response_mean":
            if pool_mask is None:
                raise ValueError("pooling 'response_mean' needs pool_mask (the response tokens)")
            keep = pool_mask * attention_mask  # (N, T)
            empty = (keep.sum(1) == 0).nonzero().flatten().tolist()
            if empty:  # never pool over nothing (or fall back to the whole conversation)
                raise ModelError(
                    f"pooling 'response_mean': sequence {empty[0]} of the batch has no response tokens "
                    "(its response could not be located, or truncation removed it)"
                )
            m = keep.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (N, H)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()  # (N,)

    def _backbone_and_head(self):
        """The decoder stack and the ``score`` head inside a ``*ForSequenceClassification`` (LoRA layers included)."""
        hf = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return getattr(hf, hf.base_model_prefix), hf.score


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, T) attention mask -> (N,) index of each row's last attended token (right or left padding)."""
    cols = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    return (cols * (attention_mask != 0)).argmax(-1)


def build_reward_scorer(
    name_or_path: str,
    *,
    pad_token_id: int,
    pooling: str = "auto",
    finetune: str = "full",
    lora_r: int = 16,
    lora_alpha: float = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: list[str] | str = "all-linear",
    dtype: str = "float32",
    gradient_checkpointing: bool = False,
    disable_dropout: bool = True,
    trust_remote_code: bool = False,
    revision: str | None = None,
    seed: int = 0,
) -> RewardScorer:
    """A trainable reward model on the backbone at ``name_or_path`` (a new scalar head, seeded)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from alignkit.models.loading import (
        _enable_checkpointing,
        _from_pretrained,
        _quiet_peft,
        disable_dropout,
        resolve_dtype,
        resolve_source,
    )

    if finetune not in ("full", "lora", "qlora"):
        raise ModelError(f"reward models train with finetune 'full', 'lora' or 'qlora', got {finetune!r}")
    qlora_device = None
    if finetune == "qlora":
        from alignkit.models.loading import _check_qlora_available

        qlora_device = _check_qlora_available()  # before any load
    source = resolve_source(name_or_path)
    config = _from_pretrained(AutoConfig, source, "config", revision=revision, trust_remote_code=trust_remote_code)
    kind = backbone_kind(config)
    pooling = resolve_pooling(pooling, kind)
    kw = dict(dtype=resolve_dtype(dtype), revision=revision, trust_remote_code=trust_remote_code)
    base_kw = dict(kw)  # how to load the full-precision base again (a QLoRA model is saved merged into it)
    if finetune == "qlora":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
        kw["device_map"] = {"": qlora_device}
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the new head's initialisation
        if pooling in HEAD_POOLINGS:
            model = _from_pretrained(AutoModel, source, "model", **kw)
            head = torch.nn.Linear(model.config.hidden_size, 1)
            torch.nn.init.normal_(head.weight, std=getattr(model.config, "initializer_range", 0.02))
            torch.nn.init.zeros_(head.bias)
        else:
            model = _from_pretrained(AutoModelForSequenceClassification, source, "model", num_labels=1, **kw)
            head = None
    model.config.pad_token_id = pad_token_id
    if disable_dropout:
        disable_dropout(model)
    if gradient_checkpointing:
        _enable_checkpointing(model)
    if finetune == "qlora":
        from peft import prepare_model_for_kbit_training

        from alignkit.models.loading import _keep_4bit_trainable_on_cpu

        if qlora_device == "cpu":
            _keep_4bit_trainable_on_cpu(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if finetune in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        task = "FEATURE_EXTRACTION" if pooling in HEAD_POOLINGS else "SEQ_CLS"
        lcfg = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=lora_target_modules,
            bias="none",
            task_type=task,
        )
        try:
            with _quiet_peft():
                model = get_peft_model(model, lcfg)
        except ValueError as err:
            raise ModelError(f"cannot add LoRA adapters to {name_or_path!r}: {str(err).splitlines()[0]}") from err
        if gradient_checkpointing:
            model.enable_input_require_grads()
    else:
        model.requires_grad_(True)
    if head is not None:
        head.requires_grad_(True)
    scorer = RewardScorer(model, pooling, kind, head)
    if finetune == "qlora":
        scorer.full_precision_base = (source, pad_token_id, base_kw)  # for save_reward_model's merge
    scorer.train()
    return scorer


def _plain(model, full_precision_base=None):
    """A model without LoRA wrappers: adapters merged into a copy (the training model is untouched). A QLoRA model
    (``full_precision_base``: how its base was loaded) is merged into a fresh full-precision copy of the base, not
    into the 4-bit weights, so the saved reward model is a plain transformers model."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    if full_precision_base is None:
        return copy.deepcopy(model).merge_and_unload()
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from alignkit.models.loading import _from_pretrained, _quiet_peft

    source, pad_token_id, kw = full_precision_base
    base_cls = type(model.get_base_model())
    base = _from_pretrained(
        base_cls, source, "model", **({"num_labels": 1} if "ForSequenceClassification" in base_cls.__name__ else {}), **kw
    )
    base.config.pad_token_id = pad_token_id
    with _quiet_peft():
        fresh = get_peft_model(base, copy.deepcopy(model.peft_config["default"]))
        set_peft_model_state_dict(fresh, {k: v.float().cpu() for k, v in get_peft_model_state_dict(model).items()})
    return fresh.merge_and_unload()


def save_reward_model(scorer: RewardScorer, tokenizer, spec: RewardSpec, out_dir: str | Path) -> Path:
    """Write a loadable reward model to ``out_dir`` atomically (LoRA merged), with its tokenizer and spec."""
    scorer = getattr(scorer, "module", scorer)
    model = _plain(scorer.model, getattr(scorer, "full_precision_base", None))
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(str(tmp))
        if scorer.head is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().contiguous().cpu() for k, v in scorer.head.state_dict().items()}
            save_file(state, str(tmp / HEAD_FILE), metadata={"pooling": scorer.pooling})
        tokenizer.save_pretrained(str(tmp))
        spec.save(tmp)
    return Path(out_dir).expanduser().absolute()


def load_reward_scorer(path: str, *, dtype: str = "float32", device: str | torch.device = "cpu"):
    """``(scorer, tokenizer, spec)`` from a saved reward model, frozen, in eval mode.

    A directory without ``alignkit_reward.json`` is read as a plain transformers sequence
    classifier with one label (e.g. a reward model from the Hub): decoder models are scored with
    their chat template, encoders with plain text, up to the tokenizer's ``model_max_length`` (2048 at most).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from alignkit.models.loading import _from_pretrained, load_tokenizer, resolve_dtype, resolve_source

    source = resolve_source(path)
    spec = RewardSpec.read(source) if Path(source).is_dir() else None
    config = _from_pretrained(AutoConfig, source, "config")
    tokenizer = load_tokenizer(source)
    kind = backbone_kind(config)
    if spec is None:
        if getattr(config, "num_labels", None) != 1:
            raise ModelError(
                f"{path}: not a reward model (no {SPEC_FILE}, and its config has {getattr(config, 'num_labels', '?')} labels, not 1)"
            )
        max_len = min(int(getattr(tokenizer, "model_max_length", 2048) or 2048), 2048)
        template = "chat" if getattr(tokenizer, "chat_template", None) else "plain"
        spec = RewardSpec(kind=kind, pooling="last" if kind == "decoder" else "cls", template=template, max_length=max_len)
    torch_dtype = resolve_dtype(dtype)
    head = None
    if spec.pooling in HEAD_POOLINGS:
        model = _from_pretrained(AutoModel, source, "model", dtype=torch_dtype)
        head_path = Path(source) / HEAD_FILE
        if not head_path.is_file():
            raise ModelError(f"{source}: mean-pooling reward model without {HEAD_FILE}")
        from safetensors.torch import load_file

        state = load_file(str(head_path))
        head = torch.nn.Linear(state["weight"].shape[1], 1)
        head.load_state_dict(state)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, source, "model", dtype=torch_dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    scorer = RewardScorer(model, spec.pooling, kind, head)
    scorer.requires_grad_(False)
    scorer.to(device)
    scorer.eval()
    return scorer, tokenizer, spec


class RewardModel:
    """Text in, scores out: the interface every RL stage and evaluation uses.

    >>> rm = RewardModel.load("runs/rm-minilm/final")
    >>> rm.score(["How do I bake bread?"], ["Mix flour, water, yeast and salt ..."])
    [1.234]

    Prompts are strings (one user turn) or message lists; texts are rendered with the reward
    model's own tokenizer and template, so it may use a different tokenizer from the policy.
    """

    def __init__(self, scorer: RewardScorer, tokenizer, spec: RewardSpec, device: str | torch.device = "cpu"):
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = torch.device(device)

    @classmethod
    def load(cls, path: str, *, device: str | torch.device = "cpu", dtype: str = "float32") -> RewardModel:
        scorer, tokenizer, spec = load_reward_scorer(path, dtype=dtype, device=device)
        return cls(scorer, tokenizer, spec, device)

    def encode(self, prompts, responses):
        """``Encoded(ids, starts, truncated)``: each (prompt, response) as the model reads it."""
        from alignkit.data.pairs import encode_conversations

        return encode_conversations(
            list(prompts), list(responses), self.tokenizer, template=self.spec.template, max_length=self.spec.max_length
        )

    @torch.no_grad()
    def score_encoded(self, encoded, *, batch_size: int = 16) -> list[float]:
        """Rewards of ``encode``'s output (batched by similar length, returned in input order)."""
        from alignkit.data.pairs import pad_sequences, response_mask

        ids, starts = encoded.ids, encoded.starts
        if self.spec.pooling == "response_mean":
            lost = [i for i, st in enumerate(starts) if st < 0]
            if lost:
                raise ModelError(
                    f"pooling 'response_mean': cannot locate response {lost[0]} (0-based, of {len(ids)}) in its tokenized "
                    "conversation (the chat template changed its text, or truncation to the reward model's max_length "
                    f"left none of it){f'; {len(lost)} such responses' if len(lost) > 1 else ''}"
                )
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            input_ids, mask = pad_sequences([ids[i] for i in chunk], self.tokenizer.pad_token_id)
            pool = response_mask([len(ids[i]) for i in chunk], [starts[i] for i in chunk], input_ids.shape[1])
            rewards = self.scorer(input_ids.to(self.device), mask.to(self.device), pool_mask=pool.to(self.device))
            for i, r in zip(chunk, rewards.tolist()):
                out[i] = r
        return out

    def score(self, prompts, responses, *, batch_size: int = 16, normalize: bool = False) -> list[float]:
        """One reward per (prompt, response); ``normalize`` maps it to (r - mean) / std of the training rewards."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        rewards = self.score_encoded(self.encode(prompts, responses), batch_size=batch_size)
        if normalize:
            if self.spec.reward_mean is None or not self.spec.reward_std:
                raise ModelError("this reward model stores no reward statistics to normalise with")
            rewards = [(r - self.spec.reward_mean) / self.spec.reward_std for r in rewards]
        return rewards

    __call__ = score
