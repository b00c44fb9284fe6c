"""The command registry: every ``alignkit`` command but the training stages (those are in :mod:`alignkit.stages`)
is a :class:`Command` record listed once in :data:`COMMANDS`: its name, its help, its options as a schema (a closed
pydantic model, one field per option, the field's description its help) and an entry point that takes the
validated options object.

The argparse options are made from the schema's fields (:func:`add_options`): ``bool`` -> a ``store_true`` flag,
``Literal[...]`` -> choices, ``list[...]`` -> a repeatable option (or ``nargs``), a field without a default -> a
required option; :class:`Opt` in ``Annotated[T, Opt(...)]`` says what the type cannot (a positional, a metavar, a
spelling). The parsed values are validated back into the schema (:func:`parse_options`): a bad value is a one-line
``ConfigError`` naming the option; cross-field checks are the schema's validators.

Schemas and entry points are ``"module:attr"`` strings, as the stages' are: nothing is imported until a command is
parsed (its schema: pydantic only) or run (its entry point: the heavy imports inside it), so ``alignkit --help``
stays instant. Only argparse and the standard library are imported here.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignkit.stages import load


@dataclass(frozen=True)
class Opt:
    """How a schema field appears on the command line beyond what its type says: ``Annotated[T, Opt(...)]``."""

    flag: str | None = None  # the option's spelling (default: --field-name, underscores as dashes)
    positional: bool = False  # a positional argument named after the field, not an option
    metavar: str | None = None
    nargs: str | None = None  # a list field: "+" (one option, several values) instead of a repeatable option
    type: Callable[[str], Any] | None = None  # an argparse type: its errors are argparse's, before validation


@dataclass(frozen=True)
class Command:
    """One command: ``name`` ("generate", or "rag index" for an action of the group ``rag``), its one-line
    ``help``, ``options`` and ``entry`` as ``"module:attr"`` (a ``Closed`` schema; a function of the validated
    options returning the exit code), the ``--help`` ``description``, whether option helps get "(default: X)" and
    whether the command loads models (``quiet``: transformers' info logs and hub progress bars are silenced first;
    alignkit prints its own progress)."""

    name: str
    help: str
    options: str
    entry: str
    description: str | None = None
    show_defaults: bool = True
    quiet: bool = False


# group -> its help; its actions are the commands named "group action" below
GROUPS: dict[str, str] = {
    "data": "data tools",
    "rag": "retrieval-augmented generation: index documents, answer questions from them",
    "tokenizer": "tokenizer tools: report coverage of a language, extend the vocabulary",
}

COMMANDS: tuple[Command, ...] = (
    Command(
        "data inspect",
        "format, row count, token lengths and the first example, masks marked",
        "alignkit.data.commands:InspectOptions",
        "alignkit.data.commands:inspect",
    ),
    Command(
        "init-model",
        "create a randomly initialised model + trained tokenizer, offline",
        "alignkit.models.commands:InitModelOptions",
        "alignkit.models.commands:init_model",
        quiet=True,
    ),
    Command(
        "merge",
        "merge a LoRA adapter into its base model",
        "alignkit.models.commands:MergeOptions",
        "alignkit.models.commands:merge",
        quiet=True,
    ),
    Command(
        "generate",
        "generate replies with a model or adapter directory (samples at temperature 0.7; serve is greedy)",
        "alignkit.models.commands:GenerateOptions",
        "alignkit.models.commands:generate",
        quiet=True,
        description="Generate replies with a model or adapter directory. Samples at temperature 0.7 by default, "
        "while 'alignkit serve' answers greedily (temperature 0) unless a request sets one: pass --temperature 0 "
        "for serve's answers. A prompt that with --max-new-tokens exceeds the model's context is refused.",
    ),
    Command(
        "rm-eval",
        "pairwise accuracy, margin and calibration (ECE) of a reward model; JSON to stdout",
        "alignkit.eval.commands:RmEvalOptions",
        "alignkit.eval.commands:rm_eval",
        quiet=True,
    ),
    Command(
        "score",
        "reward-model scores of prompt/response rows, or of one --prompt/--response",
        "alignkit.eval.commands:ScoreOptions",
        "alignkit.eval.commands:score",
        quiet=True,
    ),
    Command(
        "compare",
        "answers of several models side by side, scored by a reward model; report.html",
        "alignkit.eval.commands:CompareOptions",
        "alignkit.eval.commands:compare",
        quiet=True,
    ),
    Command(
        "rag index",
        "index .md/.txt/.html documents (new and changed files only)",
        "alignkit.rag.commands:IndexOptions",
        "alignkit.rag.commands:rag_index",
        quiet=True,
    ),
    Command(
        "rag ask",
        "answer a question from an index, citing numbered sources",
        "alignkit.rag.commands:AskOptions",
        "alignkit.rag.commands:rag_ask",
        quiet=True,
    ),
    Command(
        "cache",
        "semantic cache tools: stats (JSON) or clear",
        "alignkit.rag.cache_commands:CacheOptions",
        "alignkit.rag.cache_commands:cache",
    ),
    Command(
        "serve",
        "serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions)",
        "alignkit.serve.commands:ServeOptions",
        "alignkit.serve.commands:serve",
        quiet=True,
        show_defaults=False,  # serve's helps say their defaults in their own words
    ),
    Command(
        "tokenizer report",
        "fertility (tokens per word) and coverage of each tokenizer on each text",
        "alignkit.vocab.commands:ReportOptions",
        "alignkit.vocab.commands:report",
        description="For every tokenizer x text: words, tokens, fertility (tokens per word), characters and bytes per "
        "token, the share of words split into >= 4 tokens, unknown-token and byte-fallback rates, vocabulary used and "
        "the share of characters the tokenizer does not give back. Each non-empty line is encoded on its own without "
        "special tokens; words are whitespace-separated.",
    ),
    Command(
        "tokenizer extend",
        "add N tokens learned on a language's text (byte-level BPE); with --model, resize and init embeddings",
        "alignkit.vocab.commands:ExtendOptions",
        "alignkit.vocab.commands:extend",
        quiet=True,
        description="Train N new BPE merges on the text and append them with the lowest priority, so ASCII text "
        "(English, code) tokenizes exactly as before (checked, and on every --keep-text). With --model, the model's "
        "embeddings (and untied LM head) grow and each new row is the mean of the rows of the pieces the old "
        "tokenizer split the token into.",
    ),
)


class DefaultsHelp(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help that does not mention its default (a default of None or False
    means "not given" and is left out)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)  # 0 is shown
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


# --- schema -> argparse options ---------------------------------------------------------------------------------
def _opt(field) -> Opt:
    return next((m for m in field.metadata if isinstance(m, Opt)), Opt())


def _strip_none(annotation: Any) -> Any:
    """``X | None`` / ``Optional[X]`` -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def flag(schema, name: str) -> str:
    """How field ``name`` of ``schema`` is written on the command line: ``--max-new-tokens``, or a positional's name."""
    opt = _opt(schema.model_fields[name])
    return name if opt.positional else opt.flag or "--" + name.replace("_", "-")


def option_kwargs(field) -> dict[str, Any]:
    """The ``add_argument`` keywords (but the name) of a schema field. Values stay strings: the schema validates
    them (except an :class:`Opt` ``type``'s, which argparse converts)."""
    opt = _opt(field)
    annotation = _strip_none(field.annotation)
    required = field.is_required()
    kw: dict[str, Any] = {"help": field.description}
    if annotation is bool:
        if required or field.default is not False:
            raise TypeError(f"a bool option is a flag: it defaults to False, not {field.default!r}")
        return {**kw, "action": "store_true", "default": False}
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
        if opt.nargs:
            kw["nargs"] = opt.nargs
        else:
            kw["action"] = "append"
    elif opt.nargs:
        raise TypeError(f"nargs {opt.nargs!r} on a field that is not a list ({field.annotation})")
    if typing.get_origin(annotation) is typing.Literal:
        kw["choices"] = list(typing.get_args(annotation))
    if opt.type is not None:
        kw["type"] = opt.type
    if opt.metavar:
        kw["metavar"] = opt.metavar
    if not required:
        kw["default"] = field.get_default(call_default_factory=True)
    elif not opt.positional:
        kw["required"] = True
    return kw


def add_options(parser: argparse.ArgumentParser, schema) -> None:
    """One argparse option (or positional) per field of ``schema``, in field order; the destination is the field."""
    for name, field in schema.model_fields.items():
        kw = option_kwargs(field)
        if _opt(field).positional:
            parser.add_argument(name, **kw)
        else:
            parser.add_argument(flag(schema, name), dest=name, **kw)


def format_option_error(err, schema, command: str) -> str:
    """A pydantic ``ValidationError`` of ``schema`` as one line naming the options: ``generate --top-p: Input should
    be a valid number (got 'x')``; a validator's own ``UserError`` message is kept as it is
    (:func:`alignkit.config.base.format_errors`)."""
    from alignkit.config.base import format_errors

    def name(loc: tuple) -> str:
        return f"{command} {flag(schema, loc[0])}" if loc and loc[0] in schema.model_fields else command

    return format_errors(err, name=name, sep="; ")


def parse_options(schema, args: argparse.Namespace, command: str):
    """The parsed namespace's values of ``schema``'s fields, validated into a ``schema`` instance; a bad value (or
    a failed cross-field check) is one ``ConfigError`` line."""
    from pydantic import ValidationError

    from alignkit.config.base import ConfigError

    data = {name: getattr(args, name) for name in schema.model_fields if hasattr(args, name)}
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_option_error(err, schema, command)) from None


# --- the parsers ---------------------------------------------------------------------------------------------------
class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose options may be added on first use (``pending``: the schema's ``"module:attr"``),
    so that building the whole ``alignkit`` parser imports no schema."""

    pending: str | None = None

    def __init__(self, *args, formatter_class: type[argparse.HelpFormatter] | None = None, **kwargs):
        super().__init__(*args, formatter_class=formatter_class or DefaultsHelp, **kwargs)  # "(default: X)" unless told

    def materialise(self) -> CommandParser:
        if self.pending is not None:
            ref, self.pending = self.pending, None
            add_options(self, load(ref))
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(CommandParser, self.materialise()).parse_known_args(args, namespace)

    def format_help(self) -> str:
        return super(CommandParser, self.materialise()).format_help()

    def format_usage(self) -> str:
        return super(CommandParser, self.materialise()).format_usage()


@dataclass(frozen=True)
class Run:
    """The ``func`` of a parsed command: validate its options, call its entry point with them."""

    command: Command

    def __call__(self, args: argparse.Namespace) -> int:
        opts = parse_options(load(self.command.options), args, self.command.name)
        if self.command.quiet:
            from alignkit.models.hf_logging import quiet_libraries

            quiet_libraries()
        return load(self.command.entry)(opts)


def register(sub, commands: tuple[Command, ...] = COMMANDS, lazy: bool = False) -> None:
    """Add ``commands`` to the subparsers ``sub`` of a :class:`CommandParser` (groups made on their first action).
    ``lazy``: each command's options are made when it is parsed or its help printed, not now."""
    groups: dict[str, Any] = {}
    for cmd in commands:
        *group, action = cmd.name.split(" ")
        where = sub
        if group:
            (g,) = group
            if g not in groups:
                groups[g] = sub.add_parser(g, help=GROUPS[g]).add_subparsers(dest=f"{g}_cmd", required=True, metavar="ACTION")
            where = groups[g]
        formatter = None if cmd.show_defaults else argparse.HelpFormatter
        p = where.add_parser(action, help=cmd.help, description=cmd.description, formatter_class=formatter)
        p.pending = cmd.options
        p.set_defaults(func=Run(cmd))
        if not lazy:
            p.materialise()
