"""Static checks of docker-compose.yml, the Dockerfile, .dockerignore and the MariaDB accounts script.

No Docker engine is needed: the compose file is validated against the Compose Specification's
JSON Schema and cross-checked against `config`, and compose/mariadb-users.sh runs against stand-ins
of the image's entrypoint functions, so a broken stack fails here rather than on someone's
`docker compose up`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

import config
from config.secrets import SECRET_SETTINGS
from tests.compose_file import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    KRAFT_KEYS,
    REPO_ROOT,
    SCHEMA_FILE,
    InterpolationError,
    depends_on_of,
    environment_of,
    interpolate,
    interpolate_tree,
)

# Where the trainer and the service mount the model registry volume.
MODEL_VOLUME = "model-registry"
MODEL_REGISTRY_MOUNT = "/app/model/registry"
# The passwords compose has no default for: without any one of them it refuses to start.
REQUIRED_PASSWORDS = {
    "MYSQL_ROOT_PASSWORD": "root-secret",
    "MYSQL_PASSWORD": "service-secret",
    "MYSQL_LOADER_PASSWORD": "loader-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
# The settings compose decides for every program rather than forward: how to reach its own Kafka and
# MariaDB, the secrets (each service adds the one it uses), the database account and name the mariadb
# service is initialised with, the registry mount and the scraped ports. Pinning another one would stop
# the shell's and `.env`'s value from reaching the containers, so it takes a deliberate edit here.
DECIDED_BY_COMPOSE = {
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD",
    "MYSQL_HOST", "MYSQL_PORT", "MYSQL_SSL_MODE", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE",
    "MODEL_URI", "METRICS_PORT", "METRICS_HOST", "QUALITY_METRICS_PORT",
}
# Every program compose runs from our image.
APP_PROGRAMS = ("trainer", "prediction-service", "producer", "consumer", "purchase-sink", "quality-monitor")
PROMETHEUS_CONFIG = REPO_ROOT / "monitoring" / "prometheus" / "prometheus.yml"
INIT_SCRIPT = REPO_ROOT / "compose" / "mariadb-users.sh"
INIT_DIRECTORY = "/docker-entrypoint-initdb.d/"
# MariaDB's long-term-support lines still maintained; the one compose runs is the test suite's (README).
MARIADB_LTS = {"10.11", "11.4", "11.8"}


def container_environment(service: dict[str, Any], compose_env: dict[str, str]) -> dict[str, str]:
    """The variables a container of `service` starts with, as compose resolves them: a name given no value is
    passed through from compose's own environment (the shell over `.env`), and left out when that lacks it."""
    given = service.get("environment") or {}
    assert isinstance(given, dict), "the app services' environment is a mapping"
    valued = environment_of({"environment": {name: value for name, value in given.items() if value is not None}})
    passed = {name: compose_env[name] for name, value in given.items() if value is None and name in compose_env}
    return {**valued, **passed}


def passed_through(service: dict[str, Any]) -> set[str]:
    """The names `service` takes from the shell or `.env`, as set there."""
    return {name for name, value in (service.get("environment") or {}).items() if value is None}


def app_settings(service: dict[str, Any], compose_env: dict[str, str], tmp_path: Path) -> config.Settings:
    """What a program in a container of `service` runs with (the image holds no `.env`)."""
    return config.load_settings(environ=container_environment(service, compose_env), env_file=tmp_path / "no-such.env")


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose model as `docker compose up` sees it with only the required passwords set (defaults otherwise)."""
    return interpolate_tree(raw_compose, REQUIRED_PASSWORDS)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def app_services(services: dict[str, Any]) -> dict[str, Any]:
    built = {name: service for name, service in services.items() if "build" in service}
    assert built, "no service is built from our Dockerfile"
    return built


def test_interpolate_handles_the_supported_forms() -> None:
    """Defaults apply when unset (and, with a colon, when empty), set values win, `$$` escapes, and `:?` fails."""
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${UNSET:-d}|${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${SET}|$SET|$$SET", env) == (
        "d|value|d||value|value|$SET"
    )
    with pytest.raises(InterpolationError, match="UNSET: set it"):
        interpolate("${UNSET:?set it}", env)
    with pytest.raises(InterpolationError):
        interpolate("${BROKEN", env)


def test_compose_file_validates_against_the_compose_spec(raw_compose: dict[str, Any], compose: dict[str, Any]) -> None:
    """docker-compose.yml, as written and after interpolation, is valid under the Compose Specification schema."""
    assert SCHEMA_FILE.is_file(), (
        f"Compose Specification schema not found at {SCHEMA_FILE}; "
        "see tests/schemas/README.md for where it comes from"
    )
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The file declares draft-07 under a URL jsonschema does not recognise, so name it explicitly.
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for label, document in (("as written", raw_compose), ("interpolated", compose)):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, f"docker-compose.yml ({label}) is invalid:\n" + "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
        )


def test_compose_file_has_no_obsolete_version_key(raw_compose: dict[str, Any]) -> None:
    """The top-level `version:` key is obsolete and makes compose print a warning, so it is absent."""
    assert "version" not in raw_compose


def test_app_services_only_receive_known_setting_names(app_services: dict[str, Any]) -> None:
    """Every environment variable given to a service built from our Dockerfile is a name config reads."""
    unknown = {
        name: sorted(set(environment_of(service)) - config.SETTING_NAMES)
        for name, service in app_services.items()
        if set(environment_of(service)) - config.SETTING_NAMES
    }
    assert not unknown, f"not in config.SETTING_NAMES (typo, or a setting config lacks): {unknown}"


def test_every_setting_reaches_every_app_service(app_services: dict[str, Any]) -> None:
    """Each app service's environment names every setting of config: one added without compose support fails here."""
    for name, service in app_services.items():
        missing = config.SETTING_NAMES - set(service.get("environment") or {})
        assert not missing, f"{name} lacks {sorted(missing)}: add them to x-app-env in docker-compose.yml"


def test_compose_decides_only_the_settings_it_must(app_services: dict[str, Any]) -> None:
    """Every setting but those compose must decide is passed through from the shell or `.env`, with no default copied."""
    for name, service in app_services.items():
        decided = set(service["environment"]) - passed_through(service)
        assert decided <= DECIDED_BY_COMPOSE, f"{name} pins {sorted(decided - DECIDED_BY_COMPOSE)} instead of passing them through"
        assert passed_through(service) == config.SETTING_NAMES - decided, name


def test_a_setting_from_the_shell_or_env_file_takes_effect(raw_compose: dict[str, Any], tmp_path: Path) -> None:
    """`PROCESSING_GUARANTEE=at_least_once docker compose up` runs every program at_least_once, and every passed-through
    setting reaches the containers as given."""
    compose_env = {**REQUIRED_PASSWORDS, "PROCESSING_GUARANTEE": "at_least_once", "LOG_LEVEL": "debug"}
    services = interpolate_tree(raw_compose, compose_env)["services"]
    for name in APP_PROGRAMS:
        settings = app_settings(services[name], compose_env, tmp_path)
        assert (settings.processing_guarantee, settings.log_level) == ("at_least_once", "debug"), name
        given = {variable: f"value of {variable}" for variable in passed_through(services[name])}
        environ = container_environment(services[name], given)
        assert {variable: environ[variable] for variable in given} == given, name


def test_an_unset_setting_keeps_the_programs_default(compose: dict[str, Any], app_services: dict[str, Any], tmp_path: Path) -> None:
    """Set nowhere, a passed-through setting is absent from the container, so the program's own default applies."""
    for name, service in app_services.items():
        environ = container_environment(service, REQUIRED_PASSWORDS)
        assert not passed_through(service) & set(environ), name
        assert app_settings(service, REQUIRED_PASSWORDS, tmp_path).processing_guarantee == config.Settings().processing_guarantee


def test_app_service_settings_parse(app_services: dict[str, Any], tmp_path: Path) -> None:
    """The environment each app service gets, with compose defaults substituted, is accepted by config.load_settings."""
    for name, service in app_services.items():
        try:
            settings = app_settings(service, REQUIRED_PASSWORDS, tmp_path)
        except config.ConfigError as error:
            pytest.fail(f"{name}: {error}")
        # Inside the compose network the brokers and the database are reached by service name, in plaintext.
        assert settings.kafka_bootstrap_servers == "kafka:9092", name
        assert settings.mysql_host == "mariadb", name
        assert (settings.kafka_security_protocol, settings.mysql_ssl_mode) == ("PLAINTEXT", "disabled"), name


def test_a_host_env_file_for_a_secured_cluster_does_not_leak_into_compose(raw_compose: dict[str, Any], tmp_path: Path) -> None:
    """A `.env` pointing the programs at the secured local stack still runs compose's programs against compose's own
    servers, and its Kafka password reaches no container."""
    secured = {
        **REQUIRED_PASSWORDS, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9094", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "producer", "KAFKA_SASL_PASSWORD": "kafka-secret", "MYSQL_HOST": "127.0.0.1",
        "MYSQL_SSL_MODE": "verify_identity", "MYSQL_SSL_CA": "/somewhere/ca.crt",
    }
    services = interpolate_tree(raw_compose, secured)["services"]
    for name in APP_PROGRAMS:
        settings = app_settings(services[name], secured, tmp_path)
        assert (settings.kafka_bootstrap_servers, settings.kafka_security_protocol) == ("kafka:9092", "PLAINTEXT"), name
        assert (settings.mysql_host, settings.mysql_ssl_mode, settings.kafka_sasl_password) == ("mariadb", "disabled", ""), name


@pytest.mark.parametrize("variable", sorted(REQUIRED_PASSWORDS))
def test_compose_fails_fast_without_each_password(raw_compose: dict[str, Any], variable: str) -> None:
    """Leaving out any of the four passwords stops compose before it starts anything, naming the variable."""
    unset = {name: value for name, value in REQUIRED_PASSWORDS.items() if name != variable}
    with pytest.raises(InterpolationError, match=f"^{variable}: set "):
        interpolate_tree(raw_compose, unset)
    with pytest.raises(InterpolationError, match=f"^{variable}: "):
        interpolate_tree(raw_compose, {**unset, variable: ""})


def test_no_password_has_a_default() -> None:
    """No `${…PASSWORD…:-default}` anywhere: a default password would be a password anyone can read here."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert not re.findall(r"\$\{[A-Z_]*PASSWORD[A-Z_]*:?-", text)
    assert "GF_SECURITY_ADMIN_PASSWORD" in text


def test_each_container_gets_only_the_secrets_it_uses(services: dict[str, Any], app_services: dict[str, Any]) -> None:
    """The service, and the producer reading the users' features for the purchases it simulates, log in with the
    service's read-only database password; the trainer and the purchase sink, which write the store, with the loader's;
    the consumer and the quality monitor get none, and no container gets a Kafka password (compose's broker asks for
    none)."""
    assert set(app_services) == set(APP_PROGRAMS)
    passwords = {name: environment_of({"environment": service["environment"]}) for name, service in app_services.items()}
    for name in ("prediction-service", "producer"):
        assert passwords[name]["MYSQL_PASSWORD"] == REQUIRED_PASSWORDS["MYSQL_PASSWORD"], name
    for name in ("trainer", "purchase-sink"):
        assert passwords[name]["MYSQL_PASSWORD"] == REQUIRED_PASSWORDS["MYSQL_LOADER_PASSWORD"], name
    for name in ("consumer", "quality-monitor"):
        assert passwords[name]["MYSQL_PASSWORD"] == "", name
    for name, environ in passwords.items():
        assert all(environ[secret] == "" for secret in SECRET_SETTINGS if secret != "MYSQL_PASSWORD"), name
        assert not set(environ) & config.SECRET_FILE_VARIABLES, f"{name}: an X_FILE names a file on the host"


def test_the_database_accounts_are_the_ones_the_programs_log_in_with(
    services: dict[str, Any], app_services: dict[str, Any], tmp_path: Path
) -> None:
    """MariaDB is initialised with the database and the two accounts the service and the trainer use, and no
    all-powerful MARIADB_USER."""
    db_env = environment_of(services["mariadb"])
    service = app_settings(app_services["prediction-service"], REQUIRED_PASSWORDS, tmp_path)
    trainer = app_settings(app_services["trainer"], REQUIRED_PASSWORDS, tmp_path)
    assert (service.mysql_user, service.mysql_password) == (db_env["PREDICTION_SERVICE_USER"], db_env["PREDICTION_SERVICE_PASSWORD"])
    assert (trainer.mysql_user, trainer.mysql_password) == (db_env["PREDICTION_LOADER_USER"], db_env["PREDICTION_LOADER_PASSWORD"])
    producer = app_settings(app_services["producer"], REQUIRED_PASSWORDS, tmp_path)
    sink = app_settings(app_services["purchase-sink"], REQUIRED_PASSWORDS, tmp_path)
    assert (producer.mysql_user, producer.mysql_password) == (service.mysql_user, service.mysql_password)
    assert (sink.mysql_user, sink.mysql_password) == (trainer.mysql_user, trainer.mysql_password)
    assert service.mysql_user != trainer.mysql_user
    assert db_env["MARIADB_ROOT_PASSWORD"] == REQUIRED_PASSWORDS["MYSQL_ROOT_PASSWORD"]
    for name in app_services:
        settings = app_settings(app_services[name], REQUIRED_PASSWORDS, tmp_path)
        assert (settings.mysql_database, settings.mysql_port) == (db_env["MARIADB_DATABASE"], 3306), name
    assert not {"MARIADB_USER", "MYSQL_USER", "MARIADB_PASSWORD", "MYSQL_PASSWORD"} & set(db_env)


def test_the_database_is_mariadb_lts(services: dict[str, Any]) -> None:
    """Compose runs MariaDB, the engine the tests run, on a long-term-support line, with its accounts script mounted
    where the image runs it at first start."""
    image, _, tag = services["mariadb"]["image"].partition(":")
    assert image == "mariadb" and tag in MARIADB_LTS, services["mariadb"]["image"]
    mounts = [volume.split(":") for volume in services["mariadb"]["volumes"]]
    [script] = [mount for mount in mounts if mount[1].startswith(INIT_DIRECTORY)]
    assert (REPO_ROOT / script[0]).resolve() == INIT_SCRIPT and script[2:] == ["ro"]
    # The entrypoint runs an executable script in a process of its own, without the functions it uses.
    assert not os.access(INIT_SCRIPT, os.X_OK), f"{INIT_SCRIPT} must not be executable: the entrypoint sources it"


def test_kafka_has_a_complete_single_node_kraft_config(services: dict[str, Any]) -> None:
    """The kafka service sets every KRaft combined-mode key, with replication factors of 1 and consistent listeners."""
    env = environment_of(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    missing = KRAFT_KEYS - set(env)
    assert not missing, f"kafka lacks {sorted(missing)} (the image drops its defaults once any KAFKA_* is set)"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single broker"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"

    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(item.split(":", 1) for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols), "a listener has no security protocol"
    assert set(advertised) <= set(listeners), "an advertised listener is not a listener"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert "kafka:9092" in advertised.values(), "containers bootstrap from kafka:9092, so it must be advertised"


# The functions of the mariadb image's entrypoint that compose/mariadb-users.sh uses, as the image
# defines them (docker_process_sql prints what it would run).
ENTRYPOINT_STUBS = r"""
set -eo pipefail
mysql_note() { :; }
mysql_error() { echo "ERROR $*" >&2; exit 1; }
docker_sql_escape_string_literal() {
    local newline=$'\n'
    local escaped=${1//\\/\\\\}
    escaped="${escaped//$newline/\\n}"
    echo "${escaped//\'/\\\'}"
}
docker_process_sql() { cat; }
. "$1"
"""


def run_init_script(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", ENTRYPOINT_STUBS, "entrypoint", str(INIT_SCRIPT)], env={"PATH": os.environ["PATH"], **environ},
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_the_init_script_creates_two_accounts_with_least_privilege(services: dict[str, Any]) -> None:
    """The service's account may SELECT the two feature tables and nothing else; the loader's may write the store's
    database; nobody gets anything on *.*; quotes in a password stay data."""
    db_env = {**environment_of(services["mariadb"]), "PREDICTION_SERVICE_PASSWORD": "it's\\"}
    done = run_init_script(db_env)
    assert done.returncode == 0, done.stderr
    statements = done.stdout.splitlines()
    service, loader = "'prediction'@'%'", "'prediction_loader'@'%'"
    assert f"CREATE USER {service} IDENTIFIED BY 'it\\'s\\\\';" in statements
    assert f"CREATE USER {loader} IDENTIFIED BY '{db_env['PREDICTION_LOADER_PASSWORD']}';" in statements
    grants = [line for line in statements if line.startswith("GRANT ")]
    assert grants == [
        f"GRANT SELECT, CREATE ON `purchases`.`user_features` TO {service};",
        f"GRANT SELECT, CREATE ON `purchases`.`feature_set` TO {service};",
        f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES ON `purchases`.* TO {loader};",
    ]
    assert [line for line in statements if line.startswith("REVOKE ")] == [
        f"REVOKE CREATE ON `purchases`.`user_features` FROM {service};",
        f"REVOKE CREATE ON `purchases`.`feature_set` FROM {service};",
    ]
    assert "*.*" not in done.stdout


def test_the_init_script_names_its_database_alone_and_refuses_a_shared_account(services: dict[str, Any]) -> None:
    """`_` in the database's name is no wildcard in the loader's grant; MYSQL_USER named as the loader's account is refused."""
    db_env = {**environment_of(services["mariadb"]), "MARIADB_DATABASE": "shop_features"}
    done = run_init_script(db_env)
    assert "ON `shop\\_features`.* TO 'prediction_loader'@'%';" in done.stdout, done.stderr
    shared = run_init_script({**db_env, "PREDICTION_SERVICE_USER": db_env["PREDICTION_LOADER_USER"]})
    assert shared.returncode != 0 and "MYSQL_USER must not be prediction_loader" in shared.stderr
    assert shared.stdout == "", "nothing runs once a value is refused"


@pytest.mark.parametrize("partitions", [None, "12"])
def test_kafka_default_partitions_match_the_service(raw_compose: dict[str, Any], partitions: str | None, tmp_path: Path) -> None:
    """Auto-created topics get as many partitions as the service creates, so a scaled service can share them, whether
    TOPIC_PARTITIONS is left to the default or set."""
    compose_env = REQUIRED_PASSWORDS if partitions is None else {**REQUIRED_PASSWORDS, "TOPIC_PARTITIONS": partitions}
    services = interpolate_tree(raw_compose, compose_env)["services"]
    broker_partitions = environment_of(services["kafka"]).get("KAFKA_NUM_PARTITIONS")
    for name in APP_PROGRAMS:
        assert broker_partitions == str(app_settings(services[name], compose_env, tmp_path).topic_partitions), name


def test_mariadb_healthcheck_connects_over_tcp(services: dict[str, Any]) -> None:
    """MariaDB is healthy once the image's own check connects over TCP, which stays down until initialisation
    (database and accounts) has finished, and InnoDB is ready."""
    test = services["mariadb"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "healthcheck.sh"]
    assert {"--connect", "--innodb_initialized"} <= set(test[2:])


def test_every_awaited_dependency_has_a_healthcheck(services: dict[str, Any]) -> None:
    """Each service waited on as healthy (including kafka and mysql) defines a healthcheck with timings."""
    awaited = {
        target
        for service in services.values()
        for target, condition in depends_on_of(service).items()
        if condition == "service_healthy"
    }
    assert {"kafka", "mariadb"} <= awaited
    for name in awaited:
        healthcheck = services[name].get("healthcheck")
        assert healthcheck and healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"
        for timing in ("interval", "timeout", "retries", "start_period"):
            assert timing in healthcheck, f"{name} healthcheck lacks {timing}"


def test_dependencies_exist(services: dict[str, Any]) -> None:
    """Every depends_on target is a service defined in the file."""
    for name, service in services.items():
        assert set(depends_on_of(service)) <= set(services), f"{name} depends on an undefined service"


def test_prediction_service_waits_for_its_dependencies(services: dict[str, Any]) -> None:
    """The service starts only after kafka and mariadb are healthy and the trainer has exited successfully."""
    assert depends_on_of(services["prediction-service"]) == {
        "kafka": "service_healthy",
        "mariadb": "service_healthy",
        "trainer": "service_completed_successfully",
    }
    assert depends_on_of(services["trainer"]).get("mariadb") == "service_healthy"


def test_the_model_registry_volume_is_shared_from_trainer_to_service(
    compose: dict[str, Any], services: dict[str, Any], tmp_path: Path
) -> None:
    """The trainer registers into, and the service (to serve) and the quality monitor (for each version's training AUC)
    read from, one named volume mounted where MODEL_URI points on each."""
    for name in ("trainer", "prediction-service", "quality-monitor"):
        settings = app_settings(services[name], REQUIRED_PASSWORDS, tmp_path)
        assert settings.model_uri == MODEL_REGISTRY_MOUNT, f"{name}: MODEL_URI is {settings.model_uri}"
    expected = {"trainer": f"{MODEL_VOLUME}:{MODEL_REGISTRY_MOUNT}", "prediction-service": f"{MODEL_VOLUME}:{MODEL_REGISTRY_MOUNT}:ro",
                "quality-monitor": f"{MODEL_VOLUME}:{MODEL_REGISTRY_MOUNT}:ro"}
    for name, mount in expected.items():
        assert mount in services[name].get("volumes", []), f"{name} does not mount {mount}"
    assert MODEL_VOLUME in compose.get("volumes", {})


def test_the_trainer_promotes_and_the_service_polls_so_a_retrain_needs_no_restart(services: dict[str, Any], tmp_path: Path) -> None:
    """`docker compose run --rm trainer` registers and promotes a version; the running service looks for one every MODEL_POLL_S."""
    command = " ".join(services["trainer"]["command"])
    assert "python -m offline_store.loader" in command
    assert re.search(r"python -m model\.train( \S+)* --promote\b", command), command
    settings = app_settings(services["prediction-service"], REQUIRED_PASSWORDS, tmp_path)
    assert settings.model_poll_s > 0, "MODEL_POLL_S=0 would leave a retrained model waiting for a SIGHUP"


def test_the_model_settings_are_forwarded_from_the_host(raw_compose: dict[str, Any], tmp_path: Path) -> None:
    """MODEL_URI, MODEL_POLL_S, MLFLOW_TRACKING_URI and the shadow's two settings set in the shell or `.env` reach the app services."""
    given = {
        "MODEL_URI": "models:/purchase-model@champion",
        "MODEL_POLL_S": "3",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "SHADOW_MODEL_URI": f"{MODEL_REGISTRY_MOUNT}/versions/20261205T101500Z-3f9a1c22be/model.joblib",
        "SHADOW_OUTPUT_TOPIC": "shadow_predictions",
    }
    compose_env = {**REQUIRED_PASSWORDS, **given}
    services = interpolate_tree(raw_compose, compose_env)["services"]
    for name in ("trainer", "prediction-service"):
        environ = container_environment(services[name], compose_env)
        assert {variable: environ.get(variable) for variable in given} == given, name
        settings = config.load_settings(environ=environ, env_file=tmp_path / "no-such.env")
        assert (settings.model_uri, settings.model_poll_s, settings.shadow_output_topic) == (
            "models:/purchase-model@champion", 3, "shadow_predictions"
        ), name


def test_prediction_service_can_be_scaled(services: dict[str, Any]) -> None:
    """The service has no fixed container name or host port, either of which breaks `--scale`."""
    service = services["prediction-service"]
    assert "container_name" not in service
    assert "ports" not in service


def test_our_programs_restart_a_bounded_number_of_times(app_services: dict[str, Any]) -> None:
    """Every long-running service from our Dockerfile restarts `on-failure:N` with a small N, so a configuration error
    (exit 2) is no restart loop."""
    long_running = {name: service for name, service in app_services.items() if name not in {"trainer", "producer"}}
    assert set(long_running) == {"prediction-service", "consumer", "purchase-sink", "quality-monitor"}
    for name, service in long_running.items():
        policy = str(service.get("restart", "no"))
        match = re.fullmatch(r"on-failure:(\d+)", policy)
        assert match and 1 <= int(match[1]) <= 5, f"{name}: restart {policy!r} would restart a bad setting for ever"


def test_the_service_is_healthy_only_when_readyz_says_so_and_the_producer_waits_for_it(services: dict[str, Any]) -> None:
    """The service's healthcheck asks /readyz on its METRICS_PORT, and the producer starts only once it is healthy."""
    service = services["prediction-service"]
    port = environment_of(service)["METRICS_PORT"]
    command = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in command
    assert environment_of(service)["METRICS_HOST"] == "0.0.0.0", "Prometheus scrapes from another container"
    assert depends_on_of(services["producer"]).get("prediction-service") == "service_healthy"


def test_the_producer_sends_the_purchases_that_the_sink_stores_and_the_monitor_labels_with(
    raw_compose: dict[str, Any], tmp_path: Path
) -> None:
    """The producer simulates outcomes; it, the sink and the monitor take the purchases topic and the label window from
    the shell or `.env` alike, so a short window set there reaches all three; the sink and the monitor run their
    programs."""
    compose_env = {**REQUIRED_PASSWORDS, "LABEL_WINDOW_S": "60", "LABEL_LATE_ALLOWANCE_S": "5", "PURCHASES_TOPIC": "shop_purchases"}
    services = interpolate_tree(raw_compose, compose_env)["services"]
    assert "--outcomes" in services["producer"]["command"]
    assert services["purchase-sink"]["command"] == ["python", "-m", "offline_store.purchase_sink"]
    assert services["quality-monitor"]["command"] == ["python", "quality_monitor.py"]
    for name in ("producer", "purchase-sink", "quality-monitor"):
        settings = app_settings(services[name], compose_env, tmp_path)
        assert (settings.purchases_topic, settings.label_window_s, settings.label_late_allowance_s) == ("shop_purchases", 60, 5), name


def test_the_purchase_sink_writes_only_into_a_store_the_trainer_has_loaded(services: dict[str, Any]) -> None:
    """The sink refuses a store never built: it starts once the trainer (whose loader builds it) has succeeded."""
    assert depends_on_of(services["purchase-sink"]) == {
        "kafka": "service_healthy",
        "mariadb": "service_healthy",
        "trainer": "service_completed_successfully",
    }


def test_prometheus_scrapes_the_quality_monitor_where_compose_serves_it_and_its_healthcheck_asks(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """prometheus.yml's quality-monitor job finds the compose service by name on the QUALITY_METRICS_PORT compose gives
    it, served on every address so another container can scrape it; the healthcheck asks /healthz on that port."""
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["scrape_configs"]}
    (discovery,) = jobs["quality-monitor"]["dns_sd_configs"]
    settings = app_settings(services["quality-monitor"], REQUIRED_PASSWORDS, tmp_path)
    assert discovery["names"] == ["quality-monitor"] and discovery["port"] == settings.quality_metrics_port
    assert settings.metrics_host == "0.0.0.0"
    assert settings.quality_metrics_port != settings.metrics_port, "the monitor's port is its own"
    command = " ".join(services["quality-monitor"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.quality_metrics_port}/healthz" in command


def test_images_we_do_not_build_are_pinned_to_a_version(services: dict[str, Any]) -> None:
    """Kafka, MariaDB, Prometheus and Grafana name an exact version tag, never `latest` or none."""
    pulled = {name: service["image"] for name, service in services.items() if "build" not in service}
    assert {"kafka", "mariadb", "prometheus", "grafana"} <= set(pulled)
    for name, image in pulled.items():
        _, _, tag = image.rpartition(":")
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name}: {image} is not pinned to a version"


def test_dockerfile_installs_dependencies_before_copying_source_and_runs_as_non_root() -> None:
    """The Dockerfile caches the pip layer ahead of the source, sets PYTHONUNBUFFERED, and switches to a non-root user."""
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    patterns = {
        "copy_requirements": r"COPY (--\S+ )*requirements\.txt ",
        "pip": r"RUN pip install --no-cache-dir -r requirements\.txt",
        "copy_source": r"COPY (--\S+ )*\. ",
        "user": r"USER ",
    }
    index = {}
    for name, pattern in patterns.items():
        found = [i for i, line in enumerate(instructions) if re.match(pattern, line)]
        assert found, f"Dockerfile has no instruction matching {pattern!r}"
        index[name] = found[0]
    assert index["copy_requirements"] < index["pip"] < index["copy_source"]
    user = instructions[index["user"]].split()[1]
    assert user not in {"root", "0"} and not user.startswith("0:")
    assert "WORKDIR /app" in instructions
    assert any(re.match(r"ENV .*PYTHONUNBUFFERED=1", line) for line in instructions)
    assert instructions[-1] == 'CMD ["python", "prediction_service.py"]'


def test_the_image_lets_the_app_user_write_the_model_registry() -> None:
    """The Dockerfile creates the registry directory and hands it to the app user before switching to it: a new named
    volume takes that directory's owner, so the non-root trainer can register into the volume."""
    instructions = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    relative = PurePosixPath(MODEL_REGISTRY_MOUNT).relative_to("/app").as_posix()
    runs = [i for i, line in enumerate(instructions) if line.startswith("RUN ") and relative in line and "chown app:app" in line]
    user = next(i for i, line in enumerate(instructions) if line.startswith("USER "))
    assert runs and runs[0] < user, f"no RUN creating {relative} and giving it to app before USER"
    assert "WORKDIR /app" in instructions


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    """The build context excludes the host's .env, trained models, virtualenv and git history."""
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "model/artifacts", "model/registry", ".venv", ".git"} <= patterns
