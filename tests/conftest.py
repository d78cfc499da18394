"""Fixtures: factories that reach the real Kafka broker and MySQL server for integration tests.

`make test` starts both (stack/up.sh). Each test gets its own topics and consumer group, and the
session its own throwaway database, so tests neither see each other's records nor touch the
store that `make demo` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomysql
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings, load_settings
from messaging.kafka_security import kafka_client_options
from model.artifact import ARTIFACT_FILE
from model.local_registry import LocalRegistry
from offline_store.loader import load_store
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, mysql_ssl_context
from tests.factories import save_trained, train
from tests.integration.service_process import ServiceProcess
from tools.chaos.tcp_proxy import free_port

STORE_USERS = 300


def env_settings(**overrides: str) -> Settings:
    return load_settings(environ={**os.environ, **overrides})


async def _check_kafka(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=5000, **kafka_client_options(settings)
    )
    await asyncio.wait_for(admin.start(), 15)
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def server_sql(settings: Settings, *statements: str) -> None:
    conn = await aiomysql.connect(host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
                                  password=settings.mysql_password, autocommit=True, connect_timeout=5,
                                  ssl=mysql_ssl_context(settings))
    try:
        async with conn.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    settings = env_settings()
    try:
        asyncio.run(_check_kafka(settings))
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({exc!r}); start it with `make up`")
    try:
        asyncio.run(server_sql(settings, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"MySQL is not reachable at {settings.mysql_host}:{settings.mysql_port} ({exc!r}); start it with `make up`")
    return settings


@contextlib.contextmanager
def loaded_store(
    stack_settings: Settings, prefix: str, users: int, seed: int = 1, as_of: datetime | None = None, **env: str
) -> Iterator[str]:
    """A throwaway database `<prefix>_<random>` loaded by the real loader (with `env` as further settings); yields its
    name and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{name}`"))
    try:
        asyncio.run(load_store(env_settings(**env, MYSQL_DATABASE=name), users, seed=seed, as_of=as_of or datetime.now(UTC)))
        yield name
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))


async def all_features(settings: Settings) -> dict:
    """Every user's features in the store `settings` point at."""
    pool = await create_pool(settings)
    try:
        return await MySQLFeatureStore(pool, 5000).get_all_features()
    finally:
        await close_pool(pool)


@pytest.fixture(scope="session")
def store_database(stack_settings):
    """A throwaway database loaded by the real loader; yields its name and the users' features."""
    with loaded_store(stack_settings, "prediction_it", STORE_USERS) as name:
        yield name, asyncio.run(all_features(env_settings(MYSQL_DATABASE=name)))


@pytest.fixture(scope="session")
def model_registry(store_database, tmp_path_factory) -> Path:
    """A local registry holding one model trained on the test store, promoted: what the services serve."""
    _name, known = store_database
    trained = train(known, STORE_USERS, samples=20_000, seed=3)
    staged = tmp_path_factory.mktemp("trained") / ARTIFACT_FILE
    save_trained(trained, staged)
    root = tmp_path_factory.mktemp("registry")
    registry = LocalRegistry(root)
    registry.promote(registry.register(staged))
    return root


@pytest.fixture(scope="session")
def model_path(model_registry) -> Path:
    """The artifact of the version the test registry serves."""
    registry = LocalRegistry(model_registry)
    version = registry.serving()
    assert version is not None
    return registry.artifact_path(version)


@pytest.fixture
def pipeline_env(stack_settings, store_database, model_registry) -> Iterator[dict[str, str]]:
    """Environment for one test's service processes: private topics and group, the test store and model registry.

    The topics are deleted afterwards: left behind, hundreds of them slow the shared broker down.
    """
    run = uuid.uuid4().hex[:8]
    env = {
        "INPUT_TOPIC": f"it-{run}-input",
        "OUTPUT_TOPIC": f"it-{run}-output",
        "DLQ_TOPIC": f"it-{run}-dlq",
        "KAFKA_GROUP_ID": f"it-{run}-service",
        "TOPIC_PARTITIONS": "4",
        "MYSQL_DATABASE": store_database[0],
        "MODEL_URI": str(model_registry),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "STATS_INTERVAL_S": "1",
        "RETRY_BACKOFF_MAX_MS": "1000",
    }
    yield env
    asyncio.run(delete_topics(stack_settings, [env["INPUT_TOPIC"], env["OUTPUT_TOPIC"], env["DLQ_TOPIC"]]))


async def delete_topics(settings: Settings, topics: list[str]) -> None:
    """Delete whichever of `topics` exist: left behind, hundreds of them slow the shared broker down."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if existing & set(topics):
            await admin.delete_topics(sorted(existing & set(topics)))
    finally:
        await admin.close()


@pytest.fixture
def pipeline_settings(pipeline_env) -> Settings:
    return env_settings(**pipeline_env)


@pytest.fixture
def start_service(pipeline_env, tmp_path):
    """Starts service processes for the test and makes sure none outlives it."""
    started: list[ServiceProcess] = []

    def start(**extra_env: str) -> ServiceProcess:
        # Instances on one machine cannot share METRICS_PORT, and tests start several at once.
        env = {"METRICS_PORT": str(free_port()), **pipeline_env, **extra_env}
        service = ServiceProcess(env, tmp_path / f"service-{len(started)}.log").start()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.alive:
            service.kill()
