"""The CLI commands end to end on tiny artefacts: init-model, generate, merge, config show, data inspect."""

import json
import subprocess
import sys

from alignkit.cli import main
from tests.conftest import HH_RLHF, REPO, write_sft_config


def test_help_is_instant_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "alignkit", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("sft", "config", "data", "init-model", "merge", "generate"):
        assert cmd in out


def test_init_model_generate_and_merge(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "qwen"
    assert (
        main(
            [
                "init-model",
                "--arch",
                "qwen2",
                "--size",
                "tiny",
                "--tokenizer-from",
                str(REPO / "data/README.md"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert main(["init-model", "--arch", "qwen2", "--tokenizer-from", str(REPO / "data/README.md"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err

    run = tmp_path / "lora"
    cfg = write_sft_config(
        tmp_path / "c.yaml", tiny_model_dir, run, model={"finetune": "lora", "lora": {"r": 2}}, train={"max_steps": 1}
    )
    assert main(["sft", str(cfg)]) == 0
    capsys.readouterr()
    assert (
        main(["generate", "--model", str(run / "final"), "--prompt", "Hello?", "--temperature", "0", "--max-new-tokens", "5"])
        == 0
    )
    assert "### Hello?" in capsys.readouterr().out
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(run / "final"), "--out", str(merged)]) == 0
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(merged)


def test_config_show_and_data_inspect(capsys, tiny_model_dir):
    assert main(["config", "show", str(REPO / "configs/sft/tiny.yaml"), "train.max_steps=7"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out
    assert main(["data", "inspect", str(HH_RLHF), "--tokenizer", str(tiny_model_dir)]) == 0
    text = capsys.readouterr().out
    assert "hh_rlhf" in text and "1908" in text.replace(",", "") and "[no loss]" in text


def test_compare_scored_by_a_reward_function_with_kwargs(tmp_path, tiny_model_dir, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 13 + 54?\nWhat is 26 + 16?\n")
    base = ["compare", "--model", f"a={tiny_model_dir}", "--prompts", str(prompts), "--max-new-tokens", "4"]
    fn = ["--reward-function", "alignkit.rl.rule_rewards:keyword"]
    out = tmp_path / "cmp"
    assert main([*base, *fn, "--reward-kwargs", "{word: zzz, cap: 2}", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "keyword" in json.dumps(summary) and "zzz" in json.dumps(summary)  # the scorer's name, with its kwargs
    rows = [json.loads(line) for line in (out / "compare.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    capsys.readouterr()
    # one scorer; kwargs only with a function; a bad mapping: one line each, before any model loads
    for args, needle in [
        ([*base, *fn, "--reward-model", str(tiny_model_dir)], "one of --reward-model and --reward-function"),
        ([*base, "--reward-kwargs", "{a: 1}"], "--reward-kwargs goes with --reward-function"),
        ([*base, *fn, "--reward-kwargs", "[1, 2]"], "a mapping"),
        ([*base, "--top-p", "0"], "compare --top-p"),
    ]:
        assert main(args) == 2
        assert needle in capsys.readouterr().err
