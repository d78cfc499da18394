"""STACK_SECURITY=on on a private stack (own STACK_DIR and ports): each principal may do what its
ACLs allow and nothing else, MariaDB's users need TLS and have only their tables, and the
clients' env files give the programs working settings."""

from __future__ import annotations

import asyncio
import ssl
import stat
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError, TransactionalIdAuthorizationFailed

from config import Settings, load_settings
from messaging.kafka_security import kafka_client_options
from messaging.topics import ensure_topics, pipeline_topics
from offline_store.mysql import mysql_ssl_context
from tests.integration.secured_stack import DEV_PASSWORD, NO_FILE, copy_kafka_classpaths, env_file, running_secured_stack, settings_of
from tests.stack.shell import private_stack_environment, run_stack

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A private stack started with STACK_SECURITY=on, purged afterwards."""
    with running_secured_stack(tmp_path_factory.mktemp("secured-stack")) as env:
        yield env


def kafka_options(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, "request_timeout_ms": 10_000, **kafka_client_options(settings)}


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine(), 60))


@pytest.fixture(scope="module")
def topics(secured_stack) -> Settings:
    """The pipeline's topics, created as the service creates them: as prediction-service."""
    service = settings_of(secured_stack, "prediction-service")
    run(lambda: ensure_topics(service, pipeline_topics(service)))
    return service


# Every record goes to partition 0, the one `read` reads.
async def send(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(**kafka_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", partition=0)
    finally:
        await producer.stop()


async def read(settings: Settings, topic: str, polls: int = 5) -> int:
    """Records read from partition 0 of `topic` in `polls` polls; raises what the broker refuses."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        count = 0
        for _ in range(polls):
            batches = await consumer.getmany(timeout_ms=1000)
            count += sum(len(records) for records in batches.values())
        return count
    finally:
        await consumer.stop()


async def transaction(settings: Settings, transactional_id: str, topic: str) -> None:
    producer = AIOKafkaProducer(**kafka_options(settings), transactional_id=transactional_id)
    try:
        await producer.start()
        async with producer.transaction():
            await producer.send(topic, b"{}", partition=0)
    finally:
        await producer.stop()


def test_the_env_files_hold_the_settings_of_their_principal(secured_stack):
    """Each Kafka env file names the SASL_SSL listener, its user, a 0600 password file and the CA."""
    for principal in ("prediction-service", "producer", "consumer"):
        settings = settings_of(secured_stack, principal)
        assert settings.kafka_bootstrap_servers == f"127.0.0.1:{secured_stack['KAFKA_SASL_SSL_PORT']}"
        assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert settings.kafka_sasl_username == principal
        assert len(settings.kafka_sasl_password) >= 32
        password_file = Path(env_file(secured_stack, principal)["KAFKA_SASL_PASSWORD_FILE"])
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert settings.kafka_ssl_cafile == str(Path(secured_stack["STACK_DIR"]) / "security" / "ca.crt")


def test_the_producer_writes_events_and_cannot_touch_predictions(secured_stack, topics):
    """producer: WRITE on the input topic; reading or writing the output topic is TopicAuthorizationFailed."""
    producer = settings_of(secured_stack, "producer")
    run(lambda: send(producer, topics.input_topic))
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: read(producer, topics.output_topic))
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: send(producer, topics.output_topic))


def test_the_service_uses_transactional_ids_of_its_prefix_only(secured_stack, topics):
    """prediction-service: transactions as <group>-<topic>-<partition> commit; any other id is refused."""
    run(lambda: transaction(topics, f"{topics.kafka_group_id}-{topics.input_topic}-0", topics.output_topic))
    with pytest.raises(TransactionalIdAuthorizationFailed):
        run(lambda: transaction(topics, "someone-else-0", topics.output_topic))


def test_the_consumer_reads_predictions_and_cannot_write_events(secured_stack, topics):
    """consumer: READ on the output topic (it sees the service's committed prediction); WRITE on the input is refused."""
    consumer = settings_of(secured_stack, "consumer")
    run(lambda: transaction(topics, f"{topics.kafka_group_id}-{topics.input_topic}-0", topics.output_topic))
    assert run(lambda: read(consumer, topics.output_topic)) >= 1
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: send(consumer, topics.input_topic))


def test_a_wrong_password_is_refused(secured_stack, topics):
    """The SASL_SSL listener checks the SCRAM password: the producer's name with another password gets nowhere."""
    environ = env_file(secured_stack, "producer")
    del environ["KAFKA_SASL_PASSWORD_FILE"]
    impostor = load_settings(environ={**environ, "KAFKA_SASL_PASSWORD": "guessed"}, env_file=NO_FILE)
    with pytest.raises(KafkaError):
        run(lambda: send(impostor, topics.input_topic))


def test_the_plain_listener_keeps_full_access_for_development(secured_stack, topics):
    """127.0.0.1:KAFKA_PORT without credentials still sees every topic and may create one."""
    async def create_and_list() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{secured_stack['KAFKA_PORT']}", request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("plain_dev_topic", 1, 1)])
            return await admin.list_topics()
        finally:
            await admin.close()

    assert {"plain_dev_topic", *pipeline_topics(topics)} <= set(run(create_and_list))


def mysql_connect(settings: Settings, tls: ssl.SSLContext | None, database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user, password=settings.mysql_password,
                           database=database, ssl=tls, ssl_disabled=tls is None, autocommit=True, connect_timeout=5)


def sql(connection: pymysql.Connection, statement: str) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchall()


def test_the_mysql_users_have_their_tables_only(secured_stack):
    """prediction_loader creates and fills the store's tables; prediction_service reads the two feature tables and nothing else."""
    loader = settings_of(secured_stack, "mysql-prediction_loader")
    service = settings_of(secured_stack, "mysql-prediction_service")
    assert (service.mysql_ssl_mode, loader.mysql_user, service.mysql_user) == ("verify_identity", "prediction_loader", "prediction_service")
    with mysql_connect(loader, mysql_ssl_context(loader), loader.mysql_database) as connection:
        for table in ("user_features", "feature_set", "purchases"):
            sql(connection, f"CREATE TABLE IF NOT EXISTS {table} (id INT)")
            sql(connection, f"INSERT INTO {table} VALUES (1)")
        # The loader replaces the feature table; the service's grant stays with the name.
        sql(connection, "DROP TABLE user_features")
        sql(connection, "CREATE TABLE user_features (id INT)")
        sql(connection, "INSERT INTO user_features VALUES (2)")
        with pytest.raises(pymysql.err.OperationalError):
            sql(connection, "CREATE DATABASE loader_elsewhere")
    with mysql_connect(service, mysql_ssl_context(service), service.mysql_database) as connection:
        assert sql(connection, "SELECT id FROM user_features") == ((2,),)
        assert sql(connection, "SELECT id FROM feature_set") == ((1,),)
        for refused in ("SELECT id FROM purchases", "INSERT INTO user_features VALUES (3)", "DELETE FROM feature_set"):
            with pytest.raises(pymysql.err.OperationalError):
                sql(connection, refused)


def test_the_mysql_users_need_tls(secured_stack):
    """Without TLS, the right password of prediction_service is refused."""
    service = settings_of(secured_stack, "mysql-prediction_service")
    with pytest.raises(pymysql.err.OperationalError):
        mysql_connect(service, None).close()


def test_mysql_user_has_its_databases_and_nothing_server_wide(secured_stack):
    """MYSQL_USER (a password with quotes and a backslash) may create the tests' and the benchmark's databases only; no mysql.*."""
    settings = load_settings(environ={"MYSQL_PORT": secured_stack["MYSQL_PORT"], "MYSQL_PASSWORD": DEV_PASSWORD}, env_file=NO_FILE)
    with mysql_connect(settings, None) as connection:
        for database in (f"prediction_it_{uuid.uuid4().hex[:8]}", f"{settings.mysql_database}_benchmark"):
            sql(connection, f"CREATE DATABASE `{database}`")
            sql(connection, f"DROP DATABASE `{database}`")
        for refused in ("CREATE DATABASE elsewhere", "SELECT user FROM mysql.user"):
            with pytest.raises(pymysql.err.OperationalError):
                sql(connection, refused)


def test_a_second_up_keeps_users_and_acls_without_redoing_them(secured_stack, topics):
    """up.sh on the running secured stack succeeds without rerunning Kafka's tools, and the producer still writes."""
    rerun = run_stack("up.sh", secured_stack)
    assert rerun.returncode == 0, rerun.stderr
    assert "Kafka already running" in rerun.stdout
    assert "ACLs" not in rerun.stdout and "SCRAM" not in rerun.stdout
    run(lambda: send(settings_of(secured_stack, "producer"), topics.input_topic))


def test_a_plain_stack_restarted_secured_gets_its_users_and_acls(tmp_path):
    """A stack formatted without SCRAM users: up.sh with STACK_SECURITY=on first asks for a restart, then adds users and ACLs."""
    stack_dir = tmp_path / "stack"
    copy_kafka_classpaths(stack_dir)
    plain = private_stack_environment(stack_dir, MYSQL_START_TIMEOUT="30", KAFKA_HEAP_OPTS="-Xms128m -Xmx384m")
    secured = {**plain, "STACK_SECURITY": "on"}
    try:
        started = run_stack("up.sh", plain)
        assert started.returncode == 0, started.stderr[-3000:]
        refused = run_stack("up.sh", secured)
        assert refused.returncode != 0
        assert "restart it" in refused.stderr
        assert run_stack("down.sh", plain).returncode == 0
        restarted = run_stack("up.sh", secured)
        assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
        assert "setting the passwords of the SCRAM users" in restarted.stdout
        service = settings_of(secured, "prediction-service")
        run(lambda: ensure_topics(service, pipeline_topics(service)))
        run(lambda: send(settings_of(secured, "producer"), service.input_topic))
        with pytest.raises(TopicAuthorizationFailedError):
            run(lambda: send(settings_of(secured, "producer"), service.output_topic))
    finally:
        stopped = run_stack("down.sh", plain, "--purge")
        assert stopped.returncode == 0, stopped.stderr
