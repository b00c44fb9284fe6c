"""A stage never falls back silently to a different kind of run: a launch of N processes that the accelerator sees
as one, or a requested FSDP/DeepSpeed plugin that is not active, stops before training with one line."""

from types import SimpleNamespace

import pytest

from alignkit.training.errors import TrainingError
from alignkit.training.setup import check_distribution, run_facts


def _acc(n: int, kind: str):
    return SimpleNamespace(num_processes=n, distributed_type=SimpleNamespace(value=kind), device="cpu")


def test_n_processes_seen_as_one_stop_with_what_to_run_instead():
    with pytest.raises(TrainingError, match=r"launched as 2 processes .* sees 1 .*torchrun --nproc_per_node"):
        check_distribution(_acc(1, "NO"), env={"WORLD_SIZE": "2"})


@pytest.mark.parametrize("flag,want", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")])
def test_a_requested_plugin_that_is_not_active_stops(flag, want):
    with pytest.raises(TrainingError, match=f"asked for {want}"):
        check_distribution(_acc(2, "MULTI_CPU"), env={"WORLD_SIZE": "2", flag: "true"})
    assert check_distribution(_acc(2, want), env={"WORLD_SIZE": "2", flag: "true"}) == {
        "world_size": 2,
        "distributed_type": want,
    }


def test_real_runs_pass_and_are_recorded():
    assert check_distribution(_acc(1, "NO"), env={}) == {"world_size": 1, "distributed_type": "NO"}
    assert check_distribution(_acc(2, "MULTI_CPU"), env={"WORLD_SIZE": "2"})["world_size"] == 2
    assert check_distribution(_acc(1, "NO"), env={"ACCELERATE_USE_FSDP": "false"})["distributed_type"] == "NO"
    assert run_facts(_acc(2, "MULTI_CPU")) == {"device": "cpu", "world_size": 2, "distributed_type": "MULTI_CPU"}


def test_replicas_in_sync_compares_every_process_checksum():
    import torch

    from alignkit.training.setup import replicas_in_sync

    model = torch.nn.Linear(3, 2)

    def fake(other_offset: float):
        gather = lambda t: torch.cat([t, t + other_offset])  # noqa: E731 (a second process's checksum)
        return SimpleNamespace(num_processes=2, device="cpu", unwrap_model=lambda m: m, gather=gather)

    assert replicas_in_sync(fake(0.0), model) is True
    assert replicas_in_sync(fake(1e-12), model) is False  # compared exactly: DDP replicas are bitwise equal
    assert replicas_in_sync(SimpleNamespace(num_processes=1), model) is None
