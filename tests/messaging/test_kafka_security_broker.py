"""Refusals as a real broker gives them: a private Kafka with a SASL_SSL listener (SCRAM-SHA-512, a CA
made for the test), an authorizer that denies what no ACL allows, and a plaintext listener beside it.

What aiokafka raises, and where, is the library's behaviour, not the project's: these tests pin it
(SaslAuthenticationFailed on bad SCRAM credentials, swallowed by the clients' bootstrap; the ACL
errors with the topic, group or transactional id in their arguments).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from config import Settings, load_settings
from errors import SETUP_EXIT_CODE
from messaging.kafka_security import KafkaAccessRefused, diagnose_bootstrap, kafka_client_options, kafka_refusal, start_kafka_client
from messaging.topics import ensure_topics
from service.failures import exit_code, retriable
from tools.bench.kcat_security import kcat_security_arguments
from tools.chaos.secured_kafka import LITERAL, READ, grant, secured_kafka
from tools.chaos.secured_kafka import TOPIC as TOPIC_RESOURCE

pytestmark = pytest.mark.integration

NO_FILE = Path("/nonexistent/.env")
USER, PASSWORD = "alice", "alice-secret"
TOPIC = "secured-topic"
READABLE_TOPIC = "secured-readable-topic"


@dataclass(frozen=True)
class SecuredBroker:
    plaintext: str  # host:port of the listener without authentication (its clients are super users)
    sasl_ssl: str
    ca: Path


@pytest.fixture(scope="module")
def broker(tmp_path_factory) -> Iterator[SecuredBroker]:
    directory = tmp_path_factory.mktemp("secured-kafka")
    kafka, ca, _ = secured_kafka(directory, {USER: PASSWORD}, plain_too=True)
    kafka.start()
    try:
        yield SecuredBroker(kafka.bootstrap_servers, f"127.0.0.1:{kafka.ports['SASL_SSL']}", ca)
    finally:
        kafka.kill()


def settings_for(broker: SecuredBroker, **env: str) -> Settings:
    return load_settings(environ={
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_ssl, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": USER,
        "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SSL_CAFILE": str(broker.ca), "KAFKA_GROUP_ID": "alice-group", **env,
    }, env_file=NO_FILE)


def super_user(broker: SecuredBroker) -> Settings:
    """Whoever comes through the plaintext listener, unauthenticated: User:ANONYMOUS, a super user here."""
    return load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": broker.plaintext}, env_file=NO_FILE)


@pytest.fixture
async def topic(broker) -> AsyncIterator[str]:
    """TOPIC, made by a super user: alice has no grant on it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.plaintext, **kafka_client_options(super_user(broker)))
    await admin.start()
    try:
        if TOPIC not in await admin.list_topics():
            await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    yield TOPIC


@pytest.fixture
async def readable_topic(broker) -> AsyncIterator[str]:
    """READABLE_TOPIC, which alice may read."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.plaintext, **kafka_client_options(super_user(broker)))
    await admin.start()
    try:
        if READABLE_TOPIC not in await admin.list_topics():
            await admin.create_topics([NewTopic(READABLE_TOPIC, 1, 1)])
    finally:
        await admin.close()
    await grant(broker.plaintext, [(TOPIC_RESOURCE, READABLE_TOPIC, LITERAL, f"User:{USER}", READ)])
    yield READABLE_TOPIC


async def test_the_right_credentials_connect_and_a_topic_alice_may_not_create_is_named(broker):
    settings = settings_for(broker)
    assert await diagnose_bootstrap(settings) is None
    with pytest.raises(KafkaAccessRefused, match=f"Kafka denied User:{USER} creating topic alice-new"):
        await ensure_topics(settings, ["alice-new"])


async def test_a_wrong_password_is_refused_with_the_user_and_mechanism(broker):
    settings = settings_for(broker, KAFKA_SASL_PASSWORD="wrong")
    host, _, port = broker.sasl_ssl.rpartition(":")
    with pytest.raises(SaslAuthenticationFailed):
        await create_conn(host, int(port), **kafka_client_options(settings))
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.sasl_ssl, **kafka_client_options(settings))
    with pytest.raises(KafkaAccessRefused) as caught:
        await start_kafka_client(admin, settings)
    assert str(caught.value).startswith(f"Kafka at {broker.sasl_ssl} refused the credentials of {USER} (SCRAM-SHA-512)")
    assert exit_code(caught.value) == SETUP_EXIT_CODE and not retriable(caught.value)


@pytest.mark.parametrize(
    ("env", "listener", "expected"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "sasl_ssl", "answers TLS, yet KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "sasl_ssl", "set KAFKA_SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "plaintext", "takes no SASL login on that port"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "plaintext", "is no TLS listener, yet KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
        ({"KAFKA_SSL_CAFILE": ""}, "sasl_ssl", "not trusted by KAFKA_SSL_CAFILE"),
    ],
)
async def test_the_wrong_protocol_for_the_port_is_named(broker, env, listener, expected):
    settings = settings_for(broker, KAFKA_BOOTSTRAP_SERVERS=getattr(broker, listener), **env)
    refusal = await diagnose_bootstrap(settings)
    assert refusal is not None and expected in str(refusal)


async def test_writing_without_a_grant_names_the_topic(broker, topic):
    settings = settings_for(broker)
    producer = AIOKafkaProducer(bootstrap_servers=broker.sasl_ssl, **kafka_client_options(settings))
    await start_kafka_client(producer, settings)
    try:
        with pytest.raises(TopicAuthorizationFailedError) as caught:
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    assert caught.value.args == (topic,)
    assert f"access to topic {topic}" in str(kafka_refusal(caught.value, settings))


async def test_a_group_without_a_grant_is_named(broker, readable_topic):
    settings = settings_for(broker)
    consumer = AIOKafkaConsumer(readable_topic, bootstrap_servers=broker.sasl_ssl, group_id="alice-group", **kafka_client_options(settings))
    try:
        with pytest.raises(GroupAuthorizationFailedError) as caught:
            await consumer.start()
            await consumer.getmany(timeout_ms=5_000)
    finally:
        await consumer.stop()
    assert caught.value.args == ("alice-group",)
    assert "consumer group alice-group" in str(kafka_refusal(caught.value, settings))


async def test_a_transactional_id_without_a_grant_is_named(broker):
    settings = settings_for(broker)
    producer = AIOKafkaProducer(bootstrap_servers=broker.sasl_ssl, transactional_id="alice-group-t-0", **kafka_client_options(settings))
    try:
        with pytest.raises(TransactionalIdAuthorizationFailed) as caught:
            await producer.start()
    finally:
        await producer.stop()
    assert caught.value.args == ("alice-group-t-0",)
    assert "transactional id alice-group-t-0" in str(kafka_refusal(caught.value, settings))


def kcat_metadata(broker: SecuredBroker, **env: str) -> subprocess.CompletedProcess[str]:
    """kcat (the benchmark's load and watcher) asking the SASL_SSL listener for its metadata."""
    settings = settings_for(broker, **env)
    command = ["kcat", *kcat_security_arguments(settings), "-b", settings.kafka_bootstrap_servers, "-L", "-m", "10"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_kcat_logs_in_with_the_projects_settings_and_no_password_on_its_command_line(broker):
    """kcat checks the broker's certificate against KAFKA_SSL_CAFILE and logs in as KAFKA_SASL_USERNAME. With PLAIN:
    Debian's kcat (librdkafka 2.0.2) fails SCRAM against Kafka 4 whatever the password (fixed in librdkafka 2.6.1)."""
    plain = {"KAFKA_SASL_MECHANISM": "PLAIN"}
    assert PASSWORD not in " ".join(kcat_security_arguments(settings_for(broker, **plain)))
    answered = kcat_metadata(broker, **plain)
    assert answered.returncode == 0, answered.stderr
    assert "broker 1 at 127.0.0.1" in answered.stdout
    refused = kcat_metadata(broker, **plain, KAFKA_SASL_PASSWORD="wrong")
    assert refused.returncode != 0 and "Authentication failed" in refused.stderr
    untrusted = kcat_metadata(broker, **plain, KAFKA_SSL_CAFILE="/etc/ssl/certs/ca-certificates.crt")
    assert untrusted.returncode != 0 and "certificate verify failed" in untrusted.stderr


async def test_aiokafka_logs_in_with_sasl_plain_too(broker):
    assert await diagnose_bootstrap(settings_for(broker, KAFKA_SASL_MECHANISM="PLAIN")) is None
