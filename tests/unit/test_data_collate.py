"""Collators: shapes and pre-shifted labels by hand; packed and padded feed a model equivalently."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignkit.data.collate import IGNORE_INDEX, Batch, collate_packed, collate_padded
from alignkit.data.errors import RowRef
from alignkit.data.examples import Example, Message
from alignkit.data.formats import load_examples
from alignkit.data.tokenize import TokenizedExample, tokenize_examples
from alignkit.models.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parents[2]
X = IGNORE_INDEX

TOY = [
    TokenizedExample(input_ids=[10, 11, 12, 13], loss_mask=[0, 0, 1, 1], ref=RowRef("toy", 1)),
    TokenizedExample(input_ids=[20, 21, 22], loss_mask=[0, 1, 1], ref=RowRef("toy", 2)),
]


def test_padded_by_hand():
    batch = collate_padded(TOY, pad_token_id=0)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13], [20, 21, 22, 0]]
    # labels[b, t] = input_ids[b, t+1] where that token is learned; each row's last real token -> -100
    assert batch.labels.tolist() == [[X, 12, 13, X], [21, 22, X, X]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    for t in (batch.input_ids, batch.labels, batch.attention_mask, batch.position_ids):
        assert t.shape == (2, 4) and t.dtype == torch.long
    assert batch.num_loss_tokens == 4 and batch.num_tokens == 7


def test_packed_by_hand():
    batch = collate_packed(TOY)
    assert batch.input_ids.tolist() == [[10, 11, 12, 13, 20, 21, 22]]
    # 13 (end of example 1) does not predict 20 (start of example 2)
    assert batch.labels.tolist() == [[X, 12, 13, X, 21, 22, X]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert batch.attention_mask is None
    assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (1, 7)
    assert batch.num_loss_tokens == 4 and batch.num_tokens == 7


def test_to_and_model_inputs():
    batch = collate_packed(TOY).to("cpu")
    assert isinstance(batch, Batch) and batch.attention_mask is None
    inputs = batch.model_inputs()
    assert set(inputs) == {"input_ids", "attention_mask", "position_ids", "use_cache"}
    assert inputs["use_cache"] is False and "labels" not in inputs
    padded = collate_padded(TOY, pad_token_id=0).to(torch.device("cpu"))
    assert padded.attention_mask.device.type == "cpu"


def test_empty_and_inconsistent_inputs():
    with pytest.raises(ValueError, match="empty"):
        collate_padded([], pad_token_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate_packed([])
    with pytest.raises(ValueError, match="toy:9: input_ids and loss_mask differ"):
        collate_packed([TokenizedExample([1, 2], [1], RowRef("toy", 9))])


# ------------------------------------------------------------------------------------ tiny Llama


@pytest.fixture(scope="module")
def tok_and_examples():
    sharegpt = load_examples(str(REPO / "data/fastchat/dummy_conversation.json"), max_rows=3).examples
    ref = RowRef("inline", 1)
    examples = [
        Example(prompt=(Message("user", "hello there"),), completion="I am fine, thank you.", ref=ref),
        Example(prompt=(), completion="The cat sat on the mat.", ref=ref, templated=False),
        Example(prompt=(Message("system", "Be brief."), Message("user", "Capital of France?")), completion="Paris.", ref=ref),
        *sharegpt,
    ]
    texts = [m.content for ex in examples for m in ex.prompt] + [ex.completion for ex in examples]
    tok = build_tokenizer(texts * 3, vocab_size=400)
    data = tokenize_examples(examples, tok, max_length=120)  # the last sharegpt row is cut mid-completion
    assert (data.truncated, data.dropped) == (1, 0)
    return tok, data.examples


def _completion_logprobs(model, batch: Batch) -> torch.Tensor:
    """(N,) log p(label) at every position with a label, in row-major order."""
    with torch.no_grad():
        logits = model(**batch.model_inputs()).logits  # (B, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    keep = batch.labels != IGNORE_INDEX  # (B, T)
    return logp.gather(-1, batch.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_and_padded_give_the_same_completion_logprobs(attn, tok_and_examples):
    import transformers

    tok, examples = tok_and_examples
    assert len(examples) == 6 and len({len(t.input_ids) for t in examples}) > 2  # ragged lengths
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=torch.float32).eval()

    padded = collate_padded(examples, pad_token_id=tok.pad_token_id)
    packed = collate_packed(examples)
    assert padded.num_loss_tokens == packed.num_loss_tokens > 0
    assert padded.num_tokens == packed.num_tokens == sum(len(t.input_ids) for t in examples)
    lp_padded = _completion_logprobs(model, padded)
    lp_packed = _completion_logprobs(model, packed)
    torch.testing.assert_close(lp_packed, lp_padded, rtol=0, atol=1e-5)
    # and both equal each example scored alone (no padding, no neighbours)
    lp_alone = torch.cat([_completion_logprobs(model, collate_padded([t], tok.pad_token_id)) for t in examples])
    torch.testing.assert_close(lp_packed, lp_alone, rtol=0, atol=1e-5)


def test_pack_rows_first_fit_decreasing():
    from alignkit.data.collate import pack_rows

    assert pack_rows([5, 3, 4, 2], None) == [[0, 1, 2, 3]]
    # decreasing: 5 -> row0 (room 3), 4 -> row1 (room 4), 3 -> row0 (room 0), 2 -> row1 (room 2)
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack_rows([9, 1], 8) == [[0], [1]]  # over-long example gets its own row


def test_packed_rows_tail_padding_is_its_own_block():
    from alignkit.data.collate import collate_packed
    from alignkit.data.errors import RowRef
    from alignkit.data.tokenize import TokenizedExample

    r = RowRef("f", 1)
    exs = [
        TokenizedExample([1, 2, 3], [0, 1, 1], r),
        TokenizedExample([4, 5], [0, 1], r),
        TokenizedExample([6, 7, 8, 9], [0, 0, 1, 1], r),
    ]
    b = collate_packed(exs, max_row_tokens=5, pad_token_id=0)
    # rows (FFD): [ex2 (4)] and [ex0 (3) + ex1 (2)] -> sorted by index: [[0, 1], [2]]
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert b.labels.tolist() == [[2, 3, -100, 5, -100], [-100, 8, 9, -100, -100]]
    assert b.num_tokens == 9 and b.num_loss_tokens == 5 and b.attention_mask is None
