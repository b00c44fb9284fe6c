"""The alignkit command line: parse, load the config or validate the options, call the stage or command; a user's
mistake is one line. The stages come from :mod:`alignkit.stages`, every other command from :mod:`alignkit.commands`.
Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alignkit.commands import COMMANDS, CommandParser, register
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


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``alignkit`` parser: the training stages (:data:`alignkit.stages.STAGES`), ``config show``, ``plan``, and
    the commands of :data:`alignkit.commands.COMMANDS`. ``lazy``: a command's options are made from its schema only
    when it is parsed or its help printed (``main``: ``alignkit --help`` imports no schema)."""
    p = CommandParser(prog="alignkit", description="The human-feedback pipeline for language models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)

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

    register(sub, COMMANDS, lazy=lazy)  # every other command: a schema of options and an entry point
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one line, exit code 2. Every layer's user error
    (``ConfigError``, ``DataError``, ``ModelError``, ``TrainingError``, ``RewardError``, ``JudgeError``,
    ``RagError``, ``ScoreError``) is an ``alignkit.errors.UserError``."""
    from alignkit.errors import UserError

    return (UserError,)


def main(argv: list[str] | None = None) -> int:
    from alignkit.models.hf_logging import quiet_import_notices  # logging only: --help stays instant

    quiet_import_notices()
    args = build_parser(lazy=True).parse_args(argv)
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
