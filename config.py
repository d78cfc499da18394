"""Settings for every program in the project, read once from the environment and `.env`.

This is the only module that reads `os.environ`. Everything below it receives a frozen
`Settings` object. A bad value raises `ConfigError` naming the variable, so start-up fails
with a message a person can act on.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent

# Every codec Kafka has; aiokafka needs cramjam (pinned in requirements.txt) for the last three.
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
REVOKE_WAIT_MIN_S = 1.0
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")
COMMIT_INTERVAL_MAX_MS = 60_000


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the variable."""

    def __init__(self, variable: str, problem: str, value: str | None = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"{variable}: {problem}{shown}")
        self.variable = variable


def _text(variable: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(variable, "must not be empty")
    return value


def _password(variable: str, raw: str) -> str:
    # An empty password is legitimate (a local server with no password), and spaces are data.
    return raw


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(variable: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(variable, "must be a whole number", raw) from None
        if not low <= value <= high:
            raise ConfigError(variable, f"must be between {low} and {high}", raw)
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(variable: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ConfigError(variable, f"must be one of {', '.join(allowed)}", raw)
        return value

    return parse


def _bootstrap_servers(variable: str, raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ConfigError(variable, "must list at least one host:port", raw)
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(variable, f"{server!r} is not host:port", raw)
    return ",".join(servers)


def _project_path(variable: str, raw: str) -> Path:
    # Relative to the project, not the working directory, so every program finds the same file.
    return PROJECT_ROOT / Path(_text(variable, raw))


def _setting(variable: str, default: Any, parse: Callable[[str, str], Any], secret: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"env": variable, "parse": parse, "secret": secret})


MASK = "***"


def _shown(field: dataclasses.Field, value: Any) -> Any:
    return MASK if field.metadata["secret"] and value else value


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting, with its environment variable and default. `.env.example` documents them."""

    # Where each variable's value came from, for `describe_settings`; set by `load_settings`.
    # A ClassVar, so it takes no part in equality and a hand-built Settings has none.
    _sources: ClassVar[Mapping[str, str]] = {}

    kafka_bootstrap_servers: str = _setting("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", _bootstrap_servers)
    input_topic: str = _setting("INPUT_TOPIC", "input_topic", _text)
    output_topic: str = _setting("OUTPUT_TOPIC", "output_topic", _text)
    dlq_topic: str = _setting("DLQ_TOPIC", "dead_letter_topic", _text)
    kafka_group_id: str = _setting("KAFKA_GROUP_ID", "prediction-service", _text)
    topic_partitions: int = _setting("TOPIC_PARTITIONS", 6, _integer(1, 10_000))
    topic_replication_factor: int = _setting("TOPIC_REPLICATION_FACTOR", 1, _integer(1, 32))
    # The consumer group's timings. A member that sends no heartbeat for the session timeout
    # is evicted; during a rebalance every member must rejoin within the rebalance timeout, so
    # the batch in hand gets what is left of it (see `revoke_wait_s`).
    kafka_session_timeout_ms: int = _setting("KAFKA_SESSION_TIMEOUT_MS", 10_000, _integer(1_000, 1_800_000))
    kafka_heartbeat_interval_ms: int = _setting("KAFKA_HEARTBEAT_INTERVAL_MS", 3_000, _integer(100, 600_000))
    kafka_rebalance_timeout_ms: int = _setting("KAFKA_REBALANCE_TIMEOUT_MS", 30_000, _integer(1_000, 1_800_000))
    kafka_max_poll_interval_ms: int = _setting("KAFKA_MAX_POLL_INTERVAL_MS", 300_000, _integer(1_000, 3_600_000))
    kafka_fetch_max_wait_ms: int = _setting("KAFKA_FETCH_MAX_WAIT_MS", 5, _integer(1, 10_000))
    output_compression: str = _setting("OUTPUT_COMPRESSION", "zstd", _choice(*COMPRESSION_TYPES))

    mysql_host: str = _setting("MYSQL_HOST", "127.0.0.1", _text)
    mysql_port: int = _setting("MYSQL_PORT", 3306, _integer(1, 65_535))
    mysql_user: str = _setting("MYSQL_USER", "prediction", _text)
    mysql_password: str = _setting("MYSQL_PASSWORD", "prediction", _password, secret=True)
    mysql_database: str = _setting("MYSQL_DATABASE", "purchases", _text)
    mysql_pool_max_size: int = _setting("MYSQL_POOL_MAX_SIZE", 5, _integer(1, 1_000))
    mysql_query_timeout_ms: int = _setting("MYSQL_QUERY_TIMEOUT_MS", 5_000, _integer(100, 600_000))

    # 0 turns the cache off. A cached user costs about 300 bytes.
    feature_cache_max_users: int = _setting("FEATURE_CACHE_MAX_USERS", 200_000, _integer(0, 100_000_000))
    feature_cache_ttl_s: int = _setting("FEATURE_CACHE_TTL_S", 300, _integer(1, 86_400))
    feature_cache_version_check_s: int = _setting("FEATURE_CACHE_VERSION_CHECK_S", 5, _integer(1, 3_600))

    model_path: Path = _setting("MODEL_PATH", PROJECT_ROOT / "model" / "artifacts" / "model.joblib", _project_path)

    # exactly_once: outputs and input offsets commit in one Kafka transaction per input
    # partition, so each event has exactly one prediction or dead letter for read_committed
    # readers. at_least_once: cheaper, but a crash or rebalance can publish an event twice.
    processing_guarantee: str = _setting("PROCESSING_GUARANTEE", "exactly_once", _choice(*PROCESSING_GUARANTEES))

    batch_max_records: int = _setting("BATCH_MAX_RECORDS", 2_000, _integer(1, 100_000))
    poll_timeout_ms: int = _setting("POLL_TIMEOUT_MS", 200, _integer(1, 60_000))
    # at_least_once: acknowledged offsets are committed at most this often (and whenever the
    # loop is idle); a crash replays at most this much work. exactly_once: a transaction
    # commits this long after it opened, so read_committed readers see outputs that much later.
    commit_interval_ms: int = _setting("COMMIT_INTERVAL_MS", 100, _integer(0, COMMIT_INTERVAL_MAX_MS))
    retry_backoff_initial_ms: int = _setting("RETRY_BACKOFF_INITIAL_MS", 200, _integer(1, 60_000))
    retry_backoff_max_ms: int = _setting("RETRY_BACKOFF_MAX_MS", 10_000, _integer(1, 600_000))
    stats_interval_s: int = _setting("STATS_INTERVAL_S", 10, _integer(1, 3_600))
    # The service's /metrics, /healthz and /readyz; 0 turns them off. Loopback by default, so
    # nothing is exposed beyond the machine unless asked (compose sets 0.0.0.0).
    metrics_port: int = _setting("METRICS_PORT", 9400, _integer(0, 65_535))
    metrics_host: str = _setting("METRICS_HOST", "127.0.0.1", _text)
    shutdown_timeout_s: int = _setting("SHUTDOWN_TIMEOUT_S", 20, _integer(2, 3_600))

    log_level: str = _setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"))
    log_format: str = _setting("LOG_FORMAT", "auto", _choice("auto", "json", "console"))

    def __post_init__(self) -> None:
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms:
            raise ConfigError("RETRY_BACKOFF_MAX_MS", "must be at least RETRY_BACKOFF_INITIAL_MS")
        if len({self.input_topic, self.output_topic, self.dlq_topic}) < 3:
            raise ConfigError("DLQ_TOPIC", "INPUT_TOPIC, OUTPUT_TOPIC and DLQ_TOPIC must all differ")
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ConfigError(
                "KAFKA_HEARTBEAT_INTERVAL_MS",
                "must be at most a third of KAFKA_SESSION_TIMEOUT_MS, so a member survives a lost heartbeat or two",
            )
        if self.revoke_wait_s < REVOKE_WAIT_MIN_S:
            raise ConfigError(
                "KAFKA_REBALANCE_TIMEOUT_MS",
                f"must exceed KAFKA_HEARTBEAT_INTERVAL_MS by enough to leave the batch in hand at least {REVOKE_WAIT_MIN_S:g} s",
            )
        if self.kafka_max_poll_interval_ms < self.kafka_rebalance_timeout_ms:
            raise ConfigError("KAFKA_MAX_POLL_INTERVAL_MS", "must be at least KAFKA_REBALANCE_TIMEOUT_MS")

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks, so secrets are masked here, not at each caller.
        shown = (f"{f.name}={_shown(f, getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def revoke_wait_s(self) -> float:
        """How long a rebalance waits for the batch in hand before abandoning it uncommitted.

        The member hears of a rebalance with its next heartbeat, and must rejoin before the
        rebalance timeout runs out or it is evicted while still working; a margin covers the
        join request itself.
        """
        rebalance_s = self.kafka_rebalance_timeout_ms / 1000
        heartbeat_s = self.kafka_heartbeat_interval_ms / 1000
        margin_s = max(1.0, rebalance_s / 10)
        return rebalance_s - heartbeat_s - margin_s


SETTING_NAMES: frozenset[str] = frozenset(f.metadata["env"] for f in dataclasses.fields(Settings))

# Variables that are not settings but belong in `.env` all the same; this is the one list of
# them. stack/lib.sh reads the first nine (where the local stack lives, which Kafka it runs,
# its ports, heap, JVM options and start-up patience), and docker compose interpolates MYSQL_ROOT_PASSWORD
# into docker-compose.yml. Any other `.env` key is a typo that would otherwise be ignored.
OTHER_VARIABLES: frozenset[str] = frozenset({
    "STACK_DIR", "KAFKA_HOME", "KAFKA_VERSION", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT",
    "KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_START_TIMEOUT", "MYSQL_START_TIMEOUT",
    "MYSQL_ROOT_PASSWORD",
})
# docker compose also takes its own options (COMPOSE_PROJECT_NAME, COMPOSE_PROFILES, …) from `.env`.
COMPOSE_OPTION_PREFIX = "COMPOSE_"
KNOWN_VARIABLES: tuple[str, ...] = tuple(sorted(SETTING_NAMES | OTHER_VARIABLES))
# Close enough to a known name to be a slip (KAFKA_BOOTSTRAP_SERVER, LOGLEVEL), yet far enough
# that other tools' variables (MYSQL_TCP_PORT, KAFKA_OPTS, JAVA_HOME) pass without a warning.
NEAR_MISS_CUTOFF = 0.85


def _is_known(name: str) -> bool:
    return name in KNOWN_VARIABLES or name.startswith(COMPOSE_OPTION_PREFIX)


def _did_you_mean(name: str, cutoff: float) -> str | None:
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
        port = _integer(1, 65_535)("KAFKA_PORT", merged["KAFKA_PORT"])
        merged["KAFKA_BOOTSTRAP_SERVERS"] = f"localhost:{port}"
        sources["KAFKA_BOOTSTRAP_SERVERS"] = f"KAFKA_PORT in {sources['KAFKA_PORT']}"


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build `Settings` from `environ` (default: the process environment) over `env_file`.

    A variable set in the environment wins over the same one in the file, as with docker
    compose, so a `.env` never silently overrides what the user typed on the command line.
    """
    environ = os.environ if environ is None else environ
    from_file = values_from_env_file(environ, env_file)
    merged = {**from_file, **environ}
    sources = {**{name: ".env" for name in from_file}, **{name: "the environment" for name in environ}}
    _follow_stack_kafka_port(merged, sources)

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

    The source reads `from the environment`, `from .env`, `from KAFKA_PORT in …` or `default`;
    a Settings built by hand rather than by load_settings says `set by the program` instead.
    """
    lines = []
    for field in dataclasses.fields(Settings):
        variable, value = field.metadata["env"], getattr(settings, field.name)
        if variable in settings._sources:
            source = f"from {settings._sources[variable]}"
        else:
            source = "default" if value == field.default else "set by the program"
        lines.append(f"{variable}={_shown(field, value)}  # {source}")
    return "\n".join(lines)
