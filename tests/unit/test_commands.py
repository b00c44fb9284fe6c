"""The command registry (issue 21): options made from a schema, validated back into it as one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing
from typing import Annotated, Literal

import pytest
from pydantic import Field, model_validator

from alignkit.cli import build_parser, main
from alignkit.commands import COMMANDS, GROUPS, Opt, add_options, parse_options
from alignkit.config.base import Closed, ConfigError


class Toy(Closed):
    path: Annotated[str, Opt(positional=True)] = Field(description="a file")
    model: str = Field(description="a model")
    steps: int = Field(3, description="how many")
    rate: float | None = Field(None, description="a rate")
    kind: Literal["a", "b"] = Field("a", description="which kind")
    tag: list[str] | None = Field(None, description="a tag (repeat)")
    files: Annotated[list[str], Opt(nargs="+", metavar="FILE")] = Field(description="files")
    fast: bool = Field(False, description="go fast")
    as_json: Annotated[bool, Opt(flag="--json")] = Field(False, description="JSON out")

    @model_validator(mode="after")
    def _rate_needs_b(self) -> Toy:
        if self.rate is not None and self.kind != "b":
            raise ConfigError("toy: --rate goes with --kind b")
        return self


def toy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, Toy)
    return p


def parse(*argv: str) -> Toy:
    return parse_options(Toy, toy_parser().parse_args(list(argv)), "toy")


def test_options_are_made_from_the_fields():
    actions = {a.dest: a for a in toy_parser()._actions}
    assert actions["path"].option_strings == [] and actions["path"].required  # a positional
    assert actions["model"].option_strings == ["--model"] and actions["model"].required
    assert actions["steps"].option_strings == ["--steps"] and actions["steps"].default == 3 and not actions["steps"].required
    assert actions["kind"].choices == ["a", "b"] and actions["kind"].default == "a"
    assert isinstance(actions["tag"], argparse._AppendAction) and actions["tag"].default is None
    assert actions["files"].nargs == "+" and actions["files"].metavar == "FILE" and actions["files"].required
    assert isinstance(actions["fast"], argparse._StoreTrueAction) and actions["fast"].default is False
    assert actions["as_json"].option_strings == ["--json"]
    assert actions["steps"].help == "how many"


def test_parsed_values_are_validated_into_the_schema():
    opts = parse("p.txt", "--model", "m", "--files", "x", "y", "--steps", "7", "--tag", "t1", "--tag", "t2", "--fast")
    assert opts == Toy(path="p.txt", model="m", files=["x", "y"], steps=7, tag=["t1", "t2"], fast=True)
    assert isinstance(opts.steps, int)
    defaults = parse("p.txt", "--model", "m", "--files", "x")
    assert (defaults.steps, defaults.rate, defaults.kind, defaults.tag, defaults.fast, defaults.as_json) == (
        3,
        None,
        "a",
        None,
        False,
        False,
    )
    assert parse("p", "--model", "m", "--files", "x", "--kind", "b", "--rate", "0.5").rate == 0.5


def test_a_bad_value_is_one_line_naming_the_option():
    with pytest.raises(ConfigError) as err:
        parse("p", "--model", "m", "--files", "x", "--steps", "many")
    text = str(err.value)
    assert "\n" not in text and text.startswith("toy --steps: ") and "'many'" in text and "integer" in text


def test_two_bad_values_stay_on_one_line():
    with pytest.raises(ConfigError) as err:
        parse("p", "--model", "m", "--files", "x", "--steps", "many", "--kind", "b", "--rate", "fast")
    text = str(err.value)
    assert "\n" not in text and "toy --steps: " in text and "toy --rate: " in text


def test_a_cross_field_check_keeps_its_own_words():
    with pytest.raises(ConfigError) as err:
        parse("p", "--model", "m", "--files", "x", "--rate", "0.5")
    assert str(err.value) == "toy: --rate goes with --kind b"


def test_choices_and_required_options_are_argparse_errors(capsys):
    with pytest.raises(SystemExit):
        toy_parser().parse_args(["p", "--model", "m", "--files", "x", "--kind", "c"])
    assert "invalid choice: 'c'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        toy_parser().parse_args(["p", "--files", "x"])
    assert "--model" in capsys.readouterr().err


def test_a_bool_option_must_default_to_false():
    class Bad(Closed):
        on: bool = Field(True, description="on")

    with pytest.raises(TypeError, match="flag"):
        add_options(argparse.ArgumentParser(), Bad)


# --- the registry ---------------------------------------------------------------------------------------------
def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_is_registered_with_its_schema(command):
    from alignkit.stages import load

    schema = load(command.options)
    assert issubclass(schema, Closed) and callable(load(command.entry))
    parser = build_parser()
    for word in command.name.split():
        parser = _subparsers(parser)[word]
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == set(schema.model_fields)
    for name, field in schema.model_fields.items():
        assert field.description, f"{command.name} {name}: no description"


def test_groups_are_the_registry_groups():
    groups = {c.name.split()[0] for c in COMMANDS if " " in c.name}
    assert groups == set(GROUPS)


def test_the_stages_and_the_registry_do_not_clash():
    from alignkit.stages import STAGES

    top = {c.name.split()[0] for c in COMMANDS}
    assert not top & set(STAGES) and not top & {"config", "plan"}


def test_serve_backend_choices_are_the_backends():
    from alignkit.models.backends import BACKENDS
    from alignkit.serve.commands import ServeOptions

    assert typing.get_args(ServeOptions.model_fields["backend"].annotation) == BACKENDS


def test_help_imports_no_schema():
    """``alignkit --help`` builds every command's parser lazily: no pydantic, no command module."""
    code = (
        "import sys\nfrom alignkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m == 'pydantic' or m.endswith('.commands') and m != 'alignkit.commands'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_bad_option_value_from_main_is_one_line(capsys):
    assert main(["generate", "--model", "m", "--prompt", "hi", "--max-new-tokens", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alignkit: error: generate --max-new-tokens: ") and "'lots'" in err


def test_score_cross_field_checks_come_before_any_loading(capsys, tmp_path):
    """The model path does not exist: the option checks fail first, with score's own words."""
    missing = str(tmp_path / "none")
    assert main(["score", "--model", missing, "--prompt", "hi"]) == 2
    assert capsys.readouterr().err == "alignkit: error: score: --prompt and --response go together\n"
    assert main(["score", "--model", missing, "--data", "d.jsonl", "--prompt", "hi", "--response", "r"]) == 2
    assert "give either --data FILE or both --prompt and --response" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_a_lazy_parser_prints_the_same_help(command):
    helps = []
    for lazy in (False, True):
        parser = build_parser(lazy=lazy)
        for word in command.name.split():
            parser = _subparsers(parser)[word]
        helps.append(parser.format_help())
    assert helps[0] == helps[1] and "--help" in helps[1]


def test_the_schemas_are_light():
    """Parsing a command imports its schema's module: pydantic, never transformers and the like."""
    modules = sorted({c.options.split(":")[0] for c in COMMANDS})
    code = (
        f"import sys, importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
        "print([m for m in ('transformers', 'peft', 'accelerate', 'datasets', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
