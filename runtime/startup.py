"""What every program does first: read the settings, or stop with a message naming the bad one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from config import ConfigError, Settings, load_settings, misspelt_variables
from runtime.logs import configure_logging

log = logging.getLogger("config")


def start_program(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Load and validate the settings, then set up logging; exit with code 2 on a bad setting.

    `environ` and `env_file` default to the process environment and the project's `.env`.
    """
    try:
        settings = load_settings(environ, env_file)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    configure_logging(settings)
    # Only now, so the warnings come out in the format and place every other line does.
    for warning in misspelt_variables(environ):
        log.warning("%s", warning)
    return settings
