"""The harness's side of Kafka: fresh topics, how far the group has committed, and reading a topic whole."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from messaging.kafka_security import kafka_client_options
from messaging.topics import ensure_topics, pipeline_topics

# Each look at the group is bounded, so a broker that stops answering cannot hold the harness.
PROBE_TIMEOUT_S = 15.0


async def create_topics(settings: Settings) -> None:
    """The input, output and dead-letter topics, before any instance or the load starts."""
    await ensure_topics(settings, pipeline_topics(settings))


def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(settings.topic_partitions)]


async def group_lag(settings: Settings) -> int:
    """Input records past the group's committed offsets (a partition without a commit counts whole)."""

    async def probe() -> int:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers, client_id="chaos-probe", **kafka_client_options(settings)
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, client_id="chaos-probe", **kafka_client_options(settings)
        )
        await admin.start()
        try:
            await consumer.start()
            try:
                committed = await admin.list_consumer_group_offsets(settings.kafka_group_id)
                ends = await consumer.end_offsets(_partitions(settings, settings.input_topic))
            finally:
                await consumer.stop()
        finally:
            await admin.close()
        return sum(end - max(0, committed[tp].offset if tp in committed else 0) for tp, end in ends.items())

    return await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)


async def read_all(settings: Settings, topic: str, timeout_s: float, quiet_s: float = 10.0) -> list[ConsumerRecord]:
    """Every record of `topic` a read_committed reader sees, up to the end as it stands now.

    Done when every partition's position reaches its end (the last stable offset), or nothing
    new has come for `quiet_s`, or at `timeout_s`: a transaction left open holds the end back.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, client_id="chaos-verdict", enable_auto_commit=False,
        **kafka_client_options(settings),
        isolation_level="read_committed", auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions = _partitions(settings, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        started = last_record = time.monotonic()
        while time.monotonic() - started < timeout_s and time.monotonic() - last_record < quiet_s:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(position >= ends[tp] for position, tp in zip(positions, partitions, strict=True)):
                break
            for batch in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                records.extend(batch)
                last_record = time.monotonic()
    finally:
        await consumer.stop()
    return records
