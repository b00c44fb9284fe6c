"""``alignkit plan``: how much accelerator memory a stage (or a pipeline) needs, part by part, before running it.

Everything here is arithmetic on a model's shape (its ``config.json``) and the stage config; nothing is loaded.
Parts (bytes; ``P`` = parameters, ``T`` = trainable parameters):

- ``weights/<model>``: ``P × dtype bytes`` (float32 4, bfloat16/float16 2). QLoRA (``finetune: qlora``): every
  linear layer of the decoder blocks in 4-bit NF4 with double quantisation, ``0.5`` byte per weight plus its
  block scales: one 8-bit absmax per 64 weights and one fp32 scale per 256 of those (``1/64 + 4/16384`` byte per
  weight); the embeddings, norms, biases and LM head are not quantised (bitsandbytes skips the output head) and
  ``peft.prepare_model_for_kbit_training`` casts them to fp32, so they count 4 bytes each. LoRA adapters add
  ``r × (in + out)`` fp32 parameters per adapted linear layer (peft keeps adapters in fp32).
- ``gradients/<model>``: ``T × param bytes`` (one gradient per trainable parameter, in its dtype).
- ``optimizer/<model>``: ``adamw``: two states in the parameter's dtype (``2 × T × param bytes``; fp32: 8 bytes per
  parameter). ``adamw_8bit`` / ``paged_adamw_8bit`` (bitsandbytes): tensors of at least 4096 values keep two
  uint8 states plus one fp32 absmax per 256 values each (``2 + 8/256`` bytes per parameter), and two 256-entry
  fp32 quantisation maps shared by all tensors; smaller tensors keep fp32 states (8 bytes per parameter). Paged states have the same
  size; they live in CUDA unified memory and can spill to host memory under pressure (counted here in full).
- ``activations/<model>``: what autograd keeps for the backward pass of one micro-batch of ``B`` sequences of
  ``S`` tokens (``a`` = activation bytes: 2 under bf16/fp16 weights or mixed precision, else 4). Per decoder layer
  and token: two RMSNorms kept in fp32 (``2 × 2h × 4`` bytes), the attention's q, k, v (k and v repeated to the
  query heads, as transformers does for grouped-query attention with a padding mask), its output and the output
  projection's input (``5 × q_dim × a``), the gated MLP's gate, up, SiLU and product (``4 × I × a``), and for LoRA
  with dropout each adapted layer's dropped-out input (``in × a`` plus a 1-byte mask). Flash / memory-efficient
  attention keeps no ``S × S`` matrix; ``attn_implementation: eager`` adds ``heads × S² × (4 + a)`` per layer and
  sequence (the fp32 softmax and its cast). With gradient checkpointing only each layer's input
  (``L × B × S × h × a``) is kept, plus one layer's activations while it is recomputed. The LM head is run on the
  loss tokens only (alignkit's ``logits_to_keep``): ``K × V × (a + 8)`` for ``K`` such tokens (the logits, their
  fp32 copy and the log-softmax). Not modelled: the backward's transient gradient buffers, allocator
  fragmentation, CUDA context (~0.5 GB) and library workspaces — keep a margin.
- ``kv_cache/rollout``: sampling keeps keys and values for every layer: ``2 × L × kv_heads × head_dim × N ×
  (prompt + new tokens) × a`` for ``N`` sequences generated together.
- ``generation.backend: vllm`` (PPO, GRPO): the engine's own copy of the weights (``weights/vllm_engine``, in
  ``generation.vllm.dtype``; 2 bytes for ``auto``, vLLM's choice for bf16, fp16 and fp32 checkpoints) and its KV cache for the same
  sequences (``kv_cache/vllm``) instead of ``kv_cache/rollout``. vLLM reserves ``gpu_memory_utilization`` × the
  GPU's memory whatever it needs (a note says how much on the asked GPU); with ``sleep_mode`` it gives the memory
  back while the trainer works, so the sum over-states the peak by the smaller of the two phases.
- ``weights/reference``, ``weights/value``, ``weights/reward``: the other models a stage holds, by its layout:
  ``separate`` keeps a reference copy (4-bit again under QLoRA) and a value model of its own (PPO), ``shared-base``
  keeps one base with extra LoRA adapters (``weights/value_adapter``, ``weights/reference_adapter``); a reward
  model is loaded in its config's ``dtype`` by PPO / GRPO (``reward.dtype``, ``rewards.model.dtype``; default fp32).

The pure functions take explicit numbers; :func:`plan_config` reads a stage or pipeline config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from alignkit.errors import UserError

GB = 1e9
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit code + 8-bit absmax per 64 + fp32 scale per 256 blocks
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps fp32 states for tensors with fewer values
BNB_BLOCK = 256  # values per absmax of the 8-bit optimizer states
ENCODER_TYPES = ("bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "mpnet", "xlm-roberta")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class PlanError(UserError, ValueError):
    """A model or config ``alignkit plan`` cannot size (one line naming it)."""


# --- the model's shape -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer (Llama, Qwen2, Gemma2 layouts) that fix its memory."""

    name: str
    model_type: str
    vocab_size: int  # V
    hidden_size: int  # h
    num_layers: int  # L
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # I
    tie_word_embeddings: bool
    qkv_bias: bool = False  # Qwen2: biases on q, k, v
    dtype: str = "float32"  # the checkpoint's dtype (what dtype: auto loads)
    encoder: bool = False  # BERT-like: two-matrix MLP, biases, LayerNorms, position embeddings (no LM head)
    extra_embeddings: int = 0  # encoder: position and token-type embedding rows

    @classmethod
    def from_config(cls, name: str, c: dict) -> ModelShape:
        """From a ``config.json`` dict; a PlanError when it is not a decoder this planner knows the layout of."""
        try:
            heads = int(c["num_attention_heads"])
            hidden = int(c["hidden_size"])
            model_type = str(c.get("model_type", "llama"))
            encoder = "type_vocab_size" in c or model_type in ENCODER_TYPES
            extra = int(c.get("max_position_embeddings", 0)) + int(c.get("type_vocab_size", 0)) if encoder else 0
            return cls(
                name=name,
                model_type=model_type,
                vocab_size=int(c["vocab_size"]),
                hidden_size=hidden,
                num_layers=int(c["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(c.get("num_key_value_heads") or heads),
                head_dim=int(c.get("head_dim") or hidden // heads),
                intermediate_size=int(c["intermediate_size"]),
                tie_word_embeddings=bool(c.get("tie_word_embeddings", True)),
                qkv_bias=model_type == "qwen2" or bool(c.get("attention_bias", False)),
                dtype=str(c.get("torch_dtype") or c.get("dtype") or "float32"),
                encoder=encoder,
                extra_embeddings=extra,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise PlanError(f"{name}: config.json lacks {err} (alignkit plan sizes decoder-only LMs)") from None

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """One decoder layer's linear layers as ``(name, in_features, out_features)``."""
        h, i = self.hidden_size, self.intermediate_size
        if self.encoder:  # query, key, value, attention output, intermediate, output
            return [
                ("q_proj", h, h),
                ("k_proj", h, h),
                ("v_proj", h, h),
                ("o_proj", h, h),
                ("up_proj", h, i),
                ("down_proj", i, h),
            ]
        return [
            ("q_proj", h, self.q_dim),
            ("k_proj", h, self.kv_dim),
            ("v_proj", h, self.kv_dim),
            ("o_proj", self.q_dim, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]

    def linear_params(self) -> int:
        """Weights of all decoder-layer linear layers (what QLoRA quantises)."""
        return self.num_layers * sum(a * b for _, a, b in self.linears())

    def other_tensors(self) -> list[int]:
        """Sizes of the embeddings, LM head (unless tied), norms and biases: what stays unquantised."""
        h = self.hidden_size
        if self.encoder:  # embeddings (+ their LayerNorm); per layer two LayerNorms and every linear's bias
            per_layer = [2 * h, 2 * h, *(b for _, _, b in self.linears())]
            return [self.vocab_size * h, self.extra_embeddings * h, 2 * h, *per_layer * self.num_layers]
        norms_per_layer = 4 if self.model_type == "gemma2" else 2
        bias = [self.q_dim, self.kv_dim, self.kv_dim] if self.qkv_bias else []
        head = [] if self.tie_word_embeddings else [self.vocab_size * h]
        return [self.vocab_size * h, *head, *([h] * norms_per_layer + bias) * self.num_layers, h]

    def other_params(self) -> int:
        return sum(self.other_tensors())

    def param_tensors(self) -> list[int]:
        """The size of every parameter tensor (tied embeddings once)."""
        return [a * b for _, a, b in self.linears()] * self.num_layers + self.other_tensors()

    def num_params(self) -> int:
        return self.linear_params() + self.other_params()

    def without_lm_head(self) -> ModelShape:
        """The backbone of a sequence classifier or value model (the embedding stays, the LM head goes)."""
        return replace(self, tie_word_embeddings=True)


def lora_tensors(shape: ModelShape, r: int, target_modules: list[str] | str) -> list[int]:
    """Sizes (numel) of the LoRA tensors, ``A`` (r × in) and ``B`` (out × r) per adapted layer; ``"all-linear"``
    adapts every decoder linear layer (not the LM head), as peft does."""
    names = LINEAR_NAMES if target_modules == "all-linear" else tuple(target_modules)
    per_layer = [n for name, a, b in shape.linears() if name in names for n in (r * a, r * b)]
    return per_layer * shape.num_layers


# --- model state ----------------------------------------------------------------------------------------------


def weight_bytes(shape: ModelShape, *, finetune: str, dtype: str) -> int:
    """Bytes of the base weights: ``finetune`` full/lora/none in ``dtype``, or qlora (4-bit NF4, see the module doc)."""
    if finetune == "qlora":
        return round(shape.linear_params() * NF4_BYTES_PER_WEIGHT) + shape.other_params() * 4
    return shape.num_params() * dtype_bytes(dtype, shape)


def optimizer_bytes(tensor_sizes: list[int], param_bytes: int, optimizer: str) -> int:
    """Bytes of the optimizer states for trainable tensors of ``tensor_sizes`` values held in ``param_bytes`` each."""
    if optimizer in ("adamw", "paged_adamw"):
        per = 2 * param_bytes if optimizer == "adamw" else 8  # torch: states like the param; bitsandbytes 32-bit: fp32
        return sum(tensor_sizes) * per
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        total, any_8bit = 0, False
        for n in tensor_sizes:
            if n >= BNB_MIN_8BIT_SIZE:
                total += 2 * n + 2 * -(-n // BNB_BLOCK) * 4  # two uint8 states and their fp32 absmax per block
                any_8bit = True
            else:
                total += 8 * n
        return total + (2 * 256 * 4 if any_8bit else 0)  # the two quantisation maps, shared by every tensor
    raise PlanError(f"unknown optimizer {optimizer!r}")


def dtype_bytes(dtype: str, shape: ModelShape | None = None) -> int:
    if dtype == "auto":
        dtype = shape.dtype if shape is not None else "float32"
    return DTYPE_BYTES.get(dtype, 4)


def activation_bytes(
    shape: ModelShape,
    *,
    batch: int,
    seq_len: int,
    act_bytes: int,
    checkpointing: bool,
    loss_tokens: int,
    eager: bool = False,
    lora_dropout_inputs: int = 0,
    lm_head: bool = True,
) -> int:
    """Bytes autograd keeps for one micro-batch of ``batch`` × ``seq_len`` tokens (formula in the module doc).

    ``loss_tokens``: positions projected onto the vocabulary; ``lora_dropout_inputs``: the summed input width of
    the LoRA-adapted layers of one decoder layer when LoRA dropout is on (0 otherwise); ``lm_head=False`` for a
    reward/value model (a scalar head).
    """
    h, tokens = shape.hidden_size, batch * seq_len
    per_token = 2 * 2 * h * 4 + (5 * shape.q_dim + 4 * shape.intermediate_size) * act_bytes
    per_token += lora_dropout_inputs * (act_bytes + 1)
    layer = tokens * per_token
    if eager:
        layer += batch * shape.num_heads * seq_len * seq_len * (4 + act_bytes)
    body = shape.num_layers * tokens * h * act_bytes + layer if checkpointing else shape.num_layers * layer
    head = loss_tokens * shape.vocab_size * (act_bytes + 8) if lm_head else 0
    return body + tokens * h * 4 + head  # + the final norm's fp32 output


def kv_cache_bytes(shape: ModelShape, *, sequences: int, seq_len: int, act_bytes: int) -> int:
    """Keys and values of every layer for ``sequences`` sequences of ``seq_len`` tokens."""
    return 2 * shape.num_layers * shape.kv_dim * sequences * seq_len * act_bytes


# --- plans ------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Bytes per part (``weights/policy`` ...), their total, and whether it fits ``gpu_bytes`` (None: not asked)."""

    parts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def fits(self, gpu_bytes: int | None) -> bool | None:
        return None if gpu_bytes is None else self.total <= gpu_bytes

    def add(self, part: str, nbytes: int | float) -> None:
        if nbytes:
            self.parts[part] = self.parts.get(part, 0) + int(round(nbytes))


@dataclass(frozen=True)
class Trainee:
    """One model as a stage trains (or holds) it: shape, fine-tuning mode, dtype, LoRA settings, optimizer."""

    shape: ModelShape
    finetune: str  # full | lora | qlora | none
    dtype: str
    lora_r: int = 16
    lora_targets: list[str] | str = "all-linear"
    lora_dropout: float = 0.0
    optimizer: str = "adamw"
    mixed_precision: str = "no"

    @property
    def act_bytes(self) -> int:
        if self.mixed_precision in ("bf16", "fp16"):
            return 2
        if self.finetune == "qlora":
            return 4  # prepare_model_for_kbit_training makes the embeddings fp32: hidden states are fp32
        return dtype_bytes(self.dtype, self.shape)

    def trainable_tensors(self) -> tuple[list[int], int]:
        """(sizes of the trainable tensors, bytes per trainable value)."""
        if self.finetune in ("lora", "qlora"):
            return lora_tensors(self.shape, self.lora_r, self.lora_targets), 4
        if self.finetune == "full":
            return self.shape.param_tensors(), dtype_bytes(self.dtype, self.shape)
        return [], 4

    def lora_dropout_inputs(self) -> int:
        if self.finetune not in ("lora", "qlora") or self.lora_dropout == 0:
            return 0
        names = LINEAR_NAMES if self.lora_targets == "all-linear" else tuple(self.lora_targets)
        return sum(a for n, a, _ in self.shape.linears() if n in names)


def add_trained_model(plan: Plan, m: Trainee, role: str) -> None:
    """weights, gradients and optimizer states of ``m`` as ``<part>/<role>``."""
    plan.add(f"weights/{role}", weight_bytes(m.shape, finetune=m.finetune, dtype=m.dtype))
    sizes, nbytes = m.trainable_tensors()
    if m.finetune in ("lora", "qlora"):
        plan.add(f"weights/{role}_lora", sum(sizes) * nbytes)
    plan.add(f"gradients/{role}", sum(sizes) * nbytes)
    plan.add(f"optimizer/{role}", optimizer_bytes(sizes, nbytes, m.optimizer))


def add_activations(plan: Plan, m: Trainee, role: str, *, batch: int, seq_len: int, loss_tokens: int, **kw) -> None:
    plan.add(
        f"activations/{role}",
        activation_bytes(
            m.shape,
            batch=batch,
            seq_len=seq_len,
            act_bytes=m.act_bytes,
            loss_tokens=loss_tokens,
            lora_dropout_inputs=m.lora_dropout_inputs(),
            **kw,
        ),
    )


# --- model shapes from configs ----------------------------------------------------------------------------------


def resolve_shape(name_or_path: str, init=None, aliases: dict[str, ModelShape] | None = None) -> ModelShape:
    """The shape of ``name_or_path``: a pipeline stage's future output (``aliases``), the ``init`` spec when the
    directory does not exist yet, a local directory's ``config.json`` (an adapter's base followed), the hub's
    config (when online), or the shipped table (:mod:`alignkit.plan_models`). A PlanError naming it otherwise."""
    if aliases and name_or_path in aliases:
        return aliases[name_or_path]
    from alignkit.models.bundled import bundled_path, hub_offline

    path = Path(bundled_path(name_or_path) or name_or_path).expanduser()
    if init is not None and not path.exists():
        return shape_of_init(name_or_path, init.arch, init.size, init.vocab_size)
    if path.is_dir():
        adapter = path / "adapter_config.json"
        if adapter.is_file() and not (path / "config.json").is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise PlanError(f"{name_or_path}: adapter_config.json names no base model")
            return resolve_shape(base, aliases=aliases)
        cfg = path / "config.json"
        if not cfg.is_file():
            raise PlanError(f"{name_or_path}: a directory without config.json")
        return ModelShape.from_config(name_or_path, json.loads(cfg.read_text()))
    from alignkit.plan_models import KNOWN_CONFIGS

    if not hub_offline():
        try:
            from transformers import AutoConfig

            return ModelShape.from_config(name_or_path, AutoConfig.from_pretrained(name_or_path).to_dict())
        except PlanError:
            raise
        except Exception:  # no network, gated, unknown: the table below, or the error
            pass
    if name_or_path in KNOWN_CONFIGS:
        return ModelShape.from_config(name_or_path, KNOWN_CONFIGS[name_or_path])
    raise PlanError(
        f"model {name_or_path!r}: not a local directory, not reachable on the hub, and not in alignkit's table of "
        f"known models ({', '.join(sorted(KNOWN_CONFIGS))}); point model.name_or_path at a local copy"
    )


def shape_of_init(name: str, arch: str, size: str, vocab_size: int | None) -> ModelShape:
    """The shape ``alignkit init-model`` (``model.init``) would build: its exact transformers config."""
    from alignkit.models.init_model import SIZES, build_config

    vocab = SIZES[size]["vocab_size"] if vocab_size is None else vocab_size
    cfg = build_config(arch, size, vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return ModelShape.from_config(name, {**cfg.to_dict(), "torch_dtype": "float32"})


def parse_size(text: str) -> int:
    """``"24GB"``, ``"80 GiB"``, ``"24"`` (GB) or ``"512MB"`` -> bytes (GB = 10⁹, GiB = 2³⁰)."""
    t = text.strip().upper().replace(" ", "")
    units = {"GIB": 2**30, "MIB": 2**20, "TIB": 2**40, "GB": 10**9, "MB": 10**6, "TB": 10**12, "G": 10**9, "M": 10**6}
    for unit, scale in units.items():
        if t.endswith(unit):
            t, mult = t[: -len(unit)], scale
            break
    else:
        mult = 10**9
    try:
        value = float(t)
    except ValueError:
        raise PlanError(f"--gpu-memory {text!r}: expected a size such as 24GB, 80GiB or 40") from None
    if value <= 0:
        raise PlanError(f"--gpu-memory {text!r}: must be positive")
    return int(value * mult)


# --- stage plans ----------------------------------------------------------------------------------------------


def _trainee(shape: ModelShape, m, t) -> Trainee:
    """From a stage's ``model`` section (ModelConfig or the reward model's) and its ``train`` section."""
    return Trainee(
        shape=shape,
        finetune=m.finetune,
        dtype=m.dtype,
        lora_r=m.lora.r,
        lora_targets=m.lora.target_modules,
        lora_dropout=m.lora.dropout,
        optimizer=t.optimizer,
        mixed_precision=t.mixed_precision,
    )


def _eager(shape: ModelShape, attn: str) -> bool:
    """Whether attention materialises S × S scores (eager, and Gemma2, which alignkit runs with eager)."""
    return attn == "eager" or shape.model_type == "gemma2"


def _is_adapter(path: str, adapters: set[str]) -> bool:
    return path in adapters or (Path(path).expanduser() / "adapter_config.json").is_file()


def plan_sft(cfg, aliases=None) -> Plan:
    m, t, d = cfg.model, cfg.train, cfg.data
    pol = _trainee(resolve_shape(m.name_or_path, m.init, aliases), m, t)
    plan = Plan()
    add_trained_model(plan, pol, "policy")
    tokens = t.batch_size * d.max_length
    add_activations(
        plan,
        pol,
        "policy",
        batch=t.batch_size,
        seq_len=d.max_length,
        loss_tokens=tokens,
        checkpointing=m.gradient_checkpointing,
        eager=_eager(pol.shape, m.attn_implementation),
    )
    return plan


def plan_rm(cfg, aliases=None) -> Plan:
    m, t, d = cfg.model, cfg.train, cfg.data
    shape = resolve_shape(m.name_or_path, m.init, aliases).without_lm_head()
    rm = _trainee(shape, m, t)
    plan = Plan()
    add_trained_model(plan, rm, "reward")
    head = shape.hidden_size  # the scalar score head (fp32, trained in every mode)
    plan.add("weights/reward_head", head * 4)
    plan.add("gradients/reward", head * 4 if m.finetune != "full" else 0)
    plan.add("optimizer/reward", optimizer_bytes([head], 4, t.optimizer) if m.finetune != "full" else 0)
    add_activations(
        plan,
        rm,
        "reward",
        batch=2 * t.batch_size,  # chosen and rejected
        seq_len=d.max_length,
        loss_tokens=0,
        checkpointing=m.gradient_checkpointing,
        lm_head=False,
    )
    return plan


def plan_dpo(cfg, aliases=None, adapters: set[str] = frozenset()) -> Plan:
    m, t, d = cfg.model, cfg.train, cfg.data
    pol = _trainee(resolve_shape(m.name_or_path, m.init, aliases), m, t)
    plan = Plan()
    add_trained_model(plan, pol, "policy")
    pairs = 1 if cfg.loss.type == "kto" else 2
    add_activations(
        plan,
        pol,
        "policy",
        batch=pairs * t.batch_size,
        seq_len=d.max_length,
        loss_tokens=pairs * t.batch_size * d.max_length,
        checkpointing=m.gradient_checkpointing,
        eager=_eager(pol.shape, m.attn_implementation),
    )
    lora = m.finetune in ("lora", "qlora")
    adapter_ref = lora and cfg.ref.model is None and not _is_adapter(m.name_or_path, adapters)
    if cfg.uses_reference and not adapter_ref and not cfg.ref.precompute:
        ref_shape = resolve_shape(cfg.ref.model, aliases=aliases) if cfg.ref.model else pol.shape
        plan.add("weights/reference", weight_bytes(ref_shape, finetune="none", dtype=m.dtype))
    if cfg.ref.precompute:
        plan.notes.append("reference log-probs precomputed: one model in memory while training")
    return plan


def _reward_model_weights(plan: Plan, path: str | None, aliases, dtype: str = "float32") -> None:
    """A reward model as PPO / GRPO / self-reward hold it: a sequence classifier loaded in ``dtype`` (the reward
    config's ``dtype``; self-reward's judge and compare load it in fp32)."""
    if path:
        shape = resolve_shape(path, aliases=aliases).without_lm_head()
        plan.add("weights/reward", shape.num_params() * dtype_bytes(dtype, shape))


def _rl_policy(plan: Plan, cfg, aliases, adapters, *, with_reference: bool) -> Trainee:
    """The policy of PPO / GRPO and its reference, by ``cfg.memory``."""
    m, t = cfg.model, cfg.train
    pol = _trainee(resolve_shape(m.name_or_path, m.init, aliases), m, t)
    add_trained_model(plan, pol, "policy")
    if cfg.memory == "shared-base":
        if _is_adapter(m.name_or_path, adapters):  # a frozen copy of the starting adapter is the reference
            plan.add("weights/reference_adapter", sum(pol.trainable_tensors()[0]) * 4)
    elif with_reference:  # load_reference: the same 4-bit base under QLoRA, else a frozen copy in the model's dtype
        plan.add(
            "weights/reference", weight_bytes(pol.shape, finetune="qlora" if m.finetune == "qlora" else "none", dtype=m.dtype)
        )
    return pol


def plan_ppo(cfg, aliases=None, adapters: set[str] = frozenset()) -> Plan:
    m, t, d, g = cfg.model, cfg.train, cfg.data, cfg.generation
    plan = Plan()
    pol = _rl_policy(plan, cfg, aliases, adapters, with_reference=True)
    seq = d.max_length + g.max_new_tokens
    h = pol.shape.hidden_size
    if cfg.memory == "shared-base":  # a second adapter on the same base, and a scalar head
        sizes, nbytes = pol.trainable_tensors()
        sizes = [*sizes, h + 1]
        plan.add("weights/value_lora", sum(sizes) * nbytes)
        plan.add("gradients/value", sum(sizes) * nbytes)
        plan.add("optimizer/value", optimizer_bytes(sizes, nbytes, t.optimizer))
        value = pol
    else:
        if cfg.value.init == "reward":
            value = Trainee(resolve_shape(cfg.reward.model, aliases=aliases).without_lm_head(), "full", m.dtype)
            value = replace(value, optimizer=t.optimizer, mixed_precision=t.mixed_precision)
        else:
            value = replace(pol)
        add_trained_model(plan, value, "value")
        plan.add("weights/value_head", (h + 1) * 4)
    for role, model, lm_head in (("policy", pol, True), ("value", value, False)):
        add_activations(
            plan,
            model,
            role,
            batch=t.batch_size,
            seq_len=seq,
            loss_tokens=t.batch_size * g.max_new_tokens if lm_head else 0,
            checkpointing=m.gradient_checkpointing,
            eager=_eager(model.shape, m.attn_implementation),
            lm_head=lm_head,
        )
    _reward_model_weights(plan, cfg.reward.model, aliases, cfg.reward.dtype)
    _rollout_memory(plan, pol, g, sequences=cfg.ppo.rollout_size, seq_len=seq)
    return plan


def plan_grpo(cfg, aliases=None, adapters: set[str] = frozenset()) -> Plan:
    m, t, d, g, gc = cfg.model, cfg.train, cfg.data, cfg.generation, cfg.grpo
    plan = Plan()
    pol = _rl_policy(plan, cfg, aliases, adapters, with_reference=cfg.kl.coef > 0)
    seq = d.max_length + g.max_new_tokens
    add_activations(
        plan,
        pol,
        "policy",
        batch=t.batch_size,
        seq_len=seq,
        loss_tokens=t.batch_size * g.max_new_tokens,
        checkpointing=m.gradient_checkpointing,
        eager=_eager(pol.shape, m.attn_implementation),
    )
    if cfg.rewards.model is not None:
        _reward_model_weights(plan, cfg.rewards.model.path, aliases, cfg.rewards.model.dtype)
    gen = gc.generation_batch_size or gc.prompts_per_step * gc.group_size
    _rollout_memory(plan, pol, g, sequences=gen, seq_len=seq)
    return plan


def _rollout_memory(plan: Plan, pol: Trainee, g, *, sequences: int, seq_len: int) -> None:
    """The rollouts' memory: transformers' KV cache, or a vLLM engine's weights and KV cache (module doc)."""
    if getattr(g, "backend", "transformers") != "vllm":
        plan.add("kv_cache/rollout", kv_cache_bytes(pol.shape, sequences=sequences, seq_len=seq_len, act_bytes=pol.act_bytes))
        return
    # vLLM's "auto" is the checkpoint's dtype, but float16 for a float32 checkpoint: 2 bytes either way
    nbytes = 2 if g.vllm.dtype == "auto" else dtype_bytes(g.vllm.dtype, pol.shape)
    plan.add("weights/vllm_engine", pol.shape.num_params() * nbytes)
    plan.add("kv_cache/vllm", kv_cache_bytes(pol.shape, sequences=sequences, seq_len=seq_len, act_bytes=nbytes))
    plan.notes.append(
        f"vLLM reserves gpu_memory_utilization {g.vllm.gpu_memory_utilization:g} of the GPU's memory (at least the two "
        "vllm parts above)" + ("; sleep_mode frees it while the trainer works" if g.vllm.sleep_mode else "")
    )


JUDGE_PROMPT_TOKENS = 400  # the additive 5-point rubric around the prompt and answer (self-judging)


def plan_self_reward(cfg, aliases=None, adapters: set[str] = frozenset()) -> Plan:
    m = cfg.model
    train = cfg.dpo if cfg.mode == "dpo" else cfg.sft
    t = train.train
    pol = _trainee(resolve_shape(m.name_or_path, m.init, aliases), m, t)
    plan = Plan()
    add_trained_model(plan, pol, "policy")
    rows = 2 * t.batch_size if cfg.mode == "dpo" else t.batch_size
    add_activations(
        plan,
        pol,
        "policy",
        batch=rows,
        seq_len=train.max_length,
        loss_tokens=rows * train.max_length,
        checkpointing=m.gradient_checkpointing,
        eager=_eager(pol.shape, m.attn_implementation),
    )
    if cfg.mode == "dpo" and not cfg.dpo.precompute_ref and m.finetune == "full":
        plan.add("weights/reference", weight_bytes(pol.shape, finetune="none", dtype=m.dtype))
    g, j, p = cfg.generation, cfg.judge, cfg.prompts
    kv_gen = kv_cache_bytes(
        pol.shape, sequences=g.batch_size * g.n, seq_len=p.max_length + g.max_new_tokens, act_bytes=pol.act_bytes
    )
    kv_judge = 0
    if j.type == "self":
        judge_len = p.max_length + g.max_new_tokens + JUDGE_PROMPT_TOKENS + j.max_new_tokens
        kv_judge = kv_cache_bytes(pol.shape, sequences=j.batch_size, seq_len=judge_len, act_bytes=pol.act_bytes)
    elif j.type == "reward_model":
        _reward_model_weights(plan, j.model, aliases)
    plan.add("kv_cache/rollout", max(kv_gen, kv_judge))
    plan.notes.append("self-reward: generation, judging and training take turns; the KV cache is the larger of the two")
    return plan


STAGE_PLANNERS = {
    "sft": plan_sft,
    "rm": plan_rm,
    "dpo": plan_dpo,
    "ppo": plan_ppo,
    "grpo": plan_grpo,
    "self-reward": plan_self_reward,
}


def plan_stage(stage: str, cfg, aliases=None, adapters: set[str] = frozenset()) -> Plan:
    """The plan of one validated stage config (``stage``: sft, rm, dpo, ppo, grpo, self-reward or an alias)."""
    from alignkit.stages import ESTIMATOR_ALIASES, LOSS_ALIASES

    base = "dpo" if stage in LOSS_ALIASES else "grpo" if stage in ESTIMATOR_ALIASES else stage
    if base not in STAGE_PLANNERS:
        raise PlanError(f"alignkit plan sizes {', '.join(STAGE_PLANNERS)} and pipeline configs, not {stage}")
    fn = STAGE_PLANNERS[base]
    return fn(cfg, aliases) if base in ("sft", "rm") else fn(cfg, aliases, adapters)


def plan_pipeline(cfg) -> dict[str, Plan]:
    """One plan per stage of a pipeline config (``alignkit.config.pipeline.PipelineConfig``), in run order.

    A stage's output (``${sft}`` ...) does not exist yet: it is sized as the model that stage trains (an adapter
    directory for LoRA/QLoRA stages, so a later shared-base stage gets its reference adapter)."""
    from alignkit.orchestrate.pipeline import stage_configs

    configs, _ = stage_configs(cfg)
    aliases: dict[str, ModelShape] = {}
    adapters: set[str] = set()
    if cfg.base and cfg.init is not None and not Path(cfg.base).exists():
        i = cfg.init
        aliases[cfg.base] = shape_of_init(cfg.base, i.arch, i.size, i.vocab_size)
    out = Path(cfg.output_dir)
    plans = {}
    for stage, c in configs.items():
        plans[stage] = plan_stage(stage, c, aliases, adapters)
        final = str(out / stage / "final")
        aliases[final] = resolve_shape(c.model.name_or_path, getattr(c.model, "init", None), aliases)
        if stage != "rm" and c.model.finetune in ("lora", "qlora"):
            adapters.add(final)
    return plans


# --- output -----------------------------------------------------------------------------------------------------


def plan_json(plans: dict[str, Plan], gpu_bytes: int | None) -> dict:
    """``{"total_bytes", "fits", "breakdown"}``. One stage: its parts; a pipeline: ``"<stage>:<part>"`` keys and
    the largest stage's total (stages run one after another)."""
    if len(plans) == 1:
        (plan,) = plans.values()
        breakdown = dict(plan.parts)
    else:
        breakdown = {f"{s}:{k}": v for s, p in plans.items() for k, v in p.parts.items()}
    total = max(p.total for p in plans.values())
    return {"total_bytes": total, "fits": None if gpu_bytes is None else total <= gpu_bytes, "breakdown": breakdown}


def format_plan(plans: dict[str, Plan], gpu_bytes: int | None, title: str = "") -> str:
    """A readable table (GB = 10⁹ bytes; MB for plans under 1 GB) per stage, its total, and whether it fits."""
    lines = [title] if title else []
    unit, scale = ("GB", GB) if max(p.total for p in plans.values()) >= GB else ("MB", 1e6)
    for stage, plan in plans.items():
        width = max([len(k) for k in plan.parts] + [20])
        lines.append(f"\n{stage}" if len(plans) > 1 else "")
        lines.append(f"  {'part':<{width}}  {unit:>8}")
        for part, nbytes in plan.parts.items():
            lines.append(f"  {part:<{width}}  {nbytes / scale:>8.2f}")
        verdict = ""
        if gpu_bytes is not None:
            verdict = f"   {'fits' if plan.total <= gpu_bytes else 'does NOT fit'} in {gpu_bytes / GB:.1f} GB"
        lines.append(f"  {'total':<{width}}  {plan.total / scale:>8.2f}{verdict}")
        lines.extend(f"  note: {n}" for n in plan.notes)
    if len(plans) > 1:
        peak_stage = max(plans, key=lambda s: plans[s].total)
        peak = plans[peak_stage].total
        verdict = "" if gpu_bytes is None else f": {'fits' if peak <= gpu_bytes else 'does NOT fit'} in {gpu_bytes / GB:.1f} GB"
        lines.append(f"\npeak: {peak / GB:.2f} GB ({peak_stage}){verdict}")
    lines.append("(estimate; add ~1 GB for the CUDA context, kernels' workspaces and allocator fragmentation)")
    return "\n".join(lines).lstrip("\n")
