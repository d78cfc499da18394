"""Reading the settings from the environment and `.env`, and showing them.

This is the only module that reads `os.environ`. Everything below it receives a frozen
`Settings` object. A bad value raises `ConfigError` naming the variable, so start-up fails
with a message a person can act on.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from config.secrets import SECRET_FILE_VARIABLES, take_secret_files
from config.settings import COMPOSE_OPTION_PREFIX, OTHER_VARIABLES, SETTING_NAMES, Settings
from config.values import PROJECT_ROOT, ConfigError, integer, shown

KNOWN_VARIABLES: tuple[str, ...] = tuple(sorted(SETTING_NAMES | OTHER_VARIABLES | SECRET_FILE_VARIABLES))
# Close enough to a known name to be a slip (KAFKA_BOOTSTRAP_SERVER, LOGLEVEL), yet far enough
# that other tools' variables (MYSQL_TCP_PORT, KAFKA_OPTS, JAVA_HOME) pass without a warning.
NEAR_MISS_CUTOFF = 0.85


def _is_known(name: str) -> bool:
    return name in KNOWN_VARIABLES or name.startswith(COMPOSE_OPTION_PREFIX)


# Settings that were renamed, so an old .env gets the new name rather than a near miss.
RENAMED = {"MODEL_PATH": "MODEL_URI"}


def _did_you_mean(name: str, cutoff: float) -> str | None:
    if name.upper() in RENAMED:
        return RENAMED[name.upper()]
    matches = difflib.get_close_matches(name.upper(), KNOWN_VARIABLES, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def values_from_env_file(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> dict[str, str]:
    """The variables of `env_file` (default: the project's `.env`) that `environ` does not set.

    python-dotenv reads the file, so quoting, `#` and `$` mean what its documentation says;
    stack/env_file.py hands the same values to the local stack. A key that is neither a
    setting nor in OTHER_VARIABLES raises ConfigError, with the nearest known name.
    """
    environ = os.environ if environ is None else environ
    env_file = PROJECT_ROOT / ".env" if env_file is None else env_file
    if not env_file.is_file():
        return {}
    values = dotenv_values(env_file)
    for name in values:
        if not _is_known(name):
            guess = _did_you_mean(name, cutoff=0.6)
            hint = f"did you mean {guess}?" if guess else "see .env.example for the settings"
            raise ConfigError(name, f"in {env_file} is not a setting of this project; {hint}")
    return {name: value for name, value in values.items() if value is not None and name not in environ}


def misspelt_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each environment variable that looks like a misspelt setting and is ignored."""
    environ = os.environ if environ is None else environ
    warnings = []
    for name in sorted(environ):
        guess = None if _is_known(name) else _did_you_mean(name, cutoff=NEAR_MISS_CUTOFF)
        if guess:
            warnings.append(f"environment variable {name} is not a setting and is ignored; did you mean {guess}?")
    return warnings


def _follow_stack_kafka_port(merged: dict[str, str], sources: dict[str, str]) -> None:
    # Moving the local stack's Kafka with KAFKA_PORT moves the programs too, as MYSQL_PORT
    # does; otherwise they would quietly talk to whatever else owns localhost:9092.
    if "KAFKA_BOOTSTRAP_SERVERS" not in merged and "KAFKA_PORT" in merged:
        port = integer(1, 65_535)("KAFKA_PORT", merged["KAFKA_PORT"])
        merged["KAFKA_BOOTSTRAP_SERVERS"] = f"localhost:{port}"
        sources["KAFKA_BOOTSTRAP_SERVERS"] = f"KAFKA_PORT in {sources['KAFKA_PORT']}"


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build `Settings` from `environ` (default: the process environment) over `env_file`.

    A variable set in the environment wins over the same one in the file, as with docker
    compose, so a `.env` never silently overrides what the user typed on the command line.
    A secret X may instead come from the file X_FILE names (config/secrets.py).
    """
    environ = os.environ if environ is None else environ
    from_file = values_from_env_file(environ, env_file)
    merged = {**from_file, **environ}
    sources = {**{name: ".env" for name in from_file}, **{name: "the environment" for name in environ}}
    _follow_stack_kafka_port(merged, sources)
    take_secret_files(merged, sources, environ)

    values = {}
    for field in dataclasses.fields(Settings):
        variable = field.metadata["env"]
        if variable in merged:
            values[field.name] = field.metadata["parse"](variable, merged[variable])
    settings = Settings(**values)
    # Frozen, so the bookkeeping goes round __setattr__; it is no field, so never compared.
    object.__setattr__(settings, "_sources", {name: sources[name] for name in SETTING_NAMES & sources.keys()})
    return settings


def describe_settings(settings: Settings) -> str:
    """One `NAME=value  # source` line per setting, secrets masked, as `--check-config` prints them.

    The source reads `from the environment`, `from .env`, `from KAFKA_PORT in …`, `from X_FILE in …` or `default`;
    a Settings built by hand rather than by load_settings says `set by the program` instead.
    """
    lines = []
    for field in dataclasses.fields(Settings):
        variable, value = field.metadata["env"], getattr(settings, field.name)
        if variable in settings._sources:
            source = f"from {settings._sources[variable]}"
        else:
            source = "default" if value == field.default else "set by the program"
        # A flag as it would be written in .env, so a line can be copied there as it is.
        text = str(value).lower() if isinstance(value, bool) else shown(field, value)
        lines.append(f"{variable}={text}  # {source}")
    return "\n".join(lines)
