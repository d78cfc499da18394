"""Talking to the real broker from tests: send records, read a topic until a condition holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from config import Settings


async def send_records(settings: Settings, records: Iterable[tuple[bytes | None, bytes | None]], topic: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
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
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, auto_offset_reset="earliest")
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
