"""The benchmark harness's retrieval figures, against hand-computed values."""

from benchmarks.harness import rank_metrics


def test_rank_metrics_by_hand():
    # four questions: first relevant hit at rank 1, 3, 7 and none in the top 10
    got = rank_metrics([1, 3, 7, None])
    assert got["recall@1"] == 1 / 4 and got["recall@5"] == 2 / 4
    assert abs(got["mrr@10"] - (1 + 1 / 3 + 1 / 7) / 4) < 1e-12 and got["first_rank"] == [1, 3, 7, None]
