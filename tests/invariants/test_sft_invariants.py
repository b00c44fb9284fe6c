"""Tier (c): equivalent settings give equal losses and gradients.

- padded = packed (padding-free) on the same examples;
- one batch of 4 = two accumulated micro-batches of 2 (global token normaliser);
- the same end to end, through ``alignkit sft``;
- kill -9 mid-run + ``resume: auto`` = the uninterrupted run, at every later step.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from alignkit.algorithms.sft import micro_batch_loss
from alignkit.cli import main
from alignkit.data.collate import collate_packed, collate_padded
from alignkit.data.formats import load_examples
from alignkit.data.tokenize import tokenize_examples
from tests.conftest import HH_RLHF, REPO, write_sft_config


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    loaded = load_examples(str(HH_RLHF), fmt="hh_rlhf", max_rows=40).examples
    tokenized = tokenize_examples(loaded, tok, max_length=1024).examples
    examples = sorted(tokenized, key=lambda e: len(e.input_ids))[:4]  # the 4 shortest: fast, unequal lengths
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    return model, tok, examples


def _loss_and_grads(model, batches):
    """Accumulate the global-token-mean loss over ``batches``; return (loss, {name: grad})."""
    model.zero_grad(set_to_none=True)
    n = sum(b.num_loss_tokens for b in batches)
    total = 0.0
    for b in batches:
        loss, _ = micro_batch_loss(model, b, n)
        loss.backward()
        total += loss.item()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return total, grads


def _assert_same(a, b, atol=1e-5):
    (la, ga), (lb, gb) = a, b
    assert abs(la - lb) < atol, (la, lb)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=atol, rtol=1e-4, msg=k)


def test_padded_equals_packed(setup):
    model, tok, ex = setup
    lengths = {len(e.input_ids) for e in ex}
    assert len(lengths) > 1, "examples of different lengths, so padding is really exercised"
    padded = _loss_and_grads(model, [collate_padded(ex, tok.pad_token_id)])
    packed = _loss_and_grads(model, [collate_packed(ex)])
    _assert_same(padded, packed)
    # packed into several capped rows, with tail padding on the shorter ones
    cap = max(lengths) + min(lengths)
    rows = collate_packed(ex, max_row_tokens=cap, pad_token_id=tok.pad_token_id)
    assert rows.input_ids.shape[0] > 1 and rows.num_tokens == sum(len(e.input_ids) for e in ex)
    _assert_same(padded, _loss_and_grads(model, [rows]))


def test_batch_of_4_equals_2x2_accumulated(setup):
    model, tok, ex = setup
    one = _loss_and_grads(model, [collate_padded(ex, tok.pad_token_id)])
    two = _loss_and_grads(model, [collate_padded(ex[:2], tok.pad_token_id), collate_padded(ex[2:], tok.pad_token_id)])
    _assert_same(one, two)
    # and the naive mean of per-micro-batch means would differ (the micro-batches have unequal token counts)
    halves = [collate_padded(ex[:2], tok.pad_token_id), collate_padded(ex[2:], tok.pad_token_id)]
    assert halves[0].num_loss_tokens != halves[1].num_loss_tokens


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _run(tmp_path, model_dir, name, **sections):
    out = tmp_path / name
    cfg = write_sft_config(tmp_path / f"{name}.yaml", model_dir, out, **sections)
    assert main(["sft", str(cfg)]) == 0
    return out


def test_end_to_end_accumulation_and_packing(tiny_model_dir, tmp_path):
    base = dict(train={"max_steps": 3, "batch_size": 4, "grad_accum": 1})
    a = _run(tmp_path, tiny_model_dir, "bs4", **base)
    b = _run(tmp_path, tiny_model_dir, "bs2x2", train={"max_steps": 3, "batch_size": 2, "grad_accum": 2})
    c = _run(tmp_path, tiny_model_dir, "packed", data={"packing": True}, **base)
    la, lb, lc = _losses(a), _losses(b), _losses(c)
    assert len(la) == 3
    for (sa, xa), (sb, xb), (sc, xc) in zip(la, lb, lc):
        assert sa == sb == sc
        assert xa == pytest.approx(xb, abs=1e-5) and xa == pytest.approx(xc, abs=1e-5)


def test_kill_9_and_resume_reproduces_the_uninterrupted_run(tiny_model_dir, tmp_path):
    steps, save_every, kill_after = 24, 4, 8
    train = {"max_steps": steps, "save_every": save_every, "save_total_limit": 2, "batch_size": 4}
    # LoRA with dropout: the resumed run must also restore the RNG, or the dropout masks differ.
    model = {"finetune": "lora", "lora": {"r": 4, "dropout": 0.2}}
    ref = _run(tmp_path, tiny_model_dir, "uninterrupted", train=train, model=model)

    out = tmp_path / "killed"
    cfg = write_sft_config(tmp_path / "killed.yaml", tiny_model_dir, out, train=train, model=model)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignkit", "sft", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    target = out / "checkpoints" / f"step-{kill_after}"
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), proc.stderr.read().decode()[-2000:]
    assert not (out / "final").exists(), "the run finished before it was killed"
    killed_at = max(s for s, _ in _losses(out))
    assert killed_at < steps

    assert main(["sft", str(cfg)]) == 0  # resume: auto
    resumed, reference = _losses(out), _losses(ref)
    assert [s for s, _ in resumed] == list(range(1, steps + 1))
    assert resumed == reference  # bit-identical on CPU with the same seed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] >= kill_after
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(ckpts) == 2 and not any(p.startswith(".tmp") for p in ckpts)


def test_partial_checkpoint_is_ignored(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_sft_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"max_steps": 4, "save_every": 2})
    assert main(["sft", str(cfg)]) == 0
    # simulate a crash in the middle of writing the step-4 checkpoint, after final/ of a shorter run
    partial = out / "checkpoints" / ".tmp-step-3"
    partial.mkdir()
    (partial / "optimizer.bin").write_bytes(b"half")
    assert main(["sft", str(cfg), "train.max_steps=6"]) == 0
    assert not partial.exists()
    assert json.loads((out / "summary.json").read_text())["resumed_from_step"] == 2
