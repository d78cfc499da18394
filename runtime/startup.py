"""What every program does first: read the settings, or stop with a message naming the bad one."""

from __future__ import annotations

import sys

from config import ConfigError, Settings, load_settings
from runtime.logs import configure_logging

CONFIG_ERROR_EXIT_CODE = 2


def start_program() -> Settings:
    """Load and validate the settings, then set up logging; exit with code 2 on a bad setting."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
    configure_logging(settings)
    return settings
