"""Tier (b): the tiny model extended with Tamil tokens loads with plain transformers, generates, and trains two SFT
steps on Tamil prompt/completion rows with ``alignkit sft``."""

import json

import torch
from safetensors.torch import load_file

from alignkit.cli import main
from tests.conftest import REPO, write_sft_config

TAMIL = REPO / "data" / "tamil" / "tamil-prose.txt"


def test_extended_tiny_model_loads_generates_and_trains(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = [line for line in TAMIL.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 8][:120]
    text = tmp_path / "ta.txt"
    text.write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "tiny-ta"
    args = ["tokenizer", "extend", "--tokenizer", str(tiny_model_dir), "--model", str(tiny_model_dir)]
    assert main([*args, "--text", str(text), "--add", "100", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    old_rows = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"].shape[0]
    assert summary["added"] == 100 and summary["model"]["rows"] == old_rows + 100

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == old_rows + 100
    prompt = tok(lines[0][:40], return_tensors="pt")
    assert prompt["input_ids"].max() >= old_rows  # the prompt uses new tokens
    gen = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]
    assert tok.decode(prompt["input_ids"][0], skip_special_tokens=True) == lines[0][:40]  # new tokens decode back

    rows = tmp_path / "sft.jsonl"
    with rows.open("w", encoding="utf-8") as f:
        for line in lines[:32]:
            words = line.split()
            f.write(json.dumps({"prompt": " ".join(words[:4]), "completion": " ".join(words[4:12])}, ensure_ascii=False))
            f.write("\n")
    run = tmp_path / "run"
    cfg = write_sft_config(
        tmp_path / "c.yaml", out, run, data={"train": str(rows), "format": "prompt_completion", "max_rows": 32}
    )
    assert main(["sft", str(cfg)]) == 0
    losses = [json.loads(r)["loss"] for r in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(x)) for x in losses)
    before = load_file(str(out / "model.safetensors"))["model.embed_tokens.weight"]
    after = load_file(str(run / "final" / "model.safetensors"))["model.embed_tokens.weight"]
    assert after.shape == before.shape
    assert not torch.equal(after[old_rows:], before[old_rows:])  # the new Tamil rows trained
