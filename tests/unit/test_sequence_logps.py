"""Completion log-probs per sequence: hand-computed from the logits, the same padded or packed, sum vs mean."""

import pytest
import torch

from alignkit.data.collate import collate_packed, collate_padded
from alignkit.data.tokenize import TokenizedExample
from alignkit.models.logprobs import SequenceLogps, sequence_logps


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from alignkit.models.loading import load_causal_lm

    return load_causal_lm(str(tiny_model_dir), finetune="none")


SEQS = [
    TokenizedExample([5, 9, 14, 22, 31], [0, 0, 1, 1, 1], None),
    TokenizedExample([7, 3, 40], [0, 1, 1], None),
    TokenizedExample([11, 12, 13, 14, 15, 16, 17], [0, 0, 0, 0, 1, 1, 0], None),
]


def _by_hand(model, ex):
    """Σ log softmax(logits[t-1])[ids[t]] over learned positions t >= 1, and their count."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    picked = [logp[t - 1, ex.input_ids[t]].item() for t in range(1, len(ex.input_ids)) if ex.loss_mask[t]]
    return sum(picked), len(picked)


def test_sum_and_count_match_a_hand_computed_gather(model):
    with torch.no_grad():
        got = sequence_logps(model, collate_padded(SEQS, 0), len(SEQS))
    for k, ex in enumerate(SEQS):
        s, n = _by_hand(model, ex)
        assert got.sum[k].item() == pytest.approx(s, abs=1e-4)
        assert got.tokens[k].item() == n
        assert got.mean[k].item() == pytest.approx(s / n, abs=1e-5)


@pytest.mark.parametrize("cap", [None, 8])
def test_packed_equals_padded(model, cap):
    with torch.no_grad():
        padded = sequence_logps(model, collate_padded(SEQS, 0), len(SEQS))
        packed = sequence_logps(model, collate_packed(SEQS, max_row_tokens=cap, pad_token_id=0), len(SEQS))
    assert packed.sum.tolist() == pytest.approx(padded.sum.tolist(), abs=1e-4)
    assert packed.tokens.tolist() == padded.tokens.tolist()


def test_mean_is_the_sum_over_the_token_count():
    x = SequenceLogps(torch.tensor([-6.0, -1.0, 0.0]), torch.tensor([3.0, 1.0, 0.0]))
    assert x.mean.tolist() == [-2.0, -1.0, 0.0]  # an empty sequence gives 0, not nan


def test_gradient_flows_to_the_model(model):
    from alignkit.models.loading import load_causal_lm

    m = load_causal_lm(str(model.name_or_path), finetune="full")
    out = sequence_logps(m, collate_packed(SEQS, pad_token_id=0), len(SEQS))
    out.sum.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("packed", [False, True])
def test_token_logps_lay_each_completion_from_column_0_and_match_a_hand_gather(model, packed):
    from alignkit.models.logprobs import completion_token_logps

    batch = collate_packed(SEQS, max_row_tokens=8, pad_token_id=0) if packed else collate_padded(SEQS, 0)
    with torch.no_grad():
        out = completion_token_logps(model, batch, len(SEQS), width=4, with_entropy=True)
        plain = completion_token_logps(model, batch, len(SEQS), width=4)
    for k, ex in enumerate(SEQS):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        want = [logp[t - 1, ex.input_ids[t]].item() for t in range(1, len(ex.input_ids)) if ex.loss_mask[t]]
        ent = [-(logp[t - 1].exp() * logp[t - 1]).sum().item() for t in range(1, len(ex.input_ids)) if ex.loss_mask[t]]
        n = len(want)
        assert out.logps[k, :n].tolist() == pytest.approx(want, abs=1e-4)
        assert out.entropy[k, :n].tolist() == pytest.approx(ent, abs=1e-4)
        assert out.mask[k].tolist() == [1.0] * n + [0.0] * (4 - n)
        assert (out.logps[k, n:] == 0).all()
    assert plain.entropy is None and torch.allclose(plain.logps, out.logps, atol=1e-5)


def test_token_logps_at_a_temperature_are_those_of_the_scaled_softmax(model):
    """PPO samples from softmax(logits / T); the ratio and the KL must use that distribution, not T = 1."""
    from alignkit.models.logprobs import completion_token_logps

    batch = collate_padded(SEQS, 0)
    with torch.no_grad():
        out = completion_token_logps(model, batch, len(SEQS), width=4, with_entropy=True, temperature=0.5)
    ex = SEQS[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0].float()
    logp = torch.log_softmax(logits / 0.5, -1)
    want = [logp[t - 1, ex.input_ids[t]].item() for t in range(1, len(ex.input_ids)) if ex.loss_mask[t]]
    ent = [-(logp[t - 1].exp() * logp[t - 1]).sum().item() for t in range(1, len(ex.input_ids)) if ex.loss_mask[t]]
    assert out.logps[0, :3].tolist() == pytest.approx(want, abs=1e-4)
    assert out.entropy[0, :3].tolist() == pytest.approx(ent, abs=1e-4)


def test_entropy_for_logging_only_builds_no_graph(model):
    """entropy_grad=False (PPO with entropy_coef 0): the same values, no autograd graph over the (K, V) probabilities,
    while the log-probs keep theirs."""
    from alignkit.models.loading import load_causal_lm
    from alignkit.models.logprobs import completion_token_logps

    m = load_causal_lm(str(model.name_or_path), finetune="full")
    batch = collate_padded(SEQS, 0)
    with_grad = completion_token_logps(m, batch, len(SEQS), width=4, with_entropy=True)
    logged = completion_token_logps(m, batch, len(SEQS), width=4, with_entropy=True, entropy_grad=False)
    assert with_grad.entropy.requires_grad and not logged.entropy.requires_grad
    assert logged.logps.requires_grad
    assert torch.allclose(logged.entropy, with_grad.entropy.detach()) and torch.allclose(logged.logps, with_grad.logps)
