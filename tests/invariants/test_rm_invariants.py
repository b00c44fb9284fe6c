"""Tier (c) for reward models: equivalent settings give equal losses, gradients and scores.

- one batch of 4 pairs = two accumulated micro-batches of 2 (global pair normaliser);
- padded = packed (padding-free, one row, positions restarting per sequence), full and LoRA;
- a sequence's reward does not depend on the padding around it (decoder and encoder);
- the same end to end through ``alignkit rm`` (batch 4 = 2 x 2 accumulated = packed);
- an interrupted run resumed from its checkpoint = the uninterrupted run, step by step.
"""

import json

import pytest
import torch

from alignkit.algorithms.reward import pair_rewards
from alignkit.cli import main
from alignkit.data.formats import load_examples
from alignkit.data.pairs import collate_pairs, pad_sequences, tokenize_pairs
from alignkit.data.tokenize import ensure_chat_template
from alignkit.losses.reward import bradley_terry_loss
from tests.conftest import HH_RLHF, interrupt_on_call, write_rm_config


def _scorer(model_dir, pooling="auto"):
    from alignkit.models.loading import load_tokenizer
    from alignkit.models.reward import build_reward_scorer

    tok = load_tokenizer(str(model_dir))
    return build_reward_scorer(str(model_dir), pad_token_id=tok.pad_token_id, pooling=pooling, seed=0), tok


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    model, tok = _scorer(tiny_model_dir)
    ensure_chat_template(tok)
    examples = load_examples(str(HH_RLHF), fmt="hh_rlhf", max_rows=40, on_error="skip").examples
    pairs = tokenize_pairs(examples, tok, template="chat", max_length=1024).pairs
    pairs = sorted(pairs, key=lambda p: len(p.chosen_ids) + len(p.rejected_ids))[:4]  # short: fast, unequal lengths
    return model, tok, pairs


def _loss_and_grads(model, batches, n_pairs):
    model.zero_grad(set_to_none=True)
    total = 0.0
    for b in batches:
        rc, rr = pair_rewards(model, b)
        loss = bradley_terry_loss(rc, rr, margin=b.margin, center_coef=0.01).loss.sum() / n_pairs
        loss.backward()
        total += loss.item()
    return total, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_batch_of_4_equals_2x2_accumulated(setup):
    model, tok, pairs = setup
    pad = tok.pad_token_id
    assert len({len(p.chosen_ids) for p in pairs} | {len(p.rejected_ids) for p in pairs}) > 2
    one = _loss_and_grads(model, [collate_pairs(pairs, pad)], 4)
    two = _loss_and_grads(model, [collate_pairs(pairs[:2], pad), collate_pairs(pairs[2:], pad)], 4)
    assert one[0] == pytest.approx(two[0], abs=1e-6)
    assert one[1].keys() == two[1].keys() and len(one[1]) > 0
    for k in one[1]:
        torch.testing.assert_close(one[1][k], two[1][k], atol=1e-6, rtol=1e-4, msg=k)


def test_padded_equals_packed(setup):
    model, tok, pairs = setup
    lengths = {len(p.chosen_ids) for p in pairs} | {len(p.rejected_ids) for p in pairs}
    assert len(lengths) > 2, "sequences of different lengths, so padding is really exercised"
    padded = _loss_and_grads(model, [collate_pairs(pairs, tok.pad_token_id)], 4)
    packed_batch = collate_pairs(pairs, tok.pad_token_id, packed=True)
    assert packed_batch.input_ids.shape == (
        1,
        sum(lengths_ for p in pairs for lengths_ in (len(p.chosen_ids), len(p.rejected_ids))),
    )
    # one row, and rows capped at the longest sequence + the shortest (several rows, with tail padding)
    cap = max(lengths) + min(lengths)
    rows_batch = collate_pairs(pairs, tok.pad_token_id, packed=True, max_row_tokens=cap)
    assert rows_batch.input_ids.shape[0] > 1 and rows_batch.num_tokens == packed_batch.num_tokens
    assert rows_batch.input_ids.numel() > rows_batch.num_tokens, "some tail padding is exercised"
    for batch in (packed_batch, rows_batch):
        packed = _loss_and_grads(model, [batch], 4)
        assert padded[0] == pytest.approx(packed[0], abs=1e-5)
        for k in padded[1]:
            torch.testing.assert_close(padded[1][k], packed[1][k], atol=1e-5, rtol=1e-4, msg=k)


def test_packed_lora_scores_equal_padded(tiny_model_dir):
    from alignkit.models.loading import load_tokenizer
    from alignkit.models.reward import build_reward_scorer

    tok = load_tokenizer(str(tiny_model_dir))
    model = build_reward_scorer(str(tiny_model_dir), pad_token_id=tok.pad_token_id, finetune="lora", lora_r=4, seed=0)
    # make the adapters non-trivial (B starts at zero)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    model.eval()
    seqs = [tok("one two")["input_ids"], tok("three four five six seven")["input_ids"], tok("eight")["input_ids"]]
    with torch.no_grad():
        padded = model(*pad_sequences(seqs, tok.pad_token_id)).tolist()
        flat = torch.tensor([[t for s in seqs for t in s]])
        pos = torch.tensor([[i for s in seqs for i in range(len(s))]])
        ends = torch.tensor([len(s) for s in seqs]).cumsum(0) - 1
        packed = model(flat, None, pos, ends).tolist()
    assert packed == pytest.approx(padded, abs=1e-5)


@pytest.mark.parametrize("backbone", ["decoder", "encoder-mean", "encoder-response_mean", "encoder-cls"])
def test_reward_does_not_depend_on_padding(tiny_model_dir, tiny_bert_dir, backbone):
    from alignkit.data.pairs import response_mask

    model_dir = tiny_model_dir if backbone == "decoder" else tiny_bert_dir
    model, tok = _scorer(model_dir, "auto" if backbone == "decoder" else backbone.split("-")[1])
    model.eval()
    seqs = [tok("a short one")["input_ids"], tok("a much longer sequence of words than the first one")["input_ids"]]
    starts = [2, 4]

    def score(batch, batch_starts):
        ids, mask = pad_sequences(batch, tok.pad_token_id)
        return model(ids, mask, pool_mask=response_mask([len(s) for s in batch], batch_starts, ids.shape[1]))

    with torch.no_grad():
        alone = [score([s], [st]).item() for s, st in zip(seqs, starts)]
        batched = score(seqs, starts).tolist()
    assert batched == pytest.approx(alone, abs=1e-5)


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["accuracy"]) for r in rows if "loss" in r]


def test_end_to_end_accumulation(tiny_model_dir, tmp_path):
    runs = {}
    variants = {
        "bs4": ({"batch_size": 4}, {"packing": False}),
        "bs2x2": ({"batch_size": 2, "grad_accum": 2}, {"packing": False}),
        "packed": ({"batch_size": 4}, {"packing": True}),
    }
    for name, (train, data) in variants.items():
        out = tmp_path / name
        cfg = write_rm_config(tmp_path / f"{name}.yaml", tiny_model_dir, out, train={"max_steps": 3, **train}, data=data)
        assert main(["rm", str(cfg)]) == 0
        runs[name] = _losses(out)
    assert len(runs["bs4"]) == 3
    for other in ("bs2x2", "packed"):
        for (sa, la, aa), (sb, lb, ab) in zip(runs["bs4"], runs[other]):
            assert sa == sb and la == pytest.approx(lb, abs=1e-5) and aa == ab


def test_interrupted_run_resumes_to_the_same_result(tiny_model_dir, tmp_path, monkeypatch):
    import alignkit.algorithms.reward as reward

    train = {"max_steps": 6, "save_every": 2, "batch_size": 4}
    model = {"finetune": "lora", "lora": {"r": 4, "dropout": 0.2}}  # dropout: the RNG state must be restored too
    ref = tmp_path / "ref"
    assert main(["rm", str(write_rm_config(tmp_path / "ref.yaml", tiny_model_dir, ref, train=train, model=model))]) == 0

    out = tmp_path / "interrupted"
    cfg = write_rm_config(tmp_path / "int.yaml", tiny_model_dir, out, train=train, model=model)
    real = reward.bradley_terry_loss
    interrupt_at_step_5 = interrupt_on_call(5, real)

    monkeypatch.setattr(reward, "bradley_terry_loss", interrupt_at_step_5)
    assert main(["rm", str(cfg)]) == 130
    assert (out / "checkpoints" / "step-4").exists() and not (out / "final").exists()
    monkeypatch.setattr(reward, "bradley_terry_loss", real)
    assert main(["rm", str(cfg)]) == 0
    assert _losses(out) == _losses(ref)
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 4
    a = json.loads((ref / "final" / "alignkit_reward.json").read_text())
    b = json.loads((out / "final" / "alignkit_reward.json").read_text())
    assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-6)


# --- pad token == EOS token, and the chat template ends each turn with EOS (Llama 2 / Mistral style) ------------------
EOS_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def eos_pad_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny Llama with a tokenizer whose pad token is its EOS token and whose template ends every turn with EOS,
    so every scored sequence ends with the pad id."""
    import shutil

    from alignkit.models.loading import load_tokenizer

    out = tmp_path_factory.mktemp("eos-pad") / "model"
    shutil.copytree(tiny_model_dir, out)
    tok = load_tokenizer(str(out))
    tok.pad_token = tok.eos_token
    tok.chat_template = EOS_TEMPLATE
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def eos_pad_setup(eos_pad_model_dir):
    model, tok = _scorer(eos_pad_model_dir)
    assert tok.pad_token_id == tok.eos_token_id
    examples = load_examples(str(HH_RLHF), fmt="hh_rlhf", max_rows=40, on_error="skip").examples
    pairs = tokenize_pairs(examples, tok, template="chat", max_length=1024).pairs
    pairs = sorted(pairs, key=lambda p: len(p.chosen_ids) + len(p.rejected_ids))[:4]
    assert all(p.chosen_ids[-1] == p.rejected_ids[-1] == tok.pad_token_id for p in pairs), "each sequence ends with pad == EOS"
    return model, tok, pairs


def test_padded_equals_packed_when_the_pad_token_is_the_eos_token(eos_pad_setup):
    model, tok, pairs = eos_pad_setup
    padded = _loss_and_grads(model, [collate_pairs(pairs, tok.pad_token_id)], 4)
    packed = _loss_and_grads(model, [collate_pairs(pairs, tok.pad_token_id, packed=True)], 4)
    assert padded[0] == pytest.approx(packed[0], abs=1e-5)
    for k in padded[1]:
        torch.testing.assert_close(padded[1][k], packed[1][k], atol=1e-5, rtol=1e-4, msg=k)


def test_the_padded_score_reads_the_last_real_token_even_when_it_is_the_pad_id(eos_pad_setup):
    """The reward is the head on the hidden state of the last attended token (the closing EOS), found from the
    attention mask, not from comparing ids to the pad id (which would read the token before it)."""
    model, tok, pairs = eos_pad_setup
    model.eval()
    seqs = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    ids, mask = pad_sequences(seqs, tok.pad_token_id)
    backbone, head = model._backbone_and_head()
    with torch.no_grad():
        got = model(ids, mask).tolist()
        last = [head(backbone(input_ids=torch.tensor([s])).last_hidden_state[0, -1]).item() for s in seqs]
        before = [head(backbone(input_ids=torch.tensor([s])).last_hidden_state[0, -2]).item() for s in seqs]
    model.train()
    assert got == pytest.approx(last, abs=1e-5)
    assert got != pytest.approx(before, abs=1e-3)


def test_rm_eval_scores_equal_the_packed_training_scores_when_the_pad_token_is_the_eos_token(eos_pad_model_dir, tmp_path):
    """End to end: ``alignkit rm`` packed and padded give the same losses; the saved model's ``RewardModel.score`` (the
    padded path every consumer uses: rm-eval, PPO, compare, judges) reads the same token as packed training."""
    from alignkit.models.reward import RewardModel

    runs = {}
    for packing in (False, True):
        out = tmp_path / f"packing-{packing}"
        cfg = write_rm_config(
            tmp_path / f"{packing}.yaml", eos_pad_model_dir, out, train={"max_steps": 3}, data={"packing": packing}
        )
        assert main(["rm", str(cfg)]) == 0
        runs[packing] = _losses(out)
    assert len(runs[False]) == 3
    for (sa, la, aa), (sb, lb, ab) in zip(runs[False], runs[True]):
        assert sa == sb and la == pytest.approx(lb, abs=1e-5) and aa == ab

    rm = RewardModel.load(str(tmp_path / "packing-True" / "final"))
    assert rm.tokenizer.pad_token_id == rm.tokenizer.eos_token_id
    prompts, responses = ["How do I boil an egg?", "Name a colour."], ["Put it in boiling water for eight minutes.", "Blue."]
    enc = rm.encode(prompts, responses)
    flat = torch.tensor([[t for s in enc.ids for t in s]])
    pos = torch.tensor([[i for s in enc.ids for i in range(len(s))]])
    ends = torch.tensor([len(s) for s in enc.ids]).cumsum(0) - 1
    with torch.no_grad():
        packed = rm.scorer(flat, None, pos, ends).tolist()
    assert rm.score(prompts, responses) == pytest.approx(packed, abs=1e-5)
