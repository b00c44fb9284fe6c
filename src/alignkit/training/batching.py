"""A deterministic plan of which examples go into each micro-batch of each optimizer step.

The plan is a pure function of (dataset size, batch size, seed, epoch), so a resumed run needs only
the step number to continue on exactly the data the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MEGABATCH = 50  # group_by_length sorts runs of this many micro-batches (as transformers' LengthGroupedSampler)


def epoch_order(
    num_examples: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    lengths: Sequence[int] | None = None,
    batch_size: int = 1,
) -> list[int]:
    """Example indices for one epoch: a permutation seeded by (seed, epoch).

    With ``lengths`` (grouping by length), the permutation is cut into mega-batches of
    ``MEGABATCH * batch_size`` examples and each is sorted longest first, so that a micro-batch holds
    examples of similar length (less padding) while the order stays random at the mega-batch scale.
    """
    if not shuffle:
        order = list(range(num_examples))
    else:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(num_examples, generator=g).tolist()
    if lengths is not None:
        if len(lengths) != num_examples:
            raise ValueError(f"{len(lengths)} lengths for {num_examples} examples")
        size = MEGABATCH * batch_size
        order = [i for k in range(0, num_examples, size) for i in sorted(order[k : k + size], key=lambda i: -lengths[i])]
    return order


def micro_batches_per_epoch(num_examples: int, batch_size: int) -> int:
    return math.ceil(num_examples / batch_size)


def total_steps(
    num_examples: int, batch_size: int, grad_accum: int, world_size: int, epochs: float, max_steps: int | None
) -> int:
    """Optimizer steps of the run: ``max_steps`` if set, else ``epochs`` passes (at least one step)."""
    if max_steps is not None:
        return max_steps
    per_step = grad_accum * world_size
    return max(1, math.floor(epochs * micro_batches_per_epoch(num_examples, batch_size) / per_step))


def step_micro_batches(
    step: int,
    *,
    num_examples: int,
    batch_size: int,
    grad_accum: int,
    world_size: int,
    rank: int,
    seed: int,
    shuffle: bool = True,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """The example indices of this process's ``grad_accum`` micro-batches for optimizer step ``step``.

    Micro-batches form one endless stream (epoch after epoch, each reshuffled); step ``k`` takes the
    ``grad_accum * world_size`` micro-batches after the first ``k * grad_accum * world_size``, and process
    ``rank`` takes every ``world_size``-th of those. ``lengths`` groups examples by length (``epoch_order``).
    """
    per_epoch = micro_batches_per_epoch(num_examples, batch_size)
    per_step = grad_accum * world_size
    out = []
    orders: dict[int, list[int]] = {}
    for j in range(step * per_step + rank, (step + 1) * per_step, world_size):
        epoch, k = divmod(j, per_epoch)
        if epoch not in orders:
            orders[epoch] = epoch_order(num_examples, seed, epoch, shuffle, lengths, batch_size)
        out.append(orders[epoch][k * batch_size : (k + 1) * batch_size])
    return out


def epoch_of_step(step: int, *, num_examples: int, batch_size: int, grad_accum: int, world_size: int) -> float:
    """Fractional epoch reached after ``step`` optimizer steps."""
    return step * grad_accum * world_size / micro_batches_per_epoch(num_examples, batch_size)
