"""Tier (a): the micro-batch plan is deterministic and covers every example once per epoch."""

from alignkit.training import batching


def test_plan_covers_each_example_once_per_epoch():
    n, bs, accum = 10, 3, 2  # 4 micro-batches per epoch (3,3,3,1) -> 2 steps per epoch
    seen = []
    for step in range(2):
        for mb in batching.step_micro_batches(
            step, num_examples=n, batch_size=bs, grad_accum=accum, world_size=1, rank=0, seed=1
        ):
            seen += mb
    assert sorted(seen) == list(range(n))


def test_plan_is_a_pure_function_of_step():
    kw = dict(num_examples=50, batch_size=4, grad_accum=3, world_size=1, rank=0, seed=7)
    assert batching.step_micro_batches(5, **kw) == batching.step_micro_batches(5, **kw)
    assert batching.step_micro_batches(5, **kw) != batching.step_micro_batches(6, **kw)


def test_ranks_split_a_step_without_overlap():
    kw = dict(num_examples=40, batch_size=2, grad_accum=2, seed=3)
    r0 = batching.step_micro_batches(1, world_size=2, rank=0, **kw)
    r1 = batching.step_micro_batches(1, world_size=2, rank=1, **kw)
    one = batching.step_micro_batches(1, world_size=1, rank=0, batch_size=2, grad_accum=4, num_examples=40, seed=3)
    assert sorted(sum(r0 + r1, [])) == sorted(sum(one, []))


def test_total_steps():
    assert batching.total_steps(100, 8, 2, 1, 1.0, None) == 6  # 13 micro-batches // 2
    assert batching.total_steps(100, 8, 2, 1, 1.0, 3) == 3
    assert batching.total_steps(4, 8, 4, 1, 1.0, None) == 1
