"""Static checks of docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine is needed: the compose file is validated against the Compose Specification's
JSON Schema and cross-checked against `config`, so a broken stack fails here rather than on
someone's `docker compose up`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import yaml

import config
from tests.compose_file import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    KRAFT_KEYS,
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


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    """The compose model as `docker compose up` sees it with no variables set (defaults only)."""
    return interpolate_tree(raw_compose, {})


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


def test_app_service_settings_parse(app_services: dict[str, Any], tmp_path: Path) -> None:
    """The environment each app service gets, with compose defaults substituted, is accepted by config.load_settings."""
    for name, service in app_services.items():
        environ = environment_of(service)
        assert environ, f"{name} gets no environment"
        try:
            settings = config.load_settings(environ=environ, env_file=tmp_path / "no-such.env")
        except config.ConfigError as error:
            pytest.fail(f"{name}: {error}")
        # Inside the compose network the brokers and the database are reached by service name.
        assert settings.kafka_bootstrap_servers == "kafka:9092", name
        assert settings.mysql_host == "mysql", name


def test_mysql_credentials_match_what_the_app_services_receive(
    services: dict[str, Any], app_services: dict[str, Any]
) -> None:
    """The database, user and password MySQL is initialised with are the ones every app service logs in with."""
    mysql_env = environment_of(services["mysql"])
    for name, service in app_services.items():
        app_env = environment_of(service)
        for variable in ("MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"):
            assert app_env.get(variable) == mysql_env.get(variable), f"{name}: {variable} differs from mysql's"
        assert app_env.get("MYSQL_PORT", "3306") == "3306", f"{name}: MYSQL_PORT is not mysql's container port"
    assert mysql_env.get("MYSQL_USER") != "root", "the mysql image refuses MYSQL_USER=root"


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


def test_kafka_default_partitions_match_the_service(services: dict[str, Any], app_services: dict[str, Any]) -> None:
    """Auto-created topics get as many partitions as the service creates, so a scaled service can share them."""
    broker_partitions = environment_of(services["kafka"]).get("KAFKA_NUM_PARTITIONS")
    for name, service in app_services.items():
        settings = config.load_settings(environ=environment_of(service), env_file=Path("/nonexistent/.env"))
        assert broker_partitions == str(settings.topic_partitions), name


def test_mysql_healthcheck_uses_tcp(services: dict[str, Any]) -> None:
    """The mysql healthcheck pings over TCP, which stays down until initialisation has finished."""
    test = services["mysql"]["healthcheck"]["test"]
    command = test if isinstance(test, str) else " ".join(test)
    assert "mysqladmin ping" in command
    assert "--protocol=tcp" in command
    assert "127.0.0.1" in command


def test_every_awaited_dependency_has_a_healthcheck(services: dict[str, Any]) -> None:
    """Each service waited on as healthy (including kafka and mysql) defines a healthcheck with timings."""
    awaited = {
        target
        for service in services.values()
        for target, condition in depends_on_of(service).items()
        if condition == "service_healthy"
    }
    assert {"kafka", "mysql"} <= awaited
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
    """The service starts only after kafka and mysql are healthy and the trainer has exited successfully."""
    assert depends_on_of(services["prediction-service"]) == {
        "kafka": "service_healthy",
        "mysql": "service_healthy",
        "trainer": "service_completed_successfully",
    }
    assert depends_on_of(services["trainer"]).get("mysql") == "service_healthy"


def test_the_model_registry_volume_is_shared_from_trainer_to_service(
    compose: dict[str, Any], services: dict[str, Any], tmp_path: Path
) -> None:
    """The trainer registers into, and the service reads from, one named volume mounted where MODEL_URI points on both."""
    for name in ("trainer", "prediction-service"):
        settings = config.load_settings(environ=environment_of(services[name]), env_file=tmp_path / "no-such.env")
        assert settings.model_uri == MODEL_REGISTRY_MOUNT, f"{name}: MODEL_URI is {settings.model_uri}"
    expected = {"trainer": f"{MODEL_VOLUME}:{MODEL_REGISTRY_MOUNT}", "prediction-service": f"{MODEL_VOLUME}:{MODEL_REGISTRY_MOUNT}:ro"}
    for name, mount in expected.items():
        assert mount in services[name].get("volumes", []), f"{name} does not mount {mount}"
    assert MODEL_VOLUME in compose.get("volumes", {})


def test_the_trainer_promotes_and_the_service_polls_so_a_retrain_needs_no_restart(services: dict[str, Any], tmp_path: Path) -> None:
    """`docker compose run --rm trainer` registers and promotes a version; the running service looks for one every MODEL_POLL_S."""
    command = " ".join(services["trainer"]["command"])
    assert "python -m offline_store.loader" in command
    assert re.search(r"python -m model\.train( \S+)* --promote\b", command), command
    settings = config.load_settings(environ=environment_of(services["prediction-service"]), env_file=tmp_path / "no-such.env")
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
    services = interpolate_tree(raw_compose, given)["services"]
    for name in ("trainer", "prediction-service"):
        environ = environment_of(services[name])
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
    long_running = {name: service for name, service in app_services.items() if name in {"prediction-service", "consumer"}}
    assert len(long_running) == 2
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


def test_images_we_do_not_build_are_pinned_to_a_version(services: dict[str, Any]) -> None:
    """Kafka, MySQL, Prometheus and Grafana name an exact version tag, never `latest` or none."""
    pulled = {name: service["image"] for name, service in services.items() if "build" not in service}
    assert {"kafka", "mysql", "prometheus", "grafana"} <= set(pulled)
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
