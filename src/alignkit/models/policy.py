"""The policy of the critic-free RL stages, with its reference, as one module (no value model).

Two layouts, as PPO's (:mod:`alignkit.models.actor_critic`) without the critic:

- separate: the policy (full, LoRA or QLoRA) and, when a KL term needs it, a frozen reference model of its own
  (:func:`alignkit.models.actor_critic.load_reference`);
- shared-base: ONE frozen base with the LoRA adapter ``default`` as the policy. The reference is the starting
  policy from the same base weights: the base with adapters disabled when the run starts from a plain model,
  or a frozen copy of the starting adapter (``reference``) when it starts from a LoRA adapter directory.

``forward(batch, num_sequences, width)`` returns the policy's per-token log-probs (and entropy) of the
response tokens of a collated batch, laid out (N, W) as :func:`alignkit.models.logprobs.completion_token_logps`.
"""

from __future__ import annotations

import torch

from alignkit.models.actor_critic import REFERENCE_ADAPTER, is_reference_parameter, load_reference
from alignkit.models.logprobs import TokenLogps, completion_token_logps


class Policy(torch.nn.Module):
    def __init__(self, model, *, shared: bool, reference=None):
        super().__init__()
        self.policy = model
        self.shared = shared
        self._reference = [reference]  # frozen and not trained: kept out of the module tree (and the optimizer)

    @property
    def has_reference_adapter(self) -> bool:
        return self.shared and REFERENCE_ADAPTER in getattr(self.policy, "peft_config", {})

    def forward(
        self,
        batch,
        num_sequences: int,
        width: int,
        with_entropy: bool = True,
        entropy_grad: bool = False,
        temperature: float = 1.0,
    ) -> TokenLogps:
        return completion_token_logps(
            self.policy,
            batch,
            num_sequences,
            width,
            with_entropy=with_entropy,
            entropy_grad=entropy_grad,
            temperature=temperature,
        )

    @torch.no_grad()
    def reference_logps(self, batch, num_sequences: int, width: int, temperature: float = 1.0) -> TokenLogps:
        """The starting policy's log-probs (no gradient): the separate reference model, the frozen ``reference``
        adapter, or the base with adapters off."""
        if not self.shared:
            if self._reference[0] is None:
                raise RuntimeError("no reference model was loaded (kl.coef is 0)")
            return completion_token_logps(self._reference[0], batch, num_sequences, width, temperature=temperature)
        if self.has_reference_adapter:
            self.policy.set_adapter(REFERENCE_ADAPTER)
            try:
                return completion_token_logps(self.policy, batch, num_sequences, width, temperature=temperature)
            finally:
                self.policy.set_adapter("default")
                self._trainable_default()
        with self.policy.disable_adapter():
            return completion_token_logps(self.policy, batch, num_sequences, width, temperature=temperature)

    def _trainable_default(self) -> None:
        """peft's set_adapter changes requires_grad: the policy adapter trains, the reference never does."""
        for n, p in self.policy.named_parameters():
            if "lora_" in n:
                p.requires_grad_(not is_reference_parameter(n))

    @property
    def reference(self):
        return self._reference[0]


def build_policy(
    policy_path: str, *, memory: str, finetune: str, lora: dict, model_kw: dict, with_reference: bool, device="cpu"
) -> Policy:
    """The policy (``load_causal_lm``) and, when ``with_reference``, its reference in the ``memory`` layout.

    ``lora``: ``{r, alpha, dropout, target_modules}``; ``model_kw``: dtype, attn_implementation,
    trust_remote_code, revision. The shared-base layout always has its reference at hand (it costs no weights).
    """
    from alignkit.models.errors import ModelError
    from alignkit.models.loading import _quiet_peft, is_adapter_dir, load_causal_lm, lora_keywords, resolve_source

    lora_kw = lora_keywords(lora)
    model = load_causal_lm(policy_path, finetune=finetune, **lora_kw, **model_kw)
    if memory == "shared-base":
        if not hasattr(model, "peft_config"):
            raise ModelError("memory 'shared-base' needs a LoRA policy (model.finetune lora or qlora)")
        source = resolve_source(policy_path)
        if is_adapter_dir(source):
            with _quiet_peft():
                model.load_adapter(source, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            model.set_adapter("default")
        policy = Policy(model, shared=True)
        policy._trainable_default()
        return policy
    reference = None
    if with_reference:
        reference = load_reference(policy_path, finetune=finetune, model_kw=model_kw, device=device)
        reference.requires_grad_(False)
        reference.eval()
    return Policy(model, shared=False, reference=reference)
