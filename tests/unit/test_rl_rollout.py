"""The rollout record: its shape checks, ``select`` (rows in order, per-token tensors cut to the longest selected
response, identical to slicing the loose tensors as PPO's update used to) and ``to``."""

import pytest
import torch

from alignkit.rl.rollout import Rollout


def _rollout(values=True) -> Rollout:
    lengths = [3, 1, 2]
    B, T = len(lengths), max(lengths)
    mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).float()
    per_token = lambda k: (torch.arange(B * T, dtype=torch.float32).view(B, T) + 100 * k) * mask  # noqa: E731
    return Rollout(
        prompt_ids=[[1, 2], [3], [4, 5, 6]],
        response_ids=[[7, 8, 9], [10], [11, 12]],
        mask=mask,
        ended=torch.tensor([1.0, 0.0, 1.0]),
        scores=torch.tensor([0.5, -1.0, 2.0]),
        old_logps=per_token(1),
        ref_logps=per_token(2),
        kl=per_token(3),
        rewards=per_token(4),
        advantages=per_token(5),
        values=per_token(6) if values else None,
        returns=per_token(7) if values else None,
    )


def test_select_takes_rows_in_order_and_cuts_to_their_longest_response():
    r = _rollout()
    part = r.select([2, 1])
    assert part.prompt_ids == [[4, 5, 6], [3]] and part.response_ids == [[11, 12], [10]]
    assert len(part) == 2 and part.width == 2  # the longest selected response, not the rollout's 3
    torch.testing.assert_close(part.mask, torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(part.scores, torch.tensor([2.0, -1.0]))
    torch.testing.assert_close(part.ended, torch.tensor([1.0, 0.0]))
    sel = torch.tensor([2, 1])
    for name in ("old_logps", "ref_logps", "kl", "rewards", "advantages", "values", "returns"):
        torch.testing.assert_close(getattr(part, name), getattr(r, name)[sel][:, :2])  # the old loose slicing
    assert r.select([0, 1, 2]).width == 3


def test_a_critic_free_rollout_has_no_values_or_returns():
    part = _rollout(values=False).select([1])
    assert part.values is None and part.returns is None and part.width == 1


def test_to_moves_every_tensor_and_keeps_the_ids():
    r = _rollout().to(torch.device("cpu")).to("meta")
    assert r.mask.device.type == "meta" and r.values.device.type == "meta" and r.scores.device.type == "meta"
    assert r.response_ids == [[7, 8, 9], [10], [11, 12]]


def test_shapes_are_checked():
    r = _rollout()
    with pytest.raises(ValueError, match="advantages"):
        Rollout(**{**r.__dict__, "advantages": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="scores"):
        Rollout(**{**r.__dict__, "scores": torch.zeros(2)})
    with pytest.raises(ValueError, match="responses"):
        Rollout(**{**r.__dict__, "response_ids": [[1]]})
