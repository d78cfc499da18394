"""Parsing one setting's value: each parser names the variable in the error it raises."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from errors import SetupError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(SetupError, ValueError):
    """A setting is missing or malformed. The message names the variable."""

    def __init__(self, variable: str, problem: str, value: str | None = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{variable}: {problem}{shown}")
        self.variable = variable


def text(variable: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(variable, "must not be empty")
    return value


def password(variable: str, raw: str) -> str:
    # An empty password is legitimate (a local server with no password), and spaces are data.
    return raw


def integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(variable: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(variable, "must be a whole number", raw) from None
        if not low <= value <= high:
            raise ConfigError(variable, f"must be between {low} and {high}", raw)
        return value

    return parse


def choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(variable: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ConfigError(variable, f"must be one of {', '.join(allowed)}", raw)
        return value

    return parse


def named_choice(*allowed: str) -> Callable[[str, str], str]:
    """One of `allowed`, in any case, given back as spelt there (`sasl_ssl` -> `SASL_SSL`)."""
    by_upper = {name.upper(): name for name in allowed}

    def parse(variable: str, raw: str) -> str:
        value = by_upper.get(raw.strip().upper())
        if value is None:
            raise ConfigError(variable, f"must be one of {', '.join(allowed)}", raw)
        return value

    return parse


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def boolean(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(variable, "must be true or false", raw)


def bootstrap_servers(variable: str, raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ConfigError(variable, "must list at least one host:port", raw)
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(variable, f"{server!r} is not host:port", raw)
    return ",".join(servers)


def project_path(variable: str, raw: str) -> Path:
    # Relative to the project, not the working directory, so every program finds the same file.
    return PROJECT_ROOT / Path(text(variable, raw))


def optional_text(variable: str, raw: str) -> str:
    """A value that may be left empty, which turns its feature off."""
    return raw.strip()


def optional_path(variable: str, raw: str) -> str:
    """A file that may be left unnamed (empty); a relative one is taken from the project, as project_path."""
    value = raw.strip()
    if "\n" in value or "\x00" in value:
        raise ConfigError(variable, "must be a path on one line", raw)
    return str(project_path(variable, value)) if value else ""


MLFLOW_MODEL_PREFIX = "models:/"


def model_location(variable: str, raw: str) -> str:
    """`models:/NAME@ALIAS` as given; a path (a model file or a registry directory) made absolute
    against the project, so every program finds the same one."""
    value = raw.strip()
    if not value:
        return value
    if value.startswith(MLFLOW_MODEL_PREFIX):
        name, at, alias = value[len(MLFLOW_MODEL_PREFIX):].partition("@")
        if not (name and at and alias) or "/" in name:
            raise ConfigError(variable, "an MLflow model is named models:/NAME@ALIAS", raw)
        return value
    return str(project_path(variable, value))


def setting(variable: str, default: Any, parse: Callable[[str, str], Any], secret: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"env": variable, "parse": parse, "secret": secret})


MASK = "***"


def shown(field: dataclasses.Field, value: Any) -> Any:
    return MASK if field.metadata["secret"] and value else value
