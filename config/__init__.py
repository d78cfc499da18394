"""Settings for every program in the project, read once from the environment and `.env`.

`config.loading` is the only module that reads the process environment. Everything below it receives a
frozen `Settings` (config.settings). A bad value raises `ConfigError` (config.values) naming the
variable, so start-up fails with a message a person can act on.
"""

from config.loading import KNOWN_VARIABLES, describe_settings, load_settings, misspelt_variables, values_from_env_file
from config.secrets import SECRET_FILE_VARIABLES
from config.settings import (
    COMMIT_INTERVAL_MAX_MS,
    COMPRESSION_TYPES,
    MYSQL_SSL_MODES,
    OTHER_VARIABLES,
    PROCESSING_GUARANTEES,
    SASL_MECHANISMS,
    SASL_PROTOCOLS,
    SECURITY_PROTOCOLS,
    SETTING_NAMES,
    TLS_PROTOCOLS,
    Settings,
)
from config.values import MASK, PROJECT_ROOT, ConfigError

__all__ = [
    "COMMIT_INTERVAL_MAX_MS", "COMPRESSION_TYPES", "KNOWN_VARIABLES", "MASK", "MYSQL_SSL_MODES", "OTHER_VARIABLES",
    "PROCESSING_GUARANTEES", "PROJECT_ROOT", "SASL_MECHANISMS", "SASL_PROTOCOLS", "SECRET_FILE_VARIABLES", "SECURITY_PROTOCOLS",
    "SETTING_NAMES", "TLS_PROTOCOLS", "ConfigError", "Settings", "describe_settings", "load_settings", "misspelt_variables",
    "values_from_env_file",
]
