"""Policy and value model for PPO, as one module (one optimizer, one ``accelerator.prepare``).

Two layouts:

- separate: the policy (full or LoRA) and a value model of its own — a decoder backbone (the policy's
  starting weights, or a decoder reward model's) plus a scalar head; the reference is a third, frozen model.
- shared-base: ONE frozen base with two LoRA adapters, ``default`` (the policy, with the base's LM head)
  and ``value`` (with a scalar head on the last hidden state). The reference is the starting policy: the
  base with adapters disabled when PPO starts from a plain model, or, when it starts from a LoRA adapter
  (a LoRA SFT output), a third, frozen adapter ``reference`` holding that starting adapter, so the
  reference is the SFT model and not the pre-SFT base. The base weights are in memory once.

``forward(batch, num_sequences, width)`` returns, for the completion (response) tokens of a collated
batch, the policy's per-token log-probs and entropy and the value model's per-token values, all laid out
(N, W) like :func:`alignkit.models.logprobs.completion_token_logps`. The value of token t is read at the
position that predicts it (the state before the token), as the log-prob is.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import NamedTuple

import torch

from alignkit.models.logprobs import TokenLogps, completion_token_logps, position_in_example

REFERENCE_ADAPTER = "reference"  # shared-base: the frozen starting adapter, when PPO starts from one


def is_reference_parameter(name: str) -> bool:
    """A weight of the frozen ``reference`` adapter (``...lora_A.reference.weight``)."""
    return f".{REFERENCE_ADAPTER}." in name


class ActorCriticOutput(NamedTuple):
    logps: torch.Tensor  # (N, W) policy log-probs of the response tokens
    entropy: torch.Tensor | None  # (N, W); None when not asked for
    values: torch.Tensor  # (N, W)
    mask: torch.Tensor  # (N, W) 1.0 on response tokens


class ActorCritic(torch.nn.Module):
    def __init__(self, policy, value_backbone, value_head: torch.nn.Linear, *, shared: bool):
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.shared = shared
        if shared:
            self._value_backbone = [value_backbone]  # inside policy already: keep it out of the module tree
            named = [(n, p) for n, p in policy.named_parameters() if "lora_" in n]
            self._lora = [p for n, p in named if not is_reference_parameter(n)]  # policy and value adapters' weights
            self._frozen = [p for n, p in named if is_reference_parameter(n)]  # the reference adapter's, never trained
        else:
            self.value_backbone = value_backbone

    @property
    def backbone(self):
        return self._value_backbone[0] if self.shared else self.value_backbone

    @contextmanager
    def adapter(self, name: str):
        """Make LoRA adapter ``name`` the active one (shared-base), keeping every adapter trainable."""
        if not self.shared:
            yield
            return
        self._activate(name)
        try:
            yield
        finally:
            if name != "default":
                self._activate("default")

    def _activate(self, name: str) -> None:
        self.policy.set_adapter(name)
        for p in self._lora:
            p.requires_grad_(True)  # peft's set_adapter freezes the inactive adapter; both train
        for p in self._frozen:
            p.requires_grad_(False)  # and it makes the active one trainable, which the reference never is

    @property
    def has_reference_adapter(self) -> bool:
        """Shared-base started from a LoRA adapter: the reference is the frozen ``reference`` adapter."""
        return self.shared and REFERENCE_ADAPTER in self.policy.peft_config

    def policy_logps(
        self,
        batch,
        num_sequences: int,
        width: int,
        with_entropy: bool = True,
        entropy_grad: bool = True,
        temperature: float = 1.0,
    ) -> TokenLogps:
        with self.adapter("default"):
            return completion_token_logps(
                self.policy,
                batch,
                num_sequences,
                width,
                with_entropy=with_entropy,
                entropy_grad=entropy_grad,
                temperature=temperature,
            )

    def reference_logps(self, batch, num_sequences: int, width: int, temperature: float = 1.0) -> TokenLogps:
        """Shared-base only: the reference policy's log-probs (no entropy), from the same base weights.

        The reference is the starting policy: the frozen ``reference`` adapter when PPO started from a LoRA
        adapter, else the base with adapters disabled.
        """
        if not self.shared:
            raise RuntimeError("reference_logps is for the shared-base layout; the separate layout holds its own reference")
        if self.has_reference_adapter:
            with self.adapter(REFERENCE_ADAPTER):
                return completion_token_logps(self.policy, batch, num_sequences, width, temperature=temperature)
        with self.policy.disable_adapter():
            return completion_token_logps(self.policy, batch, num_sequences, width, temperature=temperature)

    def values(self, batch, num_sequences: int, width: int) -> torch.Tensor:
        keep = batch.labels != -100
        with self.adapter("value"):
            inputs = batch.model_inputs()
            hidden = self.backbone(**inputs).last_hidden_state  # (B, T, H)
        v = self.value_head(hidden[keep].to(self.value_head.weight.dtype)).squeeze(-1).float()  # (K,)
        owner = batch.example_index[keep]
        col = position_in_example(owner, num_sequences)
        return torch.zeros((num_sequences, width), dtype=torch.float32, device=v.device).index_put((owner, col), v)

    def forward(
        self,
        batch,
        num_sequences: int,
        width: int,
        with_entropy: bool = True,
        entropy_grad: bool = True,
        temperature: float = 1.0,
    ) -> ActorCriticOutput:
        lp = self.policy_logps(batch, num_sequences, width, with_entropy, entropy_grad, temperature)
        return ActorCriticOutput(lp.logps, lp.entropy, self.values(batch, num_sequences, width), lp.mask)

    def is_value_parameter(self, name: str) -> bool:
        """For the value learning rate: the head, the separate value backbone, or the ``value`` adapter."""
        return name.startswith(("value_head.", "value_backbone.")) or ".value." in name


def new_value_head(hidden_size: int, seed: int, dtype=torch.float32) -> torch.nn.Linear:
    """A scalar head drawn from ``seed`` (normal, std 1/sqrt(H + 1), as TRL's value head), bias 0."""
    head = torch.nn.Linear(hidden_size, 1, dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.nn.init.normal_(head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
    torch.nn.init.zeros_(head.bias)
    return head


def build_actor_critic(
    policy_path: str,
    *,
    memory: str,
    finetune: str,
    value_init: str = "policy",
    reward_path: str | None = None,
    lora: dict,
    model_kw: dict,
    seed: int = 0,
) -> ActorCritic:
    """The policy (``load_causal_lm``) plus its value model, in the ``memory`` layout (see the module doc).

    ``lora``: ``{r, alpha, dropout, target_modules}``; ``model_kw``: dtype, attn_implementation, trust_remote_code,
    revision. ``value_init="reward"`` (separate only) takes the backbone and head of a decoder reward model saved as
    ``*ForSequenceClassification`` (it must share the policy's vocabulary; the caller checks the tokenizer).
    """
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import _quiet_peft, is_adapter_dir, load_causal_lm, lora_keywords, resolve_source

    lora_kw = lora_keywords(lora)
    policy = load_causal_lm(policy_path, finetune=finetune, **lora_kw, **model_kw)
    hidden = policy.config.hidden_size
    if memory == "shared-base":
        from peft import LoraConfig

        if not hasattr(policy, "add_adapter") or not hasattr(policy, "peft_config"):
            raise ModelError("memory 'shared-base' needs a LoRA policy (model.finetune lora or qlora)")
        base_cfg = policy.peft_config["default"]
        policy.add_adapter(
            "value",
            LoraConfig(
                r=base_cfg.r,
                lora_alpha=base_cfg.lora_alpha,
                lora_dropout=base_cfg.lora_dropout,
                target_modules=base_cfg.target_modules,
                bias="none",
                task_type="CAUSAL_LM",
            ),
        )
        source = resolve_source(policy_path)
        if is_adapter_dir(source):
            # The policy adapter ``default`` starts as this adapter and trains; a second copy, frozen, is the
            # reference (the base with adapters off would be the pre-SFT model, not the starting policy).
            with _quiet_peft():
                policy.load_adapter(source, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        policy.set_adapter("default")
        for n, p in policy.named_parameters():
            p.requires_grad_("lora_" in n and not is_reference_parameter(n))
        backbone = policy.get_base_model().get_decoder()
        return ActorCritic(policy, backbone, new_value_head(hidden, seed), shared=True)
    if value_init == "reward":
        from transformers import AutoModelForSequenceClassification

        from alignkit.models.loading import _from_pretrained, resolve_dtype, resolve_source

        rm = _from_pretrained(
            AutoModelForSequenceClassification,
            resolve_source(reward_path),
            "model",
            dtype=resolve_dtype(model_kw.get("dtype", "float32")),
        )
        head = getattr(rm, "score", None)
        if head is None or head.out_features != 1 or not hasattr(rm, "get_decoder"):
            raise ModelError(f"value.init 'reward': {reward_path} is not a decoder reward model with a 1-output score head")
        new_head = torch.nn.Linear(head.in_features, 1, dtype=head.weight.dtype)
        with torch.no_grad():
            new_head.weight.copy_(head.weight)
            if head.bias is not None:
                new_head.bias.copy_(head.bias)
            else:
                new_head.bias.zero_()
        backbone = rm.get_decoder()
        backbone.requires_grad_(True)
        return ActorCritic(policy, backbone, new_head, shared=False)
    value_lm = load_causal_lm(policy_path, finetune=finetune, **lora_kw, **model_kw)
    backbone = value_lm.get_base_model().get_decoder() if hasattr(value_lm, "get_base_model") else value_lm.get_decoder()
    return ActorCritic(policy, backbone, new_value_head(hidden, seed), shared=False)


def load_reference(policy_path: str, *, finetune: str, model_kw: dict, device: torch.device | str = "cpu"):
    """The separate layout's frozen reference: the starting policy, exactly as ``build_actor_critic`` loads it.

    Full and LoRA: the model (an adapter merged into its base), in ``model_kw``'s dtype. QLoRA: the same 4-bit base
    with the adapter left unmerged (a fresh adapter is a no-op), because the policy computes with the quantized
    weights and a full-precision reference would differ from it before any update.
    """
    from alignkit.models.loading import load_causal_lm

    if finetune != "qlora":
        return load_causal_lm(policy_path, finetune="none", **model_kw).to(device)
    ref = load_causal_lm(policy_path, finetune="qlora", **model_kw)  # placed by its device map, like the policy
    ref.requires_grad_(False)
    ref.eval()
    return ref


def parameter_bytes(*modules) -> int:
    """Bytes of the distinct parameter and buffer storages held by ``modules`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total
