"""Typed config schemas and YAML loading (imports pydantic and yaml only)."""

from alignkit.config.base import (
    Closed,
    ConfigError,
    apply_overrides,
    dump_config,
    load_config,
    parse_override,
    write_config,
)

__all__ = [
    "Closed",
    "ConfigError",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_override",
    "write_config",
]
