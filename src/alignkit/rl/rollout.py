"""The rollout record: one RL step's sampled answers and everything computed about them (imports torch only).

Like OpenRLHF's ``Experience`` and torchtune's ``Trajectory``: the loop makes one ``Rollout`` per step
(generate, score, log-probs, advantages) and the update reads mini-batches of it with ``select``.
B sequences (rows), T the longest response; per-token tensors are aligned with ``response_ids`` (column t is
response token t) and 0 outside ``mask``. Tensors stay on the device they were made on (``to`` moves them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rollout:
    prompt_ids: list[list[int]]  # B prompts, token ids through the chat template (generation prompt included)
    response_ids: list[list[int]]  # B responses, sampled ids up to and including the first EOS (never empty)
    mask: torch.Tensor  # (B, T) float, 1 on response tokens, a prefix of each row
    ended: torch.Tensor  # (B,) float, 1 where the response ended with EOS (0: cut at max_new_tokens)
    scores: torch.Tensor  # (B,) float32, the sequence score that enters the reward (normalised, clipped, penalised)
    old_logps: torch.Tensor  # (B, T) log-probs of the response tokens under the sampling policy, no gradient
    ref_logps: torch.Tensor  # (B, T) the same under the reference policy
    kl: torch.Tensor  # (B, T) per-token KL(π || π_ref) estimate of the sampled tokens
    rewards: torch.Tensor  # (B, T) per-token rewards: -β·kl, plus the score on the last token
    advantages: torch.Tensor  # (B, T) advantages (whitened if the algorithm asks for it)
    values: torch.Tensor | None = None  # (B, T) the value model's estimates at sampling time; None without a critic
    returns: torch.Tensor | None = None  # (B, T) the value targets; None without a critic

    def __post_init__(self) -> None:
        B, T = self.mask.shape
        if len(self.prompt_ids) != B or len(self.response_ids) != B:
            raise ValueError(f"Rollout: {len(self.prompt_ids)} prompts and {len(self.response_ids)} responses for {B} rows")
        for name in ("old_logps", "ref_logps", "kl", "rewards", "advantages", "values", "returns"):
            x = getattr(self, name)
            if x is not None and tuple(x.shape) != (B, T):
                raise ValueError(f"Rollout.{name} is {tuple(x.shape)}, expected (B, T) = {(B, T)}")
        for name in ("ended", "scores"):
            if tuple(getattr(self, name).shape) != (B,):
                raise ValueError(f"Rollout.{name} is {tuple(getattr(self, name).shape)}, expected (B,) = {(B,)}")

    def __len__(self) -> int:
        return len(self.response_ids)

    @property
    def width(self) -> int:
        """T: the longest response's length in tokens."""
        return self.mask.shape[1]

    def select(self, rows: Sequence[int]) -> Rollout:
        """The rollout of ``rows`` (in that order), its per-token tensors cut to the longest selected response."""
        rows = list(rows)
        sel = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        w = max(len(self.response_ids[i]) for i in rows)

        def tokens(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[sel][:, :w]

        return Rollout(
            prompt_ids=[self.prompt_ids[i] for i in rows],
            response_ids=[self.response_ids[i] for i in rows],
            mask=tokens(self.mask),
            ended=self.ended[sel],
            scores=self.scores[sel],
            old_logps=tokens(self.old_logps),
            ref_logps=tokens(self.ref_logps),
            kl=tokens(self.kl),
            rewards=tokens(self.rewards),
            advantages=tokens(self.advantages),
            values=tokens(self.values),
            returns=tokens(self.returns),
        )

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with every tensor on ``device``."""
        tensors = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor)})
