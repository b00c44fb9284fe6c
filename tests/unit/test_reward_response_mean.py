"""Pooling ``response_mean`` never guesses: a response it cannot locate (a template that rewrites it, truncation that
removed it) is a one-line error naming it, in scoring and in training, not a mean over the whole conversation."""

import shutil

import pytest
import torch

from alignkit.cli import main
from alignkit.models.errors import ModelError
from tests.conftest import HH_RLHF, write_rm_config
from tests.unit.test_data_pairs import UPPER_TEMPLATE


def _rm(model_dir, template: str | None = None):
    from alignkit.models.loading import load_tokenizer
    from alignkit.models.reward import RewardModel, RewardSpec, build_reward_scorer

    tok = load_tokenizer(str(model_dir))
    if template:
        tok.chat_template = template
    scorer = build_reward_scorer(str(model_dir), pad_token_id=tok.pad_token_id, pooling="response_mean", seed=0).eval()
    return RewardModel(scorer, tok, RewardSpec(kind="decoder", pooling="response_mean", template="chat", max_length=128))


def test_score_refuses_a_response_it_cannot_locate(tiny_model_dir):
    ok = _rm(tiny_model_dir)
    assert len(ok.score(["Is it safe?"], ["yes, it is safe."])) == 1
    rm = _rm(tiny_model_dir, UPPER_TEMPLATE)
    with pytest.raises(ModelError) as err:
        # a template that rewrites content: no response is located from the rendered text, not even "YES"
        rm.score(["Is it safe?", "Hi"], ["YES", "yes, it is safe."])
    msg = str(err.value)
    assert "\n" not in msg and "cannot locate response 0" in msg and "2 such responses" in msg


def test_the_scorer_refuses_a_row_without_response_tokens(tiny_model_dir):
    scorer = _rm(tiny_model_dir).scorer
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])
    mask = torch.ones_like(ids)
    pool = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0]])
    with pytest.raises(ModelError, match="sequence 1 of the batch has no response tokens"):
        scorer(ids, mask, pool_mask=pool)


def test_training_names_the_row(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    from alignkit.models.loading import load_tokenizer

    tok = load_tokenizer(str(model))
    tok.chat_template = UPPER_TEMPLATE
    tok.save_pretrained(model)
    cfg = write_rm_config(tmp_path / "c.yaml", model, tmp_path / "out", model={"pooling": "response_mean"})
    assert main(["rm", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{HH_RLHF}:" in err and "pooling 'response_mean' cannot locate this response" in err
