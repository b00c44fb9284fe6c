"""Typed, closed configs: YAML loading, ``key.sub=value`` overrides, readable errors.

Only pydantic and yaml are imported here (layered imports: configs never pull in transformers).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from alignkit.errors import UserError
from alignkit.io_atomic import write_text


class ConfigError(UserError, ValueError):
    """A config problem, worded for the user: one line naming the file and the key."""


class Closed(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


C = TypeVar("C", bound=Closed)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.max_steps=5"`` -> ``(["train", "max_steps"], 5)``; the value is parsed as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-4" as a string; users mean a number
            value = float(value) if any(c in value for c in ".eE") and value.strip().lower() not in {"inf", "nan"} else value
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.sub=value`` in a nested dict (a copy is returned)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _union_member(annotation: Any, tag: Any) -> Any:
    """The member of a tagged union of models (``Annotated[A | B, Field(discriminator="type")]``) whose
    ``type`` literal is ``tag``, else None."""
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _union_member(arg, tag) if getattr(arg, "__args__", None) else None
        if inner is not None:
            return inner
        if (
            isinstance(arg, type)
            and issubclass(arg, BaseModel)
            and "type" in arg.model_fields
            and tag in (getattr(arg.model_fields["type"].annotation, "__args__", ()) or ())
        ):
            return arg
    return None


def _resolve(schema: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[str]]:
    """``(loc without tagged-union tags, the valid field names of the section it points into)``."""
    model: Any = schema
    shown: list[Any] = []
    parts = list(loc)
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        shown.append(part)
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return tuple(shown) + tuple(parts[i + 1 :]), []
        annotation = model.model_fields[part].annotation
        member = _union_member(annotation, parts[i + 1]) if i + 1 < len(parts) - 1 else None
        if member is not None:  # pydantic puts the tag in the location: skip it
            model, i = member, i + 2
            continue
        model, i = _model_of(annotation), i + 1
    shown.append(parts[-1]) if parts else None
    fields = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    return tuple(shown), fields


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None`` or ``Optional[X]``, else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _union_tags(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The ``type`` values of the tagged union of models at ``loc`` (plain field names), [] if not found."""
    model: Any = schema
    annotation: Any = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = _model_of(annotation)
    tags: list[str] = []

    def walk(a: Any) -> None:
        for arg in getattr(a, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel) and "type" in arg.model_fields:
                tags.extend(str(t) for t in getattr(arg.model_fields["type"].annotation, "__args__", ()) or ())
            elif getattr(arg, "__args__", None):
                walk(arg)

    walk(annotation)
    return tags


def dotted_key(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a dotted key: ``("train", "max_steps")`` -> ``"train.max_steps"``."""
    return ".".join(str(p) for p in loc)


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (``...`` at the cut)."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def format_errors(
    err: ValidationError,
    source: str | None = None,
    *,
    name: Callable[[tuple[Any, ...]], str] = dotted_key,
    explain: Callable[[dict[str, Any]], str | None] | None = None,
    sep: str = "\n",
    one_line: bool = False,
) -> str:
    """The errors of ``err``, each as ``source: <name(loc)>: <pydantic's message> (got <input>)``.

    ``name`` words an error's location (``loc``, a tuple of keys and indices; the dotted key by default); an
    empty name, or no ``source``, leaves that part out. The input is shown (cut to 80 characters) unless it is
    a mapping (a section, or the whole data of a model-level check). An error raised by a validator as a
    :class:`UserError` is its own message, as it is (already worded for the user). ``explain(error)``, if given,
    may word an error itself (the text after ``source: ``; None for the form above). The lines are joined by
    ``sep``; ``one_line``: only the first, followed by `` (and N more)`` when there are others.
    """

    def line(e: dict[str, Any]) -> str:
        raised = e.get("ctx", {}).get("error")
        if isinstance(raised, UserError):
            return str(raised)
        text = explain(e) if explain is not None else None
        if text is None:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {_shown(got)})"
            text = ": ".join(p for p in (name(tuple(e["loc"])), f"{e['msg']}{got_s}") if p)
        return f"{source}: {text}" if source else text

    errors = err.errors()
    if one_line:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return line(errors[0]) + more
    return sep.join(line(e) for e in errors)


def format_validation_error(err: ValidationError, schema: type[BaseModel], source: str) -> str:
    """One line per problem: ``source: unknown key 'train.max_stpes' (did you mean 'max_steps'?)``,
    ``source: key 'train.lr': Input should be ... (got 'x')``; a validator's own UserError message as it is."""

    def key(loc: tuple[Any, ...]) -> str:
        return dotted_key(_resolve(schema, loc)[0]) or "<root>"

    def explain(e: dict[str, Any]) -> str | None:
        loc, valid = _resolve(schema, tuple(e["loc"]))
        k = dotted_key(loc) or "<root>"
        if e["type"] == "extra_forbidden":
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid keys: {', '.join(valid)})"
            return f"unknown key {k!r}{hint}"
        if e["type"] == "missing":
            return f"missing required key {k!r}"
        if e["type"] in ("union_tag_not_found", "union_tag_invalid"):  # a tagged union (loss: {type: ...})
            disc = str(e.get("ctx", {}).get("discriminator", "type")).strip("'")
            tags = ", ".join(_union_tags(schema, tuple(e["loc"]))) or e.get("ctx", {}).get("expected_tags", "")
            given = e.get("input")
            if not isinstance(given, dict):
                return f"key {k!r} must be a section with a {disc!r} key (one of: {tags}), got {given!r}"
            if disc not in given:
                return f"missing required key '{k}.{disc}' (one of: {tags}) to say which {loc[-1]} this is"
            return f"key '{k}.{disc}': unknown value {given[disc]!r} (one of: {tags})"
        return None

    return format_errors(err, source, name=lambda loc: f"key {key(loc)!r}" if loc else "", explain=explain)


def validate(schema: type[C], data: dict[str, Any], source: str = "config") -> C:
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, schema, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(schema: type[C], path: str | Path | None, overrides: list[str] | None = None) -> C:
    """Read YAML (or start empty), apply overrides, validate against ``schema``."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    source = str(path) if path is not None else "config"
    if overrides:
        source += " (with overrides)"
    return validate(schema, data, source)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, in field order."""
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)


def write_config(cfg: BaseModel, path: str | Path) -> None:
    """``cfg`` as YAML (:func:`dump_config`) in ``path``, written atomically (its parent created)."""
    write_text(path, dump_config(cfg))
