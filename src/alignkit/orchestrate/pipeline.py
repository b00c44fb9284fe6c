"""``alignkit pipeline CONFIG``: SFT -> reward model -> PPO or GRPO (or DPO) -> comparison, from one YAML.

Every stage section is checked against its own schema before the first stage starts (a typo in the PPO
section fails in a second, not after the SFT has run). Then the stages run in order; a stage whose
``summary.json`` exists is finished and skipped, and an interrupted one resumes from its checkpoints
(every stage runs with ``resume: auto`` unless its section says otherwise).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from alignkit import stages
from alignkit.config.pipeline import CompareStageConfig, PipelineConfig
from alignkit.io_atomic import write_text
from alignkit.orchestrate.records import PipelineReport, StageOutcome

__all__ = ["run", "stage_configs"]


def stage_configs(cfg: PipelineConfig) -> tuple[dict, CompareStageConfig | None]:
    """``({stage: its config}, the compare section or None)`` for the stages present, in run order: every section
    was validated, and its references resolved, when ``cfg`` was."""
    return {stage: getattr(cfg, stage) for stage in cfg.present() if stage != "compare"}, cfg.compare


def run(cfg: PipelineConfig) -> PipelineReport:
    """Run the stages of ``cfg`` in order (the module doc); writes and returns ``pipeline.json``'s report."""
    from alignkit.config.base import write_config

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out / "pipeline.yaml")

    if cfg.init is not None and cfg.base and not Path(cfg.base).exists():
        from alignkit.models.init_model import init_model

        i = cfg.init
        print(f"{cfg.base} does not exist: creating a {i.arch}/{i.size} model (init)", flush=True)
        init_model(i.arch, i.size, i.tokenizer_from, cfg.base, vocab_size=i.vocab_size, seed=i.seed, split_digits=i.split_digits)

    # --- run ----------------------------------------------------------------------------------------
    done: dict[str, StageOutcome] = {}
    for stage in cfg.present():
        summary = out / stage / "summary.json"
        if summary.exists():
            print(f"\n=== {stage}: finished earlier ({summary}), skipped", flush=True)
            done[stage] = StageOutcome(skipped=True, seconds=None)
            continue
        print(f"\n=== {stage} -> {out / stage}", flush=True)
        t0 = time.time()
        if stage == "compare":
            _run_compare(cfg.compare, out / "compare")
        else:
            stages.entry(stage)(getattr(cfg, stage))
        done[stage] = StageOutcome(skipped=False, seconds=round(time.time() - t0, 1))
        print(f"({stage}: {time.time() - t0:.0f} s)", flush=True)
    report = PipelineReport(output_dir=str(out), stages=done)
    write_text(out / "pipeline.json", json.dumps(report.to_dict(), indent=2))
    return report


def _run_compare(c: CompareStageConfig, out: Path) -> None:
    from alignkit.eval.report import compare_scorer, run_compare

    scorer, label = compare_scorer(c.reward_model, c.reward_function, c.reward_kwargs)
    generation = ("max_new_tokens", "temperature", "top_p", "seed", "batch_size", "min_distinct_share", "backend")
    run_compare(
        c.models,
        c.prompts,
        max_prompts=c.max_prompts,
        scorer=scorer,
        scorer_label=label,
        out=out,
        **{k: getattr(c, k) for k in generation},
    )
