"""Rollouts from a separate engine (``generation.backend: vllm``), run here with a stand-in that has vLLM's design:
its own weights loaded from the base model, changed only by ``load_weights``. vLLM does not install on this CPU;
scripts/gpu_check.sh runs the same checks with the real engine.

- a run through the stand-in trains exactly as a run that samples from the policy (the pushes keep it on-policy),
  for a full policy and a shared-base LoRA one, logs the trainer-vs-engine gap and every push's check;
- a stand-in whose push silently does nothing, and one that drops the LoRA delta (the failure users of TRL,
  OpenRLHF and verl report most), are stopped at the first push after an update, with one line;
- merged weights equal peft's merge without touching the trained module, for LoRA and 4-bit QLoRA.
"""

import json

import pytest
import torch

from alignkit.cli import main
from alignkit.models import rollout_engine
from alignkit.models.rollout_engine import CopyEngine, PolicyEngine, merged_weights
from tests.conftest import write_grpo_config

LORA = {"finetune": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}


class SilentEngine(CopyEngine):
    """A push that returns normally and changes nothing."""

    def load_weights(self, weights) -> None:
        for _ in weights:
            pass
        self.pushes += 1


class NoLoraEngine(CopyEngine):
    """A push that keeps the engine's base weights for the LoRA layers (every linear layer: all-linear targets):
    the adapter never reaches the engine, the rest (embeddings, norms) is pushed."""

    def load_weights(self, weights) -> None:
        super().load_weights((n, t) for n, t in weights if not n.endswith("proj.weight"))


def _stand_in(monkeypatch, engine_cls):
    def build(generation, *, policy, tokenizer, base_path, dtype, seed, device, batch_size=None):
        if generation.backend == "transformers":
            return PolicyEngine(policy, tokenizer, batch_size=batch_size)
        return engine_cls(base_path, tokenizer, dtype=dtype, batch_size=batch_size)

    monkeypatch.setattr(rollout_engine, "build_engine", build)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _final(out):
    from safetensors.torch import load_file

    files = sorted((out / "final").glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


@pytest.mark.parametrize("sections", [{}, {"memory": "shared-base", "model": LORA, "kl": {"coef": 0.1}}], ids=["full", "lora"])
def test_a_separate_engine_trains_exactly_as_the_policy_itself(tiny_sft_dir, tmp_path, monkeypatch, sections):
    _stand_in(monkeypatch, CopyEngine)
    runs = {}
    for backend in ("transformers", "vllm"):
        out = tmp_path / backend
        cfg = write_grpo_config(tmp_path / f"{backend}.yaml", tiny_sft_dir, out, generation={"backend": backend}, **sections)
        assert main(["grpo", str(cfg)]) == 0
        runs[backend] = out
    rows = [r for r in _rows(runs["vllm"]) if "reward" in r]
    plain = [r for r in _rows(runs["transformers"]) if "reward" in r]
    assert [r["reward"] for r in rows] == [r["reward"] for r in plain]  # the same responses sampled
    for r in rows:
        assert r["rollout/logprob_gap_mean_abs"] < 1e-4  # fp32, same weights: the engine is the policy
        assert r["sync/gap"] < 1e-4 and r["sync/trainer_moved"] > 1e-3 and r["sync/engine_moved"] > 1e-3
    assert "rollout/logprob_gap_mean_abs" not in plain[0]
    summary = json.loads((runs["vllm"] / "summary.json").read_text())
    assert summary["generation_backend"] == "vllm" and summary["weight_pushes"] == 3  # the first + one per step
    a, b = _final(runs["vllm"]), _final(runs["transformers"])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize(
    "engine_cls, sections",
    [
        (SilentEngine, {}),
        (NoLoraEngine, {"model": LORA, "train": {"learning_rate": 1e-2}}),
        (NoLoraEngine, {"memory": "shared-base", "model": LORA, "train": {"learning_rate": 1e-2}}),
    ],
    ids=["silent-full", "lora-delta-lost", "lora-delta-lost-shared-base"],
)
def test_a_push_that_does_nothing_stops_the_run_with_one_line(tiny_sft_dir, tmp_path, monkeypatch, capsys, engine_cls, sections):
    _stand_in(monkeypatch, engine_cls)
    out = tmp_path / "run"
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, out, generation={"backend": "vllm"}, **sections)
    assert main(["grpo", str(cfg)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight sync 2 to the rollout engine failed" in err[0] and "changed nothing" in err[0], err
    assert not (out / "final").exists()


def test_tis_is_logged_and_needs_a_separate_engine(tiny_sft_dir, tmp_path, monkeypatch, capsys):
    _stand_in(monkeypatch, CopyEngine)
    out = tmp_path / "run"
    cfg = write_grpo_config(
        tmp_path / "c.yaml", tiny_sft_dir, out, generation={"backend": "vllm", "tis_cap": 2.0}, train={"max_steps": 1}
    )
    assert main(["grpo", str(cfg)]) == 0
    row = [r for r in _rows(out) if "reward" in r][0]
    assert row["rollout/tis_weight_mean"] == pytest.approx(1.0, abs=1e-4)  # engine == trainer: every weight is 1
    bad = write_grpo_config(tmp_path / "bad.yaml", tiny_sft_dir, tmp_path / "bad", generation={"tis_cap": 2.0})
    assert main(["grpo", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tis_cap" in err[0] and "backend vllm" in err[0]


def test_the_vllm_backend_without_vllm_is_one_line(tiny_sft_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, tmp_path / "run", generation={"backend": "vllm"})
    assert main(["grpo", str(cfg)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'alignkit[vllm]'" in err[0]


def _lora_model(base_dir, qlora=False):
    from alignkit.models.loading import load_causal_lm

    model = load_causal_lm(
        str(base_dir),
        finetune="qlora" if qlora else "lora",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lora_target_modules=["q_proj", "v_proj"] if qlora else "all-linear",
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)  # a trained-looking adapter (B starts at 0)
    return model


def test_merged_weights_equal_peft_merge_and_leave_the_model_alone(tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    merged = dict(merged_weights(model))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n  # not merged in place
    reference = model.merge_and_unload().state_dict()
    assert set(merged) == {k for k in reference if k != "lm_head.weight" or "lm_head.weight" in merged}
    for k, v in merged.items():
        torch.testing.assert_close(v, reference[k], rtol=1e-5, atol=1e-6, msg=k)


def test_merged_weights_of_a_4bit_base_are_its_dequantised_weights_plus_the_delta(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from peft.utils.integrations import dequantize_module_weight

    model = _lora_model(tiny_model_dir, qlora=True)
    merged = dict(merged_weights(model))
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    want = dequantize_module_weight(layer.get_base_layer()).float() + layer.get_delta_weight("default").float()
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.weight"].float(), want)
    assert all(t.dtype.is_floating_point and t.dtype != torch.uint8 for t in merged.values())
    o_proj = model.get_base_model().model.layers[0].self_attn.o_proj  # 4-bit, no LoRA: dequantised
    torch.testing.assert_close(merged["model.layers.0.self_attn.o_proj.weight"].float(), dequantize_module_weight(o_proj).float())


def test_small_updates_add_up_until_a_dead_push_is_caught(tiny_model_dir):
    """At a learning rate where one update moves the probe log-probs less than the check can see, the comparison
    stays anchored at the last push where the trainer had measurably moved, so a dead engine is caught once the
    updates add up (and a working one never is)."""
    from alignkit.models.loading import load_causal_lm, load_tokenizer
    from alignkit.models.rollout_engine import WeightSync
    from alignkit.training.errors import TrainingError

    tok = load_tokenizer(str(tiny_model_dir))
    probe = [tok("the cat sat on the mat")["input_ids"], tok("a dog ran")["input_ids"]]
    for engine_cls, should_fail in ((CopyEngine, False), (SilentEngine, True)):
        model = load_causal_lm(str(tiny_model_dir), finetune="full")
        sync = WeightSync(engine_cls(str(tiny_model_dir), tok), tok, probe, tolerance=0.05, probe_tokens=8)
        sync.push(model)
        failed_at = None
        for k in range(1, 40):
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + 2e-4)  # a tiny, steady drift
            try:
                figures = sync.push(model)
            except TrainingError as err:
                failed_at = k
                assert "changed nothing" in str(err)
                break
            assert figures["sync/gap"] < 0.05
        assert (failed_at is not None) == should_fail
        if should_fail:
            assert failed_at > 1  # not seen after one step: it took the drift adding up


@pytest.mark.parametrize("sections", [{}, {"memory": "shared-base", "model": LORA}], ids=["separate-full", "shared-base-lora"])
def test_ppo_through_a_separate_engine_trains_as_through_the_policy_and_catches_a_dead_push(
    tiny_sft_dir, tmp_path, monkeypatch, capsys, sections
):
    from tests.conftest import write_ppo_config

    _stand_in(monkeypatch, CopyEngine)
    runs = {}
    for backend in ("transformers", "vllm"):
        out = tmp_path / backend
        cfg = write_ppo_config(tmp_path / f"{backend}.yaml", tiny_sft_dir, out, generation={"backend": backend}, **sections)
        assert main(["ppo", str(cfg)]) == 0
        runs[backend] = out
    rows = [r for r in _rows(runs["vllm"]) if "reward" in r]
    assert [r["reward"] for r in rows] == [r["reward"] for r in _rows(runs["transformers"]) if "reward" in r]
    assert all(r["rollout/logprob_gap_mean_abs"] < 1e-4 and r["sync/gap"] < 1e-4 for r in rows)
    assert json.loads((runs["vllm"] / "summary.json").read_text())["weight_pushes"] == 3
    a, b = _final(runs["vllm"]), _final(runs["transformers"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)

    _stand_in(monkeypatch, SilentEngine if not sections else NoLoraEngine)
    cfg = write_ppo_config(tmp_path / "dead.yaml", tiny_sft_dir, tmp_path / "dead", generation={"backend": "vllm"}, **sections)
    capsys.readouterr()
    assert main(["ppo", str(cfg)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight sync 2 to the rollout engine failed" in err[0], err


class _CopyAsVLLM(CopyEngine):
    """The stand-in in VLLMEngine's place (its constructor's signature); records the paths it loaded."""

    loaded: list = []

    def __init__(self, path, *, dtype="auto", seed=0, sleep_mode=True, llm_kwargs=None):
        super().__init__(path)
        _CopyAsVLLM.loaded.append(path)


def test_compare_and_self_reward_generate_through_the_engine(tiny_model_dir, loud_model_dir, tmp_path, monkeypatch):
    """compare with backend vllm: each model in its own engine (an adapter merged first); greedy answers equal
    transformers'. self-reward with generation.backend vllm runs a round with every generation in the engine."""
    from alignkit.eval.compare import compare_models
    from alignkit.models.loading import load_causal_lm, load_tokenizer, save_model
    from tests.smoke.test_self_reward_smoke import _config

    monkeypatch.setattr(rollout_engine, "VLLMEngine", _CopyAsVLLM)
    lora = load_causal_lm(str(loud_model_dir), finetune="lora", lora_r=4)
    save_model(lora, load_tokenizer(str(loud_model_dir)), str(tmp_path / "adapter"))
    models = {"base": str(loud_model_dir), "lora": str(tmp_path / "adapter")}
    prompts = ["What is the capital of France?", "Name a colour.", "Count to three."]
    kw = dict(max_new_tokens=6, temperature=0.0, log=lambda _: None)
    _CopyAsVLLM.loaded.clear()
    via_engine = compare_models(models, prompts, backend="vllm", **kw)
    plain = compare_models(models, prompts, **kw)
    assert len(_CopyAsVLLM.loaded) == 2 and "alignkit-merged-" in _CopyAsVLLM.loaded[1]  # the adapter merged first
    for name in models:
        assert via_engine.column(name, "response") == plain.column(name, "response")
    assert via_engine.settings["backend"] == "vllm" and len(set(plain.column("base", "response"))) > 1

    _CopyAsVLLM.loaded.clear()
    out = tmp_path / "self"
    cfg = _config(
        tmp_path / "s.yaml",
        tiny_model_dir,
        out,
        iterations=1,
        prompts={"per_iteration": 8, "heldout_rows": 4, "max_rows": 40},
        dpo={"train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}},
        generation={"backend": "vllm"},
    )
    assert main(["self-reward", str(cfg)]) == 0
    assert str(out / "iter-1" / "train" / "final") in _CopyAsVLLM.loaded  # the trained round's model was loaded
    assert (out / "iter-1" / "candidates.jsonl").exists()


def test_an_interrupted_run_through_the_engine_resumes_to_the_same_result(tiny_sft_dir, tmp_path, monkeypatch):
    """Killed (Ctrl-C) in the push after step 2, before that step's checkpoint: the resumed run builds a fresh
    engine from the base, pushes the checkpoint's weights (verified), samples what the first run sampled and ends
    with the uninterrupted run's weights."""
    from alignkit.models.rollout_engine import WeightSync
    from tests.conftest import interrupt_on_call

    _stand_in(monkeypatch, CopyEngine)
    kw = dict(generation={"backend": "vllm"}, train={"max_steps": 3, "save_every": 1})
    whole = tmp_path / "whole"
    assert main(["grpo", str(write_grpo_config(tmp_path / "w.yaml", tiny_sft_dir, whole, **kw))]) == 0
    out = tmp_path / "cut"
    cfg = write_grpo_config(tmp_path / "c.yaml", tiny_sft_dir, out, **kw)
    real = WeightSync.push
    monkeypatch.setattr(WeightSync, "push", interrupt_on_call(3, real))  # pushes: start, after step 1, after step 2
    assert main(["grpo", str(cfg)]) != 0  # the CLI reports the interrupt and exits non-zero
    assert not (out / "final").exists()
    monkeypatch.setattr(WeightSync, "push", real)
    assert main(["grpo", str(cfg)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["weight_pushes"] == 3  # start + steps 2 and 3
    a, b = _final(out), _final(whole)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
