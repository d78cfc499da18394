"""producer.py and consumer.py refused the creation of a missing topic say to start the service first."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import messaging.topics
from config import Settings
from messaging.kafka_security import KafkaAccessRefused
from terminal.topic_setup import ensure_pipeline_topics

TOPIC_AUTHORIZATION_FAILED = 29


class RefusingAdmin:
    """An admin client of a principal without CREATE: every topic is missing and its creation refused."""

    def __init__(self, **_options: object) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list) -> SimpleNamespace:
        return SimpleNamespace(topic_errors=[(topic.name, TOPIC_AUTHORIZATION_FAILED, None) for topic in topics])


def test_a_refused_creation_says_to_start_the_service_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messaging.topics, "AIOKafkaAdminClient", RefusingAdmin)
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="producer", kafka_sasl_password="x")
    with pytest.raises(KafkaAccessRefused) as caught:
        asyncio.run(ensure_pipeline_topics(settings))
    message = str(caught.value)
    assert "Kafka denied User:producer creating topic" in message
    assert "start prediction_service.py first" in message


def test_other_refusals_pass_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*_args: object) -> None:
        raise KafkaAccessRefused("Kafka at x:1 refused the credentials of producer (SCRAM-SHA-512)")

    monkeypatch.setattr(messaging.topics, "AIOKafkaAdminClient", RefusingAdmin)
    monkeypatch.setattr(messaging.topics, "start_kafka_client", refuse)
    with pytest.raises(KafkaAccessRefused) as caught:
        asyncio.run(ensure_pipeline_topics(Settings()))
    assert "start prediction_service.py" not in str(caught.value)
