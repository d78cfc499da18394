"""Settings for every program in the project, read once from the environment and `.env`.

`config.loading` is the only module that reads the process environment. Everything below it receives a
frozen `Settings` (config.settings). A bad value raises `ConfigError` (config.values) naming the
variable, so start-up fails with a message a person can act on.
"""

from config.loading import KNOWN_VARIABLES, describe_settings, load_settings, misspelt_variables, values_from_env_file
from config.settings import (
    COMMIT_INTERVAL_MAX_MS,
    COMPRESSION_TYPES,
    OTHER_VARIABLES,
    PROCESSING_GUARANTEES,
    SETTING_NAMES,
    Settings,
)
from config.values import MASK, PROJECT_ROOT, ConfigError

__all__ = [
    "COMMIT_INTERVAL_MAX_MS", "COMPRESSION_TYPES", "KNOWN_VARIABLES", "MASK", "OTHER_VARIABLES", "PROCESSING_GUARANTEES",
    "PROJECT_ROOT", "SETTING_NAMES", "ConfigError", "Settings", "describe_settings", "load_settings", "misspelt_variables",
    "values_from_env_file",
]
