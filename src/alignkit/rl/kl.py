"""The KL penalty of RLHF: per-token estimators of KL(π || π_ref) and the controllers of its coefficient β
(imports torch only).

Shapes: B sequences, T response tokens; log-prob tensors are (B, T).
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from tokens sampled from π. logprobs, ref_logprobs: (B, T).

    With ``log r = ref_logp - logp`` (J. Schulman, "Approximating KL divergence", 2020):

    - ``k1``: ``-log r = logp - ref_logp``; unbiased, can be negative per token. The penalty of
      Ziegler et al. 2019 eq. 2 / Stiennon et al. 2020 eq. 1 and TRL's ``kl_penalty="kl"``.
    - ``k2``: ``(log r)² / 2``; biased, non-negative, low variance (TRL's ``"mse"``).
    - ``k3``: ``(r - 1) - log r``; unbiased and non-negative (since log r <= r - 1), lower variance
      than k1. Computed as ``expm1(log r) - log r`` for accuracy near r = 1.

    Returns (B, T) float32 and keeps the gradient (the caller detaches for rewards). Unmasked: the
    caller applies the mask (``advantages.token_rewards`` does).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    log_r = ref_logprobs.float() - logprobs.float()
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r


class FixedKLController:
    """A constant KL coefficient β (Ziegler et al. 2019 with no target; TRL ``FixedKLController``)."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: steer β so the policy's KL from the reference tracks a target.

    ``e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)``, ``β_{t+1} = β_t (1 + K_β e_t)`` with
    ``K_β = n_steps / horizon`` (OpenAI lm-human-preferences and TRL ``AdaptiveKLController``: n_steps is
    the number of rollouts consumed since the last update, horizon a number of rollouts).
    ``state_dict`` holds only the learned ``value``; target and horizon come from the config.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if init_kl_coef < 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """``current_kl``: the measured KL (a float or a 0-d tensor); ``n_steps``: rollouts since last update."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
