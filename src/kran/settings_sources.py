"""Where the settings come from: a TOML file, KRAN_* environment variables and flags
over the defaults of settings.py, merged with the source of each value kept (for
`kran config`, and for errors that name the setting and where it was set)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, TomlConfigSettingsSource

from kran.errors import InvalidInput
from kran.settings import SECTIONS, Settings


def env_name(key: str) -> str:
    """`queue.max` -> KRAN_QUEUE_MAX."""
    return "KRAN_" + key.replace(".", "_").upper()


def keys() -> list[str]:
    """Every setting as `section.name`, in the order of the sections."""
    return [f"{section}.{name}" for section, cls in SECTIONS.items() for name in cls.model_fields]


def load_settings(
    config_file: str | None = None, flags: dict[str, Any] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Merge the sources; return the settings and, per `section.name`, where its value
    came from. `flags` are keyed `section.name`; None means not given."""
    config_file = config_file or os.environ.get("KRAN_CONFIG")
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = []  # lowest precedence first
    if config_file:
        path = Path(config_file).expanduser()
        layers.append((f"file {path}", _read_toml(path)))
    layers.append(("env", {s: dict(EnvSettingsSource(cls)()) for s, cls in SECTIONS.items()}))
    flag_values: dict[str, dict[str, Any]] = {}
    for key, value in (flags or {}).items():
        if value is not None:
            section, _, name = key.partition(".")
            flag_values.setdefault(section, {})[name] = value
    layers.append(("flag", flag_values))
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origin = {key: "default" for key in keys()}
    for source, tables in layers:
        for section, table in tables.items():
            values.setdefault(section, {}).update(table)
            for name in table:
                key = f"{section}.{name}"
                origin[key] = f"env {env_name(key)}" if source == "env" else source
    try:
        settings = Settings.model_validate(values)
    except ValidationError as e:
        raise _invalid(e, origin) from None
    return settings, origin


def _read_toml(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise InvalidInput(f"config file {path} does not exist", "config")
    try:
        doc = TomlConfigSettingsSource(Settings, toml_file=path).toml_data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"config file {path} is not valid TOML: {e}", "config") from None
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise InvalidInput(f"config file {path}: [{section}] must be a table", section)
        if section not in SECTIONS:
            name = next(iter(table), "")
            raise InvalidInput(f"config file {path}: unknown setting {section}.{name}".rstrip("."), section)
    return doc


def _invalid(e: ValidationError, origin: dict[str, str]) -> InvalidInput:
    """The first error, said as a setting: its key, where it came from and why."""
    err = e.errors(include_url=False)[0]
    key = ".".join(str(part) for part in err["loc"])
    source = origin.get(key, "")
    if err["type"] == "extra_forbidden":
        return InvalidInput(f"config {source}: unknown setting {key}", key)  # only a file names unknown ones
    if err["type"] == "value_error" and "." not in key:  # a section's own rule: its message names the keys
        return InvalidInput(str(err["ctx"]["error"]), key)
    return InvalidInput(f"setting {key} ({source}): {err['msg'].removeprefix('Value error, ')}", key)


def describe(settings: Settings, origin: dict[str, str]) -> list[dict[str, Any]]:
    """Rows for `kran config`: key, value (secrets redacted), source, help."""
    rows = []
    for section, cls in SECTIONS.items():
        for name, f in cls.model_fields.items():
            key = f"{section}.{name}"
            value = getattr(getattr(settings, section), name)
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("secret") and value:
                value = "***"
            rows.append(
                {"key": key, "value": value, "source": origin[key], "env": env_name(key), "help": f.description}
            )
    return rows
