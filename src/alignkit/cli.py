"""The alignkit command line: parse, load config, call the stage. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alignkit.stages import ESTIMATOR_ALIASES, LOSS_ALIASES, STAGES  # noqa: F401 (STAGES: also read by the tests)
from alignkit.stages import load as _load


def _stage_config(stage: str, path: str, overrides: list[str]):
    from alignkit.config.base import ConfigError, load_config, read_yaml

    if stage in LOSS_ALIASES:
        loss = read_yaml(path).get("loss")
        given = loss if isinstance(loss, str) else (loss or {}).get("type") if isinstance(loss, dict) else None
        if given not in (None, stage):
            raise ConfigError(
                f"{path}: 'alignkit {stage}' trains with loss {stage}, but the config sets loss type {given!r} (run it with 'alignkit dpo')"
            )
        if not isinstance(loss, str):
            overrides = [f"loss.type={stage}", *overrides]
    if stage in ESTIMATOR_ALIASES:
        want = ESTIMATOR_ALIASES[stage]
        advantage = read_yaml(path).get("advantage")
        given = advantage.get("estimator") if isinstance(advantage, dict) else None
        if given not in (None, want):
            raise ConfigError(
                f"{path}: 'alignkit {stage}' trains with advantage.estimator {want}, but the config sets {given!r} (run it with 'alignkit grpo')"
            )
        overrides = [f"advantage.estimator={want}", *overrides]
    return load_config(_load(STAGES[stage][0]), path, overrides)


def _quiet() -> None:
    from alignkit.models.hf_logging import quiet_libraries

    quiet_libraries()


def cmd_stage(args: argparse.Namespace) -> int:
    cfg = _stage_config(args.command, args.config, args.overrides)
    _load(STAGES[args.command][1])(cfg)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from alignkit.config.base import ConfigError, dump_config

    stage = args.stage or Path(args.config).parent.name.replace("_", "-")  # configs/self_reward -> self-reward
    if stage not in STAGES:
        raise ConfigError(f"{args.config}: cannot tell the stage from its folder; pass --stage ({' | '.join(STAGES)})")
    print(dump_config(_stage_config(stage, args.config, args.overrides)), end="")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from alignkit.config.base import ConfigError, load_config
    from alignkit.plan import format_plan, parse_size, plan_json, plan_pipeline, plan_stage

    gpu = parse_size(args.gpu_memory) if args.gpu_memory else None
    stage = args.stage or Path(args.config).parent.name.replace("_", "-")
    if stage not in STAGES:
        raise ConfigError(f"{args.config}: cannot tell the stage from its folder; pass --stage ({' | '.join(STAGES)})")
    if stage == "pipeline":
        plans = plan_pipeline(load_config(_load(STAGES[stage][0]), args.config, args.overrides))
    else:
        plans = {stage: plan_stage(stage, _stage_config(stage, args.config, args.overrides))}
    print(json.dumps(plan_json(plans, gpu)) if args.json else format_plan(plans, gpu, title=f"memory plan: {args.config}"))
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from alignkit.data.inspect import inspect_data, print_report

    tokenizer = None
    if args.tokenizer:
        from alignkit.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    report = inspect_data(args.path, tokenizer=tokenizer, fmt=args.format, split=args.split, max_length=args.max_length)
    print_report(report)
    return 0


def cmd_init_model(args: argparse.Namespace) -> int:
    _quiet()
    from alignkit.models.init_model import init_model

    out = init_model(
        args.arch,
        args.size,
        args.tokenizer_from,
        args.out,
        vocab_size=args.vocab_size,
        seed=args.seed,
        overwrite=args.overwrite,
        split_digits=args.split_digits,
    )
    print(f"wrote {args.arch}/{args.size} model and tokenizer to {out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    _quiet()
    from alignkit.models.merge import merge_adapter

    out = merge_adapter(args.adapter, args.out, dtype=args.dtype, overwrite=args.overwrite)
    print(f"merged {args.adapter} into its base: {out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    _quiet()
    from alignkit.models.generation import generate
    from alignkit.models.loading import load_for_inference

    model, tokenizer = load_for_inference(args.model)
    texts = generate(
        model,
        tokenizer,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    for prompt, text in zip(args.prompt, texts):
        print(f"### {prompt}\n{text}\n")
    return 0


def cmd_rm_eval(args: argparse.Namespace) -> int:
    _quiet()
    import json

    from alignkit.eval.reward_eval import evaluate_reward_model

    result = evaluate_reward_model(
        args.model,
        args.data,
        fmt=args.format,
        split=args.split,
        on_error=args.on_error,
        max_rows=args.max_rows,
        batch_size=args.batch_size,
        out=args.out,
    )
    print(json.dumps(result))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    _quiet()
    import json

    from alignkit.config.base import ConfigError

    if bool(args.data) == (args.prompt is not None or args.response is not None):
        raise ConfigError("score: give either --data FILE or both --prompt and --response")
    if args.data:
        from alignkit.eval.reward_eval import score_rows

        rows = score_rows(args.model, args.data, batch_size=args.batch_size)
        lines = [json.dumps(r) for r in rows]
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("".join(line + "\n" for line in lines))
            print(f"scored {len(rows)} rows -> {args.out}")
        else:
            print("\n".join(lines))
        return 0
    if args.prompt is None or args.response is None:
        raise ConfigError("score: --prompt and --response go together")
    from alignkit.models.reward import RewardModel

    print(RewardModel.load(args.model).score([args.prompt], [args.response])[0])
    return 0


def check_out_dir(path: str, flag: str = "--out") -> None:
    """A ConfigError unless ``path`` is, or can be created as, a writable directory: checked before the work."""
    import os

    from alignkit.config.base import ConfigError

    p = Path(path).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise ConfigError(f"{flag} {path}: {q} is a file, not a directory")
            if not os.access(q, os.W_OK | os.X_OK):
                raise ConfigError(f"{flag} {path}: {q} is not writable")
            return


def cmd_compare(args: argparse.Namespace) -> int:
    _quiet()
    from alignkit.eval.compare import compare_models, find_runs, load_prompts, parse_model_specs, print_side_by_side
    from alignkit.eval.report import write_outputs

    if args.out:
        check_out_dir(args.out)  # before any model is loaded, not after all generation
    models = parse_model_specs(args.model)
    prompts = load_prompts(args.prompts, max_prompts=args.max_prompts)
    scorer = None
    if args.reward_model:
        from alignkit.models.reward import RewardModel

        scorer = RewardModel.load(args.reward_model)
    result = compare_models(
        models,
        prompts,
        scorer=scorer,
        scorer_label=args.reward_model,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        batch_size=args.batch_size,
        min_distinct_share=args.min_distinct_share,
        backend=args.backend,
    )
    print_side_by_side(result)
    if args.out:
        out = write_outputs(result, args.out, runs=find_runs(models, extra=args.runs or []))
        print(f"wrote {out}/compare.jsonl, summary.json, report.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alignkit", description="The human-feedback pipeline for language models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for stage in STAGES:
        what = f"dpo with loss {stage}" if stage in LOSS_ALIASES else f"the {stage} stage"
        if stage in ESTIMATOR_ALIASES:
            what = f"grpo with advantage.estimator {ESTIMATOR_ALIASES[stage]}"
        s = sub.add_parser(stage, help=f"run {what}: alignkit {stage} CONFIG.yaml [key.sub=value ...]")
        s.add_argument("config", help="YAML config (see configs/)")
        s.add_argument("overrides", nargs="*", help="key.sub=value overrides, values parsed as YAML")
        s.set_defaults(func=cmd_stage)

    c = sub.add_parser("config", help="config tools").add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    show = c.add_parser("show", help="print the resolved config")
    show.add_argument("config", help="YAML config")
    show.add_argument("overrides", nargs="*", help="key.sub=value overrides, values parsed as YAML")
    show.add_argument("--stage", choices=list(STAGES), help="stage schema (default: the config's folder name)")
    show.set_defaults(func=cmd_config_show)

    pl = sub.add_parser("plan", help="memory each part of a stage or pipeline needs on the GPU, and whether it fits")
    pl.add_argument("config", help="a stage or pipeline YAML config")
    pl.add_argument("overrides", nargs="*", help="key.sub=value overrides, values parsed as YAML")
    pl.add_argument("--gpu-memory", metavar="SIZE", help="the device's memory (24GB, 80GiB): say whether the plan fits")
    pl.add_argument("--json", action="store_true", help='print {"total_bytes", "fits", "breakdown"} as JSON')
    pl.add_argument("--stage", choices=list(STAGES), help="config schema (default: the config's folder name)")
    pl.set_defaults(func=cmd_plan)

    d = sub.add_parser("data", help="data tools").add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    insp = d.add_parser("inspect", help="format, row count, token lengths and the first example, masks marked")
    insp.add_argument("path", help="data file, datasets directory or hub dataset name")
    insp.add_argument("--format", default="auto", help="row format (default: detect)")
    insp.add_argument("--tokenizer", help="model/tokenizer dir (default: a small tokenizer trained on the data)")
    insp.add_argument("--split", default="train", help="split of a datasets directory or hub dataset")
    insp.add_argument("--max-length", type=int, default=1024, help="token length counted as too long in the report")
    insp.set_defaults(func=cmd_data_inspect)

    im = sub.add_parser("init-model", help="create a randomly initialised model + trained tokenizer, offline")
    im.add_argument("--arch", choices=["llama", "qwen2", "gemma2"], default="llama", help="model architecture")
    im.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny", help="model size (see docs/models.md)")
    im.add_argument(
        "--tokenizer-from", nargs="+", required=True, metavar="FILE", help="text or data files to train the tokenizer on"
    )
    im.add_argument("--out", required=True, help="output directory")
    im.add_argument("--vocab-size", type=int, default=None, help="tokenizer vocabulary size (default: the size's own)")
    im.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    im.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    im.add_argument("--split-digits", action="store_true", help="tokenize every digit on its own (no merged digit runs)")
    im.set_defaults(func=cmd_init_model)

    mg = sub.add_parser("merge", help="merge a LoRA adapter into its base model")
    mg.add_argument("--adapter", required=True, help="LoRA adapter directory (with adapter_config.json)")
    mg.add_argument("--out", required=True, help="output directory for the merged model")
    mg.add_argument("--dtype", default="float32", help="dtype of the merged weights")
    mg.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    mg.set_defaults(func=cmd_merge)

    g = sub.add_parser(
        "generate",
        help="generate replies with a model or adapter directory (samples at temperature 0.7; serve is greedy)",
        description="Generate replies with a model or adapter directory. Samples at temperature 0.7 by default, "
        "while 'alignkit serve' answers greedily (temperature 0) unless a request sets one: pass --temperature 0 "
        "for serve's answers. A prompt that with --max-new-tokens exceeds the model's context is refused.",
    )
    g.add_argument("--model", required=True, help="model or adapter directory, or Hub id")
    g.add_argument("--prompt", action="append", required=True, help="a user message (repeatable)")
    g.add_argument("--max-new-tokens", type=int, default=64, help="most tokens generated per reply")
    g.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature, 0: greedy (default: 0.7, sampled; serve is greedy)"
    )
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.set_defaults(func=cmd_generate)
    re_ = sub.add_parser("rm-eval", help="pairwise accuracy, margin and calibration (ECE) of a reward model; JSON to stdout")
    re_.add_argument("--model", required=True, help="reward model directory (alignkit rm's final/)")
    re_.add_argument("--data", required=True, help="preference pairs (any preference format; optional 'subset' column)")
    re_.add_argument("--out", help="write each pair's two scores as JSONL here")
    re_.add_argument("--format", default="auto", help="row format (auto: detect)")
    re_.add_argument("--split", default="train", help="split of a datasets directory or hub dataset")
    re_.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="a malformed row: stop, or skip it")
    re_.add_argument("--max-rows", type=int, help="read at most this many rows (default: all)")
    re_.add_argument("--batch-size", type=int, default=16, help="pairs scored per forward pass")
    re_.set_defaults(func=cmd_rm_eval)

    sc = sub.add_parser("score", help="reward-model scores of prompt/response rows, or of one --prompt/--response")
    sc.add_argument("--model", required=True, help="reward model directory")
    sc.add_argument("--data", help="prompt/response rows (jsonl, json, parquet, csv)")
    sc.add_argument("--out", help="with --data: write the scored rows as JSONL here (default: stdout)")
    sc.add_argument("--prompt", help="one user message")
    sc.add_argument("--response", help="the reply to score")
    sc.add_argument("--batch-size", type=int, default=16, help="rows scored per forward pass")
    sc.set_defaults(func=cmd_score)

    cp = sub.add_parser("compare", help="answers of several models side by side, scored by a reward model; report.html")
    cp.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a model to compare (repeat; the first is the reference)",
    )
    cp.add_argument("--prompts", required=True, help="prompts: .txt (one per line) or any data format (the prompt part)")
    cp.add_argument("--reward-model", help="reward model directory scoring every answer")
    cp.add_argument("--out", help="write compare.jsonl, summary.json and report.html here")
    cp.add_argument("--max-prompts", type=int, help="use the first N prompts (default: all)")
    cp.add_argument(
        "--min-distinct-share",
        type=float,
        default=0.5,
        help="warn of collapse below this share of distinct answers (lower it where right answers repeat, e.g. sums)",
    )
    cp.add_argument("--max-new-tokens", type=int, default=64, help="most tokens per answer")
    cp.add_argument("--temperature", type=float, default=0.7, help="sampling temperature, 0: greedy")
    cp.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    cp.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (the same for every model)")
    cp.add_argument("--batch-size", type=int, default=8, help="prompts generated per batch")
    cp.add_argument(
        "--backend", choices=["transformers", "vllm"], default="transformers", help="generate with transformers or vLLM (CUDA)"
    )
    cp.add_argument("--runs", nargs="+", metavar="DIR", help="more run directories (with metrics.jsonl) to plot")
    cp.set_defaults(func=cmd_compare)

    # RAG, the semantic cache and the server: each module registers its own commands (argparse only at import)
    from alignkit.rag import cache_commands, commands
    from alignkit.serve import commands as serve_commands
    from alignkit.vocab import commands as vocab_commands

    for module in (commands, cache_commands, serve_commands, vocab_commands):
        module.add_parsers(sub)
    _show_defaults(p, skip=("serve",))
    return p


class _DefaultsHelp(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help that does not mention its default (a default of None or False
    means "not given" and is left out)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)  # 0 is shown
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _show_defaults(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Give ``parser`` and every sub-command parser below it (but those named in ``skip``) :class:`_DefaultsHelp`."""
    parser.formatter_class = _DefaultsHelp
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if name not in skip:
                    _show_defaults(child, skip)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one line, exit code 2. Every layer's user error
    (``ConfigError``, ``DataError``, ``ModelError``, ``TrainingError``, ``RewardError``, ``JudgeError``,
    ``RagError``, ``ScoreError``) is an ``alignkit.errors.UserError``."""
    from alignkit.errors import UserError

    return (UserError,)


def main(argv: list[str] | None = None) -> int:
    from alignkit.models.hf_logging import quiet_import_notices  # logging only: --help stays instant

    quiet_import_notices()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as err:
        print(f"alignkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
