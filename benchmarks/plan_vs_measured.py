"""``alignkit plan``'s model-state parts against what one optimizer step really holds, on this CPU.

For init-model sizes tiny / small / medium and fine-tuning full, LoRA and QLoRA (4-bit NF4 on the CPU with
bitsandbytes 0.50), loads the model as ``alignkit sft`` does, runs one forward/backward/optimizer step on a
random batch and counts the bytes of the distinct tensor storages: the model's parameters and buffers (weights;
rotary caches included), the gradients of the trainable parameters, and the optimizer's states. Prints one row per
case with the plan's figures and the ratio plan / measured. (A CPU has no allocator statistics worth the name:
summing live tensor storages is the exact count of what the step keeps.)

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.plan_vs_measured [--sizes tiny small medium]
        [--optimizers adamw adamw_8bit] [--json out.json] [--smoke: tiny, full and LoRA, AdamW; JSON in a temporary folder]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HH = REPO / "data" / "hh-rlhf-harmless" / "harmless-base.jsonl.gz"


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        s = t.untyped_storage()
        if s.data_ptr() in seen:
            continue
        seen.add(s.data_ptr())
        total += s.nbytes()
    return total


def measure_step(model_dir: str, finetune: str, optimizer: str = "adamw", *, lora_r: int = 16, seq: int = 32) -> dict:
    """Bytes of weights, gradients and optimizer states after one training step of ``model_dir``."""
    import torch

    from alignkit.models.loading import load_causal_lm
    from alignkit.training.optim import build_optimizer

    model = load_causal_lm(model_dir, finetune=finetune, lora_r=lora_r, lora_dropout=0.0)
    opt = build_optimizer(model, learning_rate=1e-4, weight_decay=0.0, optimizer=optimizer)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(0))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    out = {
        "weights": _storage_bytes(list(model.parameters()) + list(model.buffers())),
        "gradients": _storage_bytes(grads),
    }
    opt.step()
    states = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.numel() > 1]
    out["optimizer"] = _storage_bytes(states)
    return out


def planned(model_dir: str, finetune: str, optimizer: str = "adamw", *, lora_r: int = 16) -> dict:
    """The plan's weights (base + LoRA), gradients and optimizer parts for the same model (fp32 weights)."""
    from alignkit.plan import Plan, Trainee, add_trained_model, resolve_shape

    plan = Plan()
    t = Trainee(resolve_shape(model_dir), finetune, "float32", lora_r=lora_r, optimizer=optimizer)
    add_trained_model(plan, t, "policy")
    p = plan.parts
    return {
        "weights": p.get("weights/policy", 0) + p.get("weights/policy_lora", 0),
        "gradients": p.get("gradients/policy", 0),
        "optimizer": p.get("optimizer/policy", 0),
    }


def make_model(size: str, root: str) -> str:
    from alignkit.models.init_model import init_model

    return str(init_model("llama", size, [str(HH)], str(Path(root) / size), seed=0))


def main(argv=None) -> int:
    from benchmarks import harness

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium"])
    ap.add_argument("--finetunes", nargs="+", default=["full", "lora", "qlora"])
    ap.add_argument("--optimizers", nargs="+", default=["adamw", "adamw_8bit"])
    ap.add_argument("--json", help="also write the rows here")
    harness.add_smoke_argument(ap)
    args = ap.parse_args(argv)
    settings = {"sizes": ["tiny"], "finetunes": ["full", "lora"], "optimizers": ["adamw"]}
    tmp = harness.apply_smoke(args, ap, settings, name="plan_vs_measured")
    if tmp is not None and args.json is None:
        args.json = str(tmp / "plan_vs_measured.json")
    import torch

    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for size in args.sizes:
            model_dir = make_model(size, root)
            for finetune in args.finetunes:
                for optimizer in args.optimizers:
                    t0 = time.time()
                    got = measure_step(model_dir, finetune, optimizer)
                    plan = planned(model_dir, finetune, optimizer)
                    row = {"size": size, "finetune": finetune, "optimizer": optimizer, "seconds": round(time.time() - t0, 1)}
                    for k in ("weights", "gradients", "optimizer"):
                        row[f"{k}_measured"], row[f"{k}_plan"] = got[k], plan[k]
                    rows.append(row)
                    cells = "  ".join(
                        f"{k} {got[k] / 2**20:8.2f} / {plan[k] / 2**20:8.2f} MiB ({plan[k] / got[k]:.3f})" for k in got
                    )
                    print(f"{size:6} {finetune:5} {optimizer:10} {cells}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
