"""Shared test setup: offline, pinned threads, opt-in slow/GPU tiers.

Tiny-model tests pin torch to OMP_NUM_THREADS threads (default 2): on 2 cores, torch threads that
oversubscribe a busy machine run 20-30x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
if "ALIGNKIT_CACHE_DIR" not in os.environ:  # the ONNX exports of the cache's encoders: one per test session
    import atexit
    import shutil
    import tempfile

    os.environ["ALIGNKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="alignkit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ALIGNKIT_CACHE_DIR"], True)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HH_RLHF = REPO / "data" / "hh-rlhf-harmless" / "harmless-base.jsonl.gz"


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--rungpu", action="store_true", help="run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: opt in with --runslow"))
        if "gpu" in item.keywords and not config.getoption("--rungpu"):
            item.add_marker(pytest.mark.skip(reason="gpu: opt in with --rungpu"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + tokenizer trained on the shipped hh-rlhf text, built once per session."""
    from alignkit.models.init_model import init_model

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    return init_model("llama", "tiny", [str(HH_RLHF)], str(out), seed=0)


def write_sft_config(path: Path, model_dir: Path, output_dir: Path, **sections) -> Path:
    """A small SFT config on 64 real hh-rlhf rows; ``sections`` update the train/data/model dicts."""
    import yaml

    cfg = {
        "output_dir": str(output_dir),
        "resume": "auto",
        "model": {"name_or_path": str(model_dir), "finetune": "full"},
        "data": {"train": str(HH_RLHF), "format": "hh_rlhf", "max_length": 128, "max_rows": 64, "on_error": "skip"},
        "train": {"seed": 0, "max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1},
    }
    for key, extra in sections.items():
        cfg[key].update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _base(model_dir: Path | str, output_dir: Path, data: dict) -> dict:
    return {
        "output_dir": str(output_dir),
        "resume": "auto",
        "tensorboard": False,
        "model": {"name_or_path": str(model_dir), "finetune": "full"},
        "data": {"train": str(HH_RLHF), "format": "hh_rlhf", "on_error": "skip", **data},
        "train": {"seed": 0, "max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1},
    }


def _write_config(path: Path, cfg: dict, sections: dict) -> Path:
    """Write ``cfg`` as YAML after ``sections`` update its dicts (or set top-level keys)."""
    import yaml

    for key, extra in sections.items():
        if isinstance(extra, dict):
            cfg.setdefault(key, {}).update(extra)
        else:
            cfg[key] = extra
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_rm_config(path: Path, model_dir: Path | str, output_dir: Path, **sections) -> Path:
    """A small reward-model config on 32 real hh-rlhf pairs."""
    return _write_config(path, _base(model_dir, output_dir, {"max_length": 96, "max_rows": 32}), sections)


def write_dpo_config(path: Path, model_dir: Path | str, output_dir: Path, **sections) -> Path:
    """A small DPO-stage config on 16 real hh-rlhf pairs."""
    return _write_config(path, _base(model_dir, output_dir, {"max_length": 96, "max_rows": 16}), sections)


def write_ppo_config(path: Path, model_dir: Path | str, output_dir: Path, **sections) -> Path:
    """A small PPO config: 64 hh-rlhf prompts, a rule-based reward (the word "you"), 2 steps of 8 rollouts."""
    cfg = _base(model_dir, output_dir, {"max_length": 96, "max_rows": 64})
    cfg["memory"] = "separate"
    cfg["reward"] = {"function": "alignkit.rl.rule_rewards:keyword", "kwargs": {"word": "you"}, "normalize": True}
    cfg["generation"] = {"max_new_tokens": 16}
    cfg["ppo"] = {"rollout_size": 8, "mini_batch_size": 4, "ppo_epochs": 2}
    cfg["train"].update({"lr_scheduler": "constant"})
    return _write_config(path, cfg, sections)


def write_grpo_config(path: Path, model_dir: Path | str, output_dir: Path, **sections) -> Path:
    """A small GRPO config: 64 hh-rlhf prompts, a rule-based reward (the word "you"), 2 steps of 4 prompts × G 4."""
    cfg = _base(model_dir, output_dir, {"max_length": 96, "max_rows": 64})
    cfg["rewards"] = {"functions": [{"function": "alignkit.rl.rule_rewards:keyword", "kwargs": {"word": "you"}}]}
    cfg["generation"] = {"max_new_tokens": 16}
    cfg["grpo"] = {"group_size": 4, "prompts_per_step": 4}
    cfg["train"].update({"lr_scheduler": "constant"})
    return _write_config(path, cfg, sections)


@pytest.fixture(scope="session")
def loud_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random model with weights redrawn at std 0.2, so greedy replies differ from prompt to prompt (at the
    init scale every reply is newlines, and "each answer equals its own" would prove nothing)."""
    import torch

    from alignkit.models.loading import load_causal_lm, load_tokenizer, save_model

    out = tmp_path_factory.mktemp("loud") / "model"
    model, tok = load_causal_lm(str(tiny_model_dir), finetune="none"), load_tokenizer(str(tiny_model_dir))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    save_model(model, tok, str(out))
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder with the bundled all-MiniLM-L6-v2 tokenizer (offline), built once."""
    import torch
    from transformers import BertConfig, BertModel

    from alignkit.models.loading import load_tokenizer

    out = tmp_path_factory.mktemp("models") / "tiny-bert"
    tok = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_sft_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama after 60 SFT steps on hh-rlhf chosen replies (~10 s): it writes common English words,
    so a rule-based reward on a word gives RL a signal from the first step."""
    from alignkit.cli import main

    root = tmp_path_factory.mktemp("sft")
    cfg = write_sft_config(
        root / "sft.yaml",
        tiny_model_dir,
        root / "run",
        train={"max_steps": 60, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 5},
        data={"max_length": 256, "max_rows": None},
    )
    assert main(["sft", str(cfg)]) == 0
    return root / "run" / "final"


def torchrun(stage: str, config, nproc: int = 2, timeout: int = 300):
    """``alignkit STAGE CONFIG`` under torchrun: ``nproc`` processes (gloo on CPU), one thread each, a free
    rendezvous port (``--standalone``: two test runs on one machine cannot collide). The CompletedProcess."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["-m", "alignkit", stage, str(config)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def interrupt_on_call(n: int, real):
    """A stand-in for ``real`` that raises KeyboardInterrupt (as Ctrl-C would) on its ``n``-th call."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper
