"""The whole pipeline on a private stack with STACK_SECURITY=on, every program with its own principal:
the loader's MySQL user fills the store, the service reads it with its SELECT-only user and Kafka's
prediction-service principal, producer.py and a reader use theirs. Then what a wrong credential, an
untrusted CA, the wrong protocol or a missing grant does to a program: exit 2 with a message naming it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import pytest

from model.artifact import ARTIFACT_FILE
from model.local_registry import LocalRegistry
from offline_store.loader import load_store
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, mysql_ssl_context
from tests.factories import save_trained, train
from tests.integration.kafka_helpers import read_topic
from tests.integration.secured_stack import (
    MYSQL_LOADER_ENV,
    MYSQL_SERVICE_ENV,
    plain_settings,
    principal_env,
    running_secured_stack,
    settings_of,
)
from tests.integration.service_process import REPO_ROOT, ServiceProcess
from tests.stack.shell import clean_environment
from tools.chaos.tcp_proxy import free_port

pytestmark = pytest.mark.integration

STORE_USERS = 300
EVENTS_PER_RUN = 60
# A program refused for its set-up stops well within this; one retrying forever does not.
REFUSAL_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    with running_secured_stack(tmp_path_factory.mktemp("secured-pipeline")) as env:
        yield env


@pytest.fixture(scope="module")
def model_registry(stack, tmp_path_factory) -> Path:
    return promoted_model_registry(stack, tmp_path_factory)


def promoted_model_registry(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store loaded by the loader's MySQL user, and a model trained on what the service's user reads, promoted."""
    loader = settings_of(stack, MYSQL_LOADER_ENV)
    asyncio.run(load_store(loader, STORE_USERS, seed=1, as_of=datetime.now(UTC)))

    async def all_features():
        pool = await create_pool(settings_of(stack, MYSQL_SERVICE_ENV))
        try:
            return await MySQLFeatureStore(pool, 5000).get_all_features()
        finally:
            await close_pool(pool)

    known = asyncio.run(all_features())
    assert known, "the service's MySQL user reads the features the loader's user wrote"
    staged = tmp_path_factory.mktemp("trained") / ARTIFACT_FILE
    save_trained(train(known, STORE_USERS, samples=20_000, seed=3), staged)
    root = tmp_path_factory.mktemp("registry")
    registry = LocalRegistry(root)
    registry.promote(registry.register(staged))
    return root


def program_env(stack: dict[str, str], *env_files: str, **extra: str) -> dict[str, str]:
    """A program's whole environment: the env files of its principals over a clean one (no developer's KAFKA_* leaks in)."""
    return {**clean_environment(), **principal_env(stack, *env_files), "LOG_FORMAT": "json", **extra}


def run_program(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=REFUSAL_TIMEOUT_S)


def input_event_ids(stack: dict[str, str], topic: str, at_least: int = 0, timeout_s: float = 5) -> set[str]:
    """The ids of the events in `topic`, read on the plain listener: no principal may read the input back."""
    def ids(records: list) -> set[str]:
        return {json.loads(record.value)["event_id"] for record in records}

    return ids(asyncio.run(read_topic(plain_settings(stack), topic, lambda records: len(ids(records)) >= at_least > 0, timeout_s)))


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_every_event_is_predicted_once_with_each_principal(stack, model_registry, guarantee, tmp_path):
    """Service, producer and reader each as their principal: every event of this run comes out once, committed."""
    service_env = program_env(stack, "prediction-service", MYSQL_SERVICE_ENV, MODEL_URI=str(model_registry),
                              PROCESSING_GUARANTEE=guarantee, METRICS_PORT=str(free_port()), STATS_INTERVAL_S="1")
    service = ServiceProcess(service_env, tmp_path / "service.log").start()
    try:
        # Only prediction-service may create the topics: it does so before taking its partitions.
        service.wait_for_message("partitions assigned", timeout_s=90)
        settings = settings_of(stack, "prediction-service")
        earlier = input_event_ids(stack, settings.input_topic)
        produced = run_program("producer.py", program_env(stack, "producer"), "--count", str(EVENTS_PER_RUN), "--rate", "0",
                               "--seed", str(uuid.uuid4().int % 10_000), "--users", str(STORE_USERS))
        assert produced.returncode == 0, produced.stderr
        sent = input_event_ids(stack, settings.input_topic, len(earlier) + EVENTS_PER_RUN, 60) - earlier
        assert len(sent) == EVENTS_PER_RUN

        reader = settings_of(stack, "consumer")

        def predicted(records: list) -> list[str]:
            return [event_id for r in records if (event_id := json.loads(r.value)["event_id"]) in sent]

        asyncio.run(read_topic(reader, reader.output_topic, lambda records: len(predicted(records)) >= len(sent), 90))
        # The whole topic again, a few seconds more: duplicates may come after the last first copy.
        records = asyncio.run(read_topic(reader, reader.output_topic, lambda _records: False, 3))
        ids = predicted(records)
        assert sorted(ids) == sorted(sent), f"{len(ids)} predictions for {len(sent)} events ({len(set(ids))} distinct)"
        assert service.stop() == 0, service.tail()
    finally:
        if service.alive:
            service.kill()


def other_ca(directory: Path) -> Path:
    """A self-signed CA certificate that signed nothing the stack uses."""
    key, cert = directory / "other-ca.key", directory / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=not the stack's CA"], check=True, capture_output=True, timeout=60)
    return cert


def producer_env_with(stack: dict[str, str], tmp_path: Path, case: str) -> dict[str, str]:
    env = program_env(stack, "producer")
    if case == "wrong password":
        del env["KAFKA_SASL_PASSWORD_FILE"]
        env["KAFKA_SASL_PASSWORD"] = "guessed"
    elif case == "another CA":
        env["KAFKA_SSL_CAFILE"] = str(other_ca(tmp_path))
    elif case == "plaintext to the TLS port":
        env["KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    return env


@pytest.mark.parametrize(("case", "cause"), [
    ("wrong password", "refused the credentials of producer"),
    ("another CA", "not trusted by KAFKA_SSL_CAFILE"),
    ("plaintext to the TLS port", "KAFKA_SECURITY_PROTOCOL"),
])
def test_the_producer_stops_with_the_cause_of_a_refused_connection(stack, tmp_path, case, cause):
    """Exit 2 and one message naming the cause, within the subprocess timeout: no retrying a set-up forever."""
    result = run_program("producer.py", producer_env_with(stack, tmp_path, case), "--count", "1", "--rate", "0")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert cause in result.stderr, result.stderr[-2000:]


def test_the_service_run_as_the_producer_principal_stops_naming_what_it_may_not_use(stack, model_registry, tmp_path):
    """producer's credentials lack the service's grants: exit 2 naming the topic, group or transactional id refused."""
    env = program_env(stack, "producer", MYSQL_SERVICE_ENV, MODEL_URI=str(model_registry), METRICS_PORT=str(free_port()))
    settings = settings_of(stack, "prediction-service")
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        assert service.process is not None
        assert service.process.wait(timeout=REFUSAL_TIMEOUT_S) == 2, service.tail()
        refusal = "\n".join(service.messages())
        named = [name for name in (settings.input_topic, settings.output_topic, settings.dlq_topic, settings.kafka_group_id)
                 if name in refusal]
        assert named and "producer" in refusal, service.tail()
    finally:
        if service.alive:
            service.kill()


def test_the_mysql_users_cannot_step_outside_their_grants(stack, model_registry):
    """The service's user cannot write the feature table; the loader's cannot read mysql.user or another database."""
    def refused(env_name: str, statement: str) -> None:
        settings = settings_of(stack, env_name)
        connection = pymysql.connect(host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
                                     password=settings.mysql_password, database=settings.mysql_database,
                                     ssl=mysql_ssl_context(settings), connect_timeout=5)
        with connection, connection.cursor() as cursor, pytest.raises(pymysql.err.OperationalError, match="denied"):
            cursor.execute(statement)

    refused(MYSQL_SERVICE_ENV, "INSERT INTO user_features SELECT * FROM user_features")
    refused(MYSQL_LOADER_ENV, "SELECT user FROM mysql.user")
    refused(MYSQL_LOADER_ENV, "SELECT 1 FROM mysql.db")
