"""Every setting, with its environment variable, default and parser, in one frozen dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from config.values import (
    PROJECT_ROOT,
    ConfigError,
    boolean,
    bootstrap_servers,
    choice,
    integer,
    model_location,
    named_choice,
    optional_path,
    optional_text,
    password,
    setting,
    shown,
    text,
)

# Every codec Kafka has; aiokafka needs cramjam (pinned in requirements.txt) for the last three.
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
REVOKE_WAIT_MIN_S = 1.0
PROCESSING_GUARANTEES = ("exactly_once", "at_least_once")
COMMIT_INTERVAL_MAX_MS = 60_000
# What aiokafka speaks: the protocol of the broker's listener and, with SASL, how the password is checked.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# As the MySQL client's --ssl-mode: `required` encrypts without checking who answers, verify_ca
# checks the certificate against MYSQL_SSL_CA, verify_identity also its host name.
MYSQL_SSL_MODES = ("disabled", "required", "verify_ca", "verify_identity")


@dataclass(frozen=True, repr=False)
class Settings:
    """Every setting, with its environment variable and default. `.env.example` documents them."""

    # Where each variable's value came from, for `describe_settings`; set by `load_settings`.
    # A ClassVar, so it takes no part in equality and a hand-built Settings has none.
    _sources: ClassVar[Mapping[str, str]] = {}

    kafka_bootstrap_servers: str = setting("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", bootstrap_servers)
    input_topic: str = setting("INPUT_TOPIC", "input_topic", text)
    output_topic: str = setting("OUTPUT_TOPIC", "output_topic", text)
    dlq_topic: str = setting("DLQ_TOPIC", "dead_letter_topic", text)
    kafka_group_id: str = setting("KAFKA_GROUP_ID", "prediction-service", text)
    topic_partitions: int = setting("TOPIC_PARTITIONS", 6, integer(1, 10_000))
    topic_replication_factor: int = setting("TOPIC_REPLICATION_FACTOR", 1, integer(1, 32))
    # The consumer group's timings. A member that sends no heartbeat for the session timeout
    # is evicted; during a rebalance every member must rejoin within the rebalance timeout, so
    # the batch in hand gets what is left of it (see `revoke_wait_s`).
    kafka_session_timeout_ms: int = setting("KAFKA_SESSION_TIMEOUT_MS", 10_000, integer(1_000, 1_800_000))
    kafka_heartbeat_interval_ms: int = setting("KAFKA_HEARTBEAT_INTERVAL_MS", 3_000, integer(100, 600_000))
    kafka_rebalance_timeout_ms: int = setting("KAFKA_REBALANCE_TIMEOUT_MS", 30_000, integer(1_000, 1_800_000))
    kafka_max_poll_interval_ms: int = setting("KAFKA_MAX_POLL_INTERVAL_MS", 300_000, integer(1_000, 3_600_000))
    kafka_fetch_max_wait_ms: int = setting("KAFKA_FETCH_MAX_WAIT_MS", 5, integer(1, 10_000))
    output_compression: str = setting("OUTPUT_COMPRESSION", "zstd", choice(*COMPRESSION_TYPES))
    # How every Kafka client of the project connects (messaging/kafka_security.py builds the options).
    # SASL_* logs in as KAFKA_SASL_USERNAME; SSL and SASL_SSL check the broker's certificate against
    # KAFKA_SSL_CAFILE (the system's CAs when empty) and, with a certificate and key, present them.
    kafka_security_protocol: str = setting("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", named_choice(*SECURITY_PROTOCOLS))
    kafka_sasl_mechanism: str = setting("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", named_choice(*SASL_MECHANISMS))
    kafka_sasl_username: str = setting("KAFKA_SASL_USERNAME", "", optional_text)
    kafka_sasl_password: str = setting("KAFKA_SASL_PASSWORD", "", password, secret=True)
    kafka_ssl_cafile: str = setting("KAFKA_SSL_CAFILE", "", optional_path)
    kafka_ssl_certfile: str = setting("KAFKA_SSL_CERTFILE", "", optional_path)
    kafka_ssl_keyfile: str = setting("KAFKA_SSL_KEYFILE", "", optional_path)
    kafka_ssl_key_password: str = setting("KAFKA_SSL_KEY_PASSWORD", "", password, secret=True)
    kafka_ssl_check_hostname: bool = setting("KAFKA_SSL_CHECK_HOSTNAME", True, boolean)

    mysql_host: str = setting("MYSQL_HOST", "127.0.0.1", text)
    mysql_port: int = setting("MYSQL_PORT", 3306, integer(1, 65_535))
    mysql_user: str = setting("MYSQL_USER", "prediction", text)
    mysql_password: str = setting("MYSQL_PASSWORD", "prediction", password, secret=True)
    mysql_database: str = setting("MYSQL_DATABASE", "purchases", text)
    mysql_pool_max_size: int = setting("MYSQL_POOL_MAX_SIZE", 5, integer(1, 1_000))
    mysql_query_timeout_ms: int = setting("MYSQL_QUERY_TIMEOUT_MS", 5_000, integer(100, 600_000))
    mysql_ssl_mode: str = setting("MYSQL_SSL_MODE", "disabled", choice(*MYSQL_SSL_MODES))
    mysql_ssl_ca: str = setting("MYSQL_SSL_CA", "", optional_path)
    mysql_ssl_cert: str = setting("MYSQL_SSL_CERT", "", optional_path)
    mysql_ssl_key: str = setting("MYSQL_SSL_KEY", "", optional_path)

    # 0 turns the cache off. A cached user costs about 300 bytes.
    feature_cache_max_users: int = setting("FEATURE_CACHE_MAX_USERS", 200_000, integer(0, 100_000_000))
    feature_cache_ttl_s: int = setting("FEATURE_CACHE_TTL_S", 300, integer(1, 86_400))
    feature_cache_version_check_s: int = setting("FEATURE_CACHE_VERSION_CHECK_S", 5, integer(1, 3_600))

    # What to serve: a model file, a local registry directory (python -m model.registry), or
    # models:/NAME@ALIAS in the MLflow registry at MLFLOW_TRACKING_URI. Watched for a new version
    # every MODEL_POLL_S (0: only on SIGHUP), which is loaded, checked and swapped in between batches.
    model_uri: str = setting("MODEL_URI", str(PROJECT_ROOT / "model" / "registry"), model_location)
    model_poll_s: int = setting("MODEL_POLL_S", 10, integer(0, 86_400))
    mlflow_tracking_uri: str = setting("MLFLOW_TRACKING_URI", "", optional_text)
    # A second model scored on the same batches and never published to OUTPUT_TOPIC; its outputs
    # go to SHADOW_OUTPUT_TOPIC when that is set. Empty: no shadow.
    shadow_model_uri: str = setting("SHADOW_MODEL_URI", "", model_location)
    shadow_output_topic: str = setting("SHADOW_OUTPUT_TOPIC", "", optional_text)

    # The closed loop. Purchases, the outcome the model predicts, arrive on PURCHASES_TOPIC. A
    # prediction is labelled positive when its user has a purchase in (event time, event time +
    # LABEL_WINDOW_S]; the quality monitor labels it once its window has closed by event time (the
    # watermark) and a further LABEL_LATE_ALLOWANCE_S has passed for late records.
    purchases_topic: str = setting("PURCHASES_TOPIC", "purchases", text)
    label_window_s: int = setting("LABEL_WINDOW_S", 1_800, integer(1, 30 * 86_400))
    label_late_allowance_s: int = setting("LABEL_LATE_ALLOWANCE_S", 60, integer(0, 86_400))
    # Quality is computed per model version over the last QUALITY_WINDOW labelled predictions. At
    # most QUALITY_MAX_PENDING predictions wait for their label; past it, new ones are sampled.
    quality_window: int = setting("QUALITY_WINDOW", 5_000, integer(10, 10_000_000))
    quality_max_pending: int = setting("QUALITY_MAX_PENDING", 200_000, integer(100, 100_000_000))
    # The monitor's snapshots of its figures, read by `consumer.py --live`.
    quality_topic: str = setting("QUALITY_TOPIC", "prediction_quality", text)
    quality_metrics_port: int = setting("QUALITY_METRICS_PORT", 9401, integer(0, 65_535))
    # The purchase sink's consumer group: it writes purchases into the offline store.
    purchases_group_id: str = setting("PURCHASES_GROUP_ID", "purchase-sink", text)
    # How often the service asks the store for feature rows changed since its last look.
    feature_changes_poll_ms: int = setting("FEATURE_CHANGES_POLL_MS", 1_000, integer(50, 600_000))

    # exactly_once: outputs and input offsets commit in one Kafka transaction per input
    # partition, so each event has exactly one prediction or dead letter for read_committed
    # readers. at_least_once: cheaper, but a crash or rebalance can publish an event twice.
    processing_guarantee: str = setting("PROCESSING_GUARANTEE", "exactly_once", choice(*PROCESSING_GUARANTEES))

    batch_max_records: int = setting("BATCH_MAX_RECORDS", 2_000, integer(1, 100_000))
    poll_timeout_ms: int = setting("POLL_TIMEOUT_MS", 200, integer(1, 60_000))
    # at_least_once: acknowledged offsets are committed at most this often (and whenever the
    # loop is idle); a crash replays at most this much work. exactly_once: a transaction
    # commits this long after it opened, so read_committed readers see outputs that much later.
    commit_interval_ms: int = setting("COMMIT_INTERVAL_MS", 100, integer(0, COMMIT_INTERVAL_MAX_MS))
    retry_backoff_initial_ms: int = setting("RETRY_BACKOFF_INITIAL_MS", 200, integer(1, 60_000))
    retry_backoff_max_ms: int = setting("RETRY_BACKOFF_MAX_MS", 10_000, integer(1, 600_000))
    stats_interval_s: int = setting("STATS_INTERVAL_S", 10, integer(1, 3_600))
    # The service's /metrics, /healthz and /readyz; 0 turns them off. Loopback by default, so
    # nothing is exposed beyond the machine unless asked (compose sets 0.0.0.0).
    metrics_port: int = setting("METRICS_PORT", 9400, integer(0, 65_535))
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1", text)
    shutdown_timeout_s: int = setting("SHUTDOWN_TIMEOUT_S", 20, integer(2, 3_600))

    log_level: str = setting("LOG_LEVEL", "info", choice("debug", "info", "warning", "error"))
    log_format: str = setting("LOG_FORMAT", "auto", choice("auto", "json", "console"))

    def __post_init__(self) -> None:
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms:
            raise ConfigError("RETRY_BACKOFF_MAX_MS", "must be at least RETRY_BACKOFF_INITIAL_MS")
        if len({self.input_topic, self.output_topic, self.dlq_topic}) < 3:
            raise ConfigError("DLQ_TOPIC", "INPUT_TOPIC, OUTPUT_TOPIC and DLQ_TOPIC must all differ")
        if not self.model_uri:
            raise ConfigError("MODEL_URI", "must not be empty")
        if self.shadow_output_topic and not self.shadow_model_uri:
            raise ConfigError("SHADOW_OUTPUT_TOPIC", "needs SHADOW_MODEL_URI: there is no shadow model to publish")
        if self.shadow_output_topic in {self.input_topic, self.output_topic, self.dlq_topic}:
            raise ConfigError("SHADOW_OUTPUT_TOPIC", "must differ from INPUT_TOPIC, OUTPUT_TOPIC and DLQ_TOPIC")
        uses_mlflow = self.model_uri.startswith("models:/") or self.shadow_model_uri.startswith("models:/")
        if uses_mlflow and not self.mlflow_tracking_uri:
            raise ConfigError("MLFLOW_TRACKING_URI", "must be set to use a models:/NAME@ALIAS model")
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
        self._check_kafka_security()
        self._check_mysql_tls()

    def _check_kafka_security(self) -> None:
        if self.kafka_security_protocol in SASL_PROTOCOLS:
            needs = f"must be set when KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}"
            if not self.kafka_sasl_username:
                raise ConfigError("KAFKA_SASL_USERNAME", needs)
            if not self.kafka_sasl_password:
                raise ConfigError("KAFKA_SASL_PASSWORD", f"{needs} (or KAFKA_SASL_PASSWORD_FILE)")
        if self.kafka_ssl_certfile and not self.kafka_ssl_keyfile:
            raise ConfigError("KAFKA_SSL_CERTFILE", "needs KAFKA_SSL_KEYFILE: a client certificate is presented with its key")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ConfigError("KAFKA_SSL_KEYFILE", "needs KAFKA_SSL_CERTFILE: the key is presented with its certificate")
        if self.kafka_ssl_key_password and not self.kafka_ssl_keyfile:
            raise ConfigError("KAFKA_SSL_KEY_PASSWORD", "is set but KAFKA_SSL_KEYFILE is not: there is no key to unlock")

    def _check_mysql_tls(self) -> None:
        if self.mysql_ssl_mode.startswith("verify_") and not self.mysql_ssl_ca:
            raise ConfigError("MYSQL_SSL_CA", f"must name the CA certificate when MYSQL_SSL_MODE is {self.mysql_ssl_mode}")
        if bool(self.mysql_ssl_cert) != bool(self.mysql_ssl_key):
            raise ConfigError("MYSQL_SSL_CERT", "and MYSQL_SSL_KEY go together: a client certificate is presented with its key")

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks, so secrets are masked here, not at each caller.
        fields = (f"{f.name}={shown(f, getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({', '.join(fields)})"

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
# its ports, heap, JVM options and start-up patience) and the last two (whether it also runs the
# secured listener, and its port), and docker compose interpolates MYSQL_ROOT_PASSWORD,
# MYSQL_LOADER_PASSWORD and GRAFANA_ADMIN_PASSWORD into docker-compose.yml. Any other `.env` key
# is a typo that would otherwise be ignored.
OTHER_VARIABLES: frozenset[str] = frozenset({
    "STACK_DIR", "KAFKA_HOME", "KAFKA_VERSION", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT",
    "KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_START_TIMEOUT", "MYSQL_START_TIMEOUT",
    "MYSQL_ROOT_PASSWORD", "MYSQL_LOADER_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "STACK_SECURITY", "KAFKA_SASL_SSL_PORT",
})
# docker compose also takes its own options (COMPOSE_PROJECT_NAME, COMPOSE_PROFILES, …) from `.env`.
COMPOSE_OPTION_PREFIX = "COMPOSE_"
