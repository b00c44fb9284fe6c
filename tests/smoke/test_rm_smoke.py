"""Tier (b): two-step reward-model runs on tiny decoder and encoder backbones.

Loss finite, trainable weights moved, the saved model loads (plain transformers where the layout
allows) and scores text the same way ``RewardModel`` does.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignkit.cli import main
from tests.conftest import write_rm_config

REQUIRED = {"step", "loss", "accuracy", "margin", "reward_mean", "reward_std", "learning_rate", "pairs_per_second"}


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _plain_hf_score(final, prompt, response):
    """Score with nothing but transformers: the chat template text, the saved classifier."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    with torch.no_grad():
        return model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0].item()


def test_decoder_rm_two_steps(tiny_model_dir, tmp_path):
    from alignkit import RewardModel

    out = tmp_path / "run"
    cfg = write_rm_config(tmp_path / "c.yaml", tiny_model_dir, out, data={"eval_fraction": 0.25}, train={"eval_every": 1})
    assert main(["rm", str(cfg)]) == 0
    rows = [r for r in _metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r.keys() >= REQUIRED and torch.isfinite(torch.tensor(r["loss"]))
    evals = [r for r in _metrics(out) if "eval_accuracy" in r]
    assert evals and {"eval_loss", "eval_n", "eval_ece", "eval_mean_margin", "eval_ties"} <= evals[-1].keys()
    assert evals[-1]["eval_n"] == 8  # a quarter of the 32 rows

    final = out / "final"
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    moved = [k for k in before if "lm_head" not in k and not torch.equal(before[k], after[k.replace("lm_head", "score")])]
    body = [k for k in before if "lm_head" not in k]
    assert len(moved) == len(body), f"weights that did not move: {set(body) - set(moved)}"
    assert "score.weight" in after
    spec = json.loads((final / "alignkit_reward.json").read_text())
    assert spec["pooling"] == "last" and spec["template"] == "chat" and spec["truncation_side"] == "left"
    assert spec["max_length"] == 96 and spec["reward_std"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward_mean"] == pytest.approx(spec["reward_mean"])

    rm = RewardModel.load(str(final))
    ours = rm.score(["How do I bake bread?", [{"role": "user", "content": "Hi"}]], ["Knead it.", "Hello!"])
    assert ours[0] == pytest.approx(_plain_hf_score(final, "How do I bake bread?", "Knead it."), abs=1e-5)
    assert ours[1] == pytest.approx(_plain_hf_score(final, "Hi", "Hello!"), abs=1e-5)
    normed = rm.score(["How do I bake bread?"], ["Knead it."], normalize=True)[0]
    assert normed == pytest.approx((ours[0] - spec["reward_mean"]) / spec["reward_std"])


def test_lora_rm_trains_adapters_and_head_and_saves_merged(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = write_rm_config(tmp_path / "c.yaml", tiny_model_dir, out, model={"finetune": "lora", "lora": {"r": 4}})
    assert main(["rm", str(cfg)]) == 0
    final = out / "final"
    assert not (final / "adapter_config.json").exists(), "LoRA reward models are saved merged"
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert not any("lora" in k for k in after)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[q], after[q]), "the merged adapters changed the base weights"
    emb = "model.embed_tokens.weight"
    assert torch.equal(before[emb], after[emb]), "only adapters and the head train"
    assert _plain_hf_score(final, "a", "b") == pytest.approx(
        __import__("alignkit").RewardModel.load(str(final)).score(["a"], ["b"])[0], abs=1e-5
    )


@pytest.mark.parametrize("pooling", ["mean", "response_mean", "cls"])
def test_encoder_rm(tiny_bert_dir, tmp_path, pooling):
    from alignkit import RewardModel

    out = tmp_path / pooling
    cfg = write_rm_config(tmp_path / "c.yaml", tiny_bert_dir, out, model={"pooling": pooling}, train={"learning_rate": 1e-2})
    assert main(["rm", str(cfg)]) == 0
    final = out / "final"
    spec = json.loads((final / "alignkit_reward.json").read_text())
    assert spec["kind"] == "encoder" and spec["pooling"] == pooling and spec["template"] == "plain"
    assert (final / "reward_head.safetensors").exists() == (pooling != "cls")
    rm = RewardModel.load(str(final))
    a, b = rm.score(["Is this safe?", "Is this safe?"], ["Yes.", "No, never do that."])
    assert a != b
    if pooling == "cls":  # a plain BertForSequenceClassification, loadable without alignkit
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(final)
        tok = AutoTokenizer.from_pretrained(final)
        with torch.no_grad():
            plain = model(**tok("User: Is this safe?\n\nAssistant: Yes.", return_tensors="pt")).logits[0, 0].item()
        assert plain == pytest.approx(a, abs=1e-5)


def test_non_finite_loss_stops_with_a_checkpoint_of_the_last_good_state(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import alignkit.algorithms.reward as reward
    from alignkit.losses.reward import bradley_terry_loss

    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        calls["n"] += 1
        out = bradley_terry_loss(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan")) if calls["n"] == 3 else out

    monkeypatch.setattr(reward, "bradley_terry_loss", nan_at_step_3)
    out = tmp_path / "run"
    cfg = write_rm_config(tmp_path / "c.yaml", tiny_model_dir, out, train={"max_steps": 5})
    assert main(["rm", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 3: the loss is nan" in err[0] and "step-2" in err[0]
    ckpt = out / "checkpoints" / "step-2"
    assert (ckpt / "trainer_state.json").exists() and (ckpt / "model" / "model.safetensors").exists()
    good = load_file(str(ckpt / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "final").exists()


def test_plain_transformers_reward_model_plugs_in(tiny_model_dir, tiny_bert_dir, tmp_path):
    """A one-label sequence classifier saved by plain transformers (no alignkit_reward.json) scores too."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignkit import RewardModel
    from alignkit.models.errors import ModelError

    for name, src in (("dec", tiny_model_dir), ("enc", tiny_bert_dir)):
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        rm = RewardModel.load(str(tmp_path / name))
        assert rm.spec.template == ("chat" if name == "dec" else "plain")
        assert len(rm.score(["a", "b"], ["c", "d"])) == 2
    AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).save_pretrained(tmp_path / "three")
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(tmp_path / "three")
    with pytest.raises(ModelError, match="not a reward model"):
        RewardModel.load(str(tmp_path / "three"))


def test_two_sources_repeat_and_per_source_eval(tiny_model_dir, tmp_path):
    """harmless + helpful (x3): eval accuracy per source, the repeat applied to training pairs only."""
    from tests.conftest import HH_RLHF, REPO

    helpful = REPO / "data/hh-rlhf-helpful/helpful-sample.jsonl.gz"
    out = tmp_path / "run"
    train = [{"path": str(HH_RLHF), "max_rows": 16}, {"path": str(helpful), "name": "helpful", "repeat": 3, "max_rows": 16}]
    cfg = write_rm_config(
        tmp_path / "c.yaml", tiny_model_dir, out, data={"train": train, "eval_fraction": 0.25, "max_rows": None}
    )
    assert main(["rm", str(cfg)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    subsets = summary["eval"]["eval_subsets"]
    assert set(subsets) == {"harmless-base", "helpful"}
    n_eval = summary["eval"]["eval_n"]
    assert sum(s["n"] for s in subsets.values()) == n_eval
    heldout = [json.loads(x) for x in (out / "heldout.jsonl").read_text().splitlines()]
    assert len(heldout) == n_eval
    held_helpful = sum(r.get("subset") == "helpful" for r in heldout)
    assert held_helpful == subsets["helpful"]["n"]
    by_source = summary["data"]["pairs_by_source"]
    assert sum(by_source.values()) == summary["data"]["pairs"]
    # every training pair of the helpful source three times, the held-out ones never
    distinct = summary["data"]["pairs"] - n_eval
    assert summary["train_pairs"] == distinct + 2 * (by_source["helpful"] - held_helpful)
