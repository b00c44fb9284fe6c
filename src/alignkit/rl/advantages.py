"""From scores to per-token rewards to advantages (imports torch only).

Two families. With a critic (PPO): per-token rewards (``token_rewards``: -β·KL at every token, the score on
the last) and GAE (``gae``). Without one, for the critic-free methods, the baseline comes from the other
samples: each prompt is answered ``group_size`` times and a sequence's advantage is its score against its
group's (``grpo_advantages``, ``dr_grpo_advantages``, ``rloo_advantages``), or the whole batch normalises
discounted returns (``reinforce_pp_advantages``).

Shapes: B sequences, T response tokens. ``mask`` (B, T) float or bool is 1 on real response tokens (up to
and including EOS) and 0 after, i.e. each row is a prefix of ones. Every per-token tensor returned here is 0
outside the mask. Group estimators take scores (B,) laid out group by group: rows ``[g·k, (g+1)·k)`` are the
k answers to prompt g; they return (B,) and ``per_token`` spreads them over each answer's tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_prefix_mask(m: torch.Tensor) -> None:
    if bool((m[:, 1:] > m[:, :-1]).any()):
        raise ValueError("mask must be 1 on a prefix of each row and 0 after (response tokens up to EOS)")


# --------------------------------------------------------------------------------------------------
# per-token rewards


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) long: the index of each row's last masked token. Rows with an all-zero mask give -1."""
    m = mask.bool()
    pos = torch.arange(m.shape[-1], device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).amax(dim=-1)


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float | torch.Tensor) -> torch.Tensor:
    """Per-token reward (B, T): ``-kl_coef * kl`` at every masked token, plus ``score`` at the last one.

    Ziegler et al. 2019 eq. 2 / Stiennon et al. 2020 eq. 1, spread over tokens as TRL
    ``PPOTrainer.compute_rewards`` and OpenRLHF ``compute_reward`` do: the KL term is per token and the
    sequence score (B,) lands on each row's last masked token (the EOS, or the last generated token of
    a truncated response). kl: (B, T) per-token KL estimate (``kl.kl_penalty``). 0 outside the mask.
    A row with an all-zero mask has nowhere to put its score: ValueError (silently dropping a reward is
    worse). Does not detach; in PPO the inputs are already constants.
    """
    m = mask.to(torch.float32)
    last = last_token_index(mask)
    if bool((last < 0).any()):
        empty = torch.nonzero(last < 0).flatten().tolist()
        raise ValueError(f"rows {empty} have an all-zero mask: no token to put the score on")
    rewards = -kl_coef * kl.float() * m
    return rewards + F.one_hot(last, m.shape[-1]).to(rewards.dtype) * score.float().unsqueeze(-1)


# --------------------------------------------------------------------------------------------------
# with a critic


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, Schulman et al. 2016 eq. 16, right to left over each row.

    ``δ_t = r_t + γ V_{t+1} - V_t``, ``A_t = δ_t + γλ A_{t+1}``, with ``V`` and ``A`` taken as 0 after each
    row's last masked token (the episode ends at EOS, so nothing is bootstrapped; values and rewards
    beyond the mask are ignored). Returns ``(advantages, returns)``, both (B, T) float32, 0 outside
    the mask, no gradient; ``returns = advantages + values`` (the value target; TRL
    ``compute_advantages``). The mask must be a prefix of ones on each row (ValueError otherwise).
    Advantages are not whitened here: see ``stats.masked_whiten``.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(f"rewards, values, mask must all be (B, T); got {rewards.shape}, {values.shape}, {mask.shape}")
    m = mask.to(torch.float32)
    _check_prefix_mask(m)
    r, v = rewards.float() * m, values.float() * m
    T = r.shape[-1]
    advantages = torch.zeros_like(r)
    last_adv = torch.zeros_like(r[:, 0])
    next_value = torch.zeros_like(r[:, 0])
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        last_adv = (delta + gamma * lam * last_adv) * m[:, t]  # 0 on padding, so padding adds nothing
        advantages[:, t] = last_adv
        next_value = v[:, t]
    return advantages, (advantages + v) * m


# --------------------------------------------------------------------------------------------------
# without a critic


@torch.no_grad()
def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_t = Σ_{s >= t} γ^{s-t} r_s`` over each row's masked tokens. rewards, mask: (B, T).

    Returns (B, T) float32, 0 outside the mask, no gradient (OpenRLHF ``get_cumulative_returns``). Equals
    ``gae(rewards, 0, mask, gamma, lam=1)``. The mask must be a prefix of ones on each row.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(f"rewards and mask must both be (B, T); got {rewards.shape}, {mask.shape}")
    m = mask.to(torch.float32)
    _check_prefix_mask(m)
    r = rewards.float() * m
    returns = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[-1])):
        running = r[:, t] + gamma * running
        returns[:, t] = running
    return returns


@torch.no_grad()
def reinforce_pp_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language
    Models"): per-token rewards with the KL penalty in them (``token_rewards``), their discounted returns, and
    the returns normalised over every masked token of the batch — a global baseline, no critic, no groups.

    ``A = (G - mean(G)) / sqrt(max(var(G), eps))``, mean and (biased) variance over the masked tokens of the
    whole (B, T) batch, as OpenRLHF ``advantage_estimator="reinforce"`` does. Returns ``(advantages,
    returns)``, both (B, T) float32, 0 outside the mask. The statistics are those of the tensor passed in:
    a multi-process caller gathers the batch first (or the normalisation is per process).
    """
    returns = discounted_returns(rewards, mask, gamma)
    m = mask.to(torch.float32)
    n = m.sum().clamp(min=1)
    mean = (returns * m).sum() / n
    var = (((returns - mean) * m) ** 2).sum() / n
    return (returns - mean) * var.clamp(min=eps).rsqrt() * m, returns


def _groups(scores: torch.Tensor, group_size: int, min_size: int) -> torch.Tensor:
    """(B,) -> (B / k, k) float32, checking the layout."""
    if group_size < min_size:
        raise ValueError(f"group_size must be >= {min_size}, got {group_size}")
    if scores.dim() != 1 or scores.numel() % group_size:
        raise ValueError(f"scores must be (B,) with B a multiple of group_size {group_size}; got shape {tuple(scores.shape)}")
    return scores.float().view(-1, group_size)


def grpo_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-normalised advantage (Shao et al. 2024, "DeepSeekMath", section 4.1.2, outcome supervision):
    ``A_i = (r_i - mean(group)) / (std(group) + eps)``.

    scores: (B,) grouped as in the module doc; returns (B,). ``std`` is the unbiased (n - 1) standard
    deviation, as TRL ``GRPOTrainer`` and OpenRLHF ``group_norm`` compute it; a group whose answers all scored
    the same gets advantage 0 (the ``eps`` keeps it finite). Needs ``group_size >= 2``.
    """
    g = _groups(scores, group_size, 2)
    return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)).flatten()


def dr_grpo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO's advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"):
    ``A_i = r_i - mean(group)``, without GRPO's division by the group's std (which up-weights groups that
    are nearly all right or all wrong). scores: (B,) grouped; returns (B,). ``group_size >= 1`` (a group of one
    gets 0).
    """
    g = _groups(scores, group_size, 1)
    return (g - g.mean(-1, keepdim=True)).flatten()


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!"; Ahmadian
    et al. 2024): ``A_i = r_i - mean of the other k - 1 scores of the group`` = ``k/(k-1) (r_i - mean(group))``.

    An unbiased baseline: it does not depend on sample i. scores: (B,) grouped; returns (B,). Needs
    ``group_size >= 2``.
    """
    g = _groups(scores, group_size, 2)
    k = g.shape[-1]
    return (g - (g.sum(-1, keepdim=True) - g) / (k - 1)).flatten()


GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: torch.Tensor, group_size: int, estimator: str = "grpo", scale: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Sequence advantages of the group estimators, one switch for all (verl ``adv_estimator``, TRL
    ``scale_rewards``). rewards: flat (N,) ordered group by group (rows ``[g·G, (g+1)·G)`` answer prompt g);
    returns (N,) float32.

    - ``grpo``: ``r_i - mean(group)``, divided according to ``scale``: ``group``: the group's std
      (``grpo_advantages``, Shao et al. 2024); ``batch``: the std of all N rewards (TRL
      ``scale_rewards="batch"``); ``none``: not divided (the same as ``dr_grpo``). ``std`` is the unbiased
      (n - 1) one, as ``torch.std``, TRL and verl compute it; ``eps`` is added to it.
    - ``dr_grpo``: ``r_i - mean(group)`` (Liu et al. 2025); never divided (``scale`` ``group`` and ``none``
      both mean its own, undivided form; ``batch`` is an error).
    - ``rloo``: ``r_i - mean of the other G - 1`` (Ahmadian et al. 2024); unscaled, like ``dr_grpo``.

    With ``scale="batch"`` the std is that of the tensor passed in: a multi-process caller passes the
    gathered rewards of every process.
    """
    if estimator not in GROUP_ESTIMATORS:
        raise ValueError(f"estimator must be one of {GROUP_ESTIMATORS}, got {estimator!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if estimator != "grpo" and scale == "batch":
        raise ValueError(f"scale 'batch' is for the grpo estimator; {estimator} does not divide by a std")
    if estimator == "rloo":
        return rloo_advantages(rewards, group_size)
    if estimator == "grpo":
        _groups(rewards, group_size, 2)  # GRPO needs a group; Dr. GRPO accepts a group of one
    if estimator == "dr_grpo" or scale == "none":
        return dr_grpo_advantages(rewards, group_size)
    if scale == "group":
        return grpo_advantages(rewards, group_size, eps)
    return dr_grpo_advantages(rewards, group_size) / (rewards.float().std() + eps)


CRITIC_FREE_ESTIMATORS = (*GROUP_ESTIMATORS, "reinforce_pp", "reinforce_pp_baseline")


def critic_free_advantages(
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    estimator: str,
    group_size: int,
    scale: str = "group",
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token advantages (B, T) of every critic-free estimator, and the per-token rewards (B, T) they came from.

    scores: (B,) one reward per response, grouped as in the module doc; mask: (B, T); kl: (B, T) per-token k1 of
    the sampled tokens when the KL is placed in the reward (RLOO, REINFORCE++), else None.

    - ``grpo``, ``dr_grpo``, ``rloo``: ``group_advantages`` of ``score - kl_coef · Σ_t kl`` on every token;
    - ``reinforce_pp``: ``token_rewards`` (the score on the last token, ``-kl_coef · kl`` on every token), their
      returns, whitened over the batch's tokens (``reinforce_pp_advantages``);
    - ``reinforce_pp_baseline``: the same after subtracting each group's mean score (OpenRLHF
      ``reinforce_baseline``).

    Statistics over the batch (grpo's batch std, the whitening) are those of the tensors passed in: a
    multi-process caller passes every process's rows.
    """
    kl_t = torch.zeros_like(mask, dtype=torch.float32) if kl is None else kl.float()
    beta = kl_coef if kl is not None else 0.0
    m = mask.to(torch.float32)
    if estimator in GROUP_ESTIMATORS:
        seq = scores.float() - beta * (kl_t * m).sum(-1)
        return per_token(group_advantages(seq, group_size, estimator, scale), m), token_rewards(scores, kl_t, m, beta)
    if estimator not in ("reinforce_pp", "reinforce_pp_baseline"):
        raise ValueError(f"estimator must be one of {CRITIC_FREE_ESTIMATORS}, got {estimator!r}")
    s = dr_grpo_advantages(scores, group_size) if estimator == "reinforce_pp_baseline" else scores.float()
    rewards = token_rewards(s, kl_t, m, beta)
    adv, _ = reinforce_pp_advantages(rewards, m, gamma)
    return adv, rewards


def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N / G,) the unbiased std of each group's rewards (0 for a group whose answers all scored the same:
    no learning signal; its share is the ``frac_zero_std`` metric, and dynamic sampling drops such groups)."""
    return _groups(rewards, group_size, 2).std(-1)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the reward. lengths: (N,) response
    tokens; returns (N,) float32 in ``[-factor, 0]``:

    ``0`` while ``|y| <= max_len - buffer``; ``factor · ((max_len - buffer) - |y|) / buffer`` inside the last
    ``buffer`` tokens (a linear ramp to ``-factor`` at ``|y| = max_len``); ``-factor`` beyond ``max_len``.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"buffer must be in (0, max_len={max_len}], got {buffer}")
    free = max_len - buffer
    y = lengths.float()
    ramp = (free - y) / buffer
    return factor * torch.where(y <= free, torch.zeros_like(y), torch.where(y <= max_len, ramp, -torch.ones_like(y)))


def per_token(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A sequence-level advantage (B,) on every masked token of its row: (B, T) float32, 0 outside the mask."""
    return advantages.float().unsqueeze(-1) * mask.to(torch.float32)
