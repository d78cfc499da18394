"""Talking to the real broker from tests: send records, read a topic until a condition holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from messaging.kafka_security import kafka_client_options


async def send_records(
    settings: Settings, records: Iterable[tuple[bytes | None, bytes | None]], topic: str | None = None, **producer_options
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", **kafka_client_options(settings), **producer_options
    )
    await producer.start()
    try:
        deliveries = [await producer.send(topic or settings.input_topic, value, key) for key, value in records]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def read_topic(
    settings: Settings, topic: str, done: Callable[[list[ConsumerRecord]], bool], timeout_s: float
) -> list[ConsumerRecord]:
    """Every record of `topic` from the start, until `done(records)` or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed", **kafka_client_options(settings))
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for partition_records in batches.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def create_topic(settings: Settings, name: str, partitions: int = 4, /, **configs: str) -> None:
    """Create a topic ahead of the service, with topic-level settings such as max.message.bytes."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=dict(configs))])
    finally:
        await admin.close()


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.kafka_group_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == settings.input_topic and meta.offset >= 0}
