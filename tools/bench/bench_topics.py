"""The benchmark's side of Kafka: fresh topics, a fast backlog, and reading results back."""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from config import Settings
from events.schema import encode_event, encode_key
from events.synthetic import random_event
from messaging.kafka_security import kafka_client_options

PARTITIONS = 6


# The broker stamps each record as it appends it, so latency runs from "the event is in Kafka"
# to "its prediction is in Kafka": the load generator's own buffering is not charged to the
# service, and the service's is.
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


async def create_topics(settings: Settings, *topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=TOPIC_CONFIG) for topic in topics])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            described = await admin.describe_topics(list(topics))
            if all(t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in topics if t in existing])
    finally:
        await admin.close()


def events(count: int, users: int, seed: int, distinct_users: bool = False) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, event_id) of synthetic valid events; with `distinct_users`, every event is another user."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for n in range(count):
        user_id = n if distinct_users else rng.randrange(users)
        event = random_event(rng, user_id, now)
        yield encode_key(user_id), encode_event(event), event.event_id


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=2, max_batch_size=256 * 1024,
        **kafka_client_options(settings),
        compression_type="zstd",
    )


async def load_backlog(settings: Settings, topic: str, records: Iterator[tuple[bytes, bytes, str]]) -> int:
    """Send every record as fast as the broker takes them; returns how many."""
    producer = _producer(settings)
    await producer.start()
    sent = 0
    try:
        pending = []
        for key, value, _event_id in records:
            pending.append(await producer.send(topic, value, key))
            sent += 1
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def record_count(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, isolation_level="read_committed",
        **kafka_client_options(settings),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in partitions)


@dataclass
class TopicTimes:
    """The Kafka timestamp of every record of a topic, keyed by event id, and where it is."""

    by_event: dict[str, int]
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # (partition, offset)

    def arrivals(self, batches: list[tuple[int, int, float]]) -> dict[str, float]:
        """When each event's record reached a reader that noted `batches` (see tools.bench.kcat.arrivals_watched)."""
        by_partition: dict[int, list[tuple[int, float]]] = {}
        for partition, last_offset, ms in batches:
            by_partition.setdefault(partition, []).append((last_offset, ms))
        arrived = {}
        for event_id, (partition, offset) in self.positions.items():
            seen = by_partition.get(partition, [])
            at = bisect.bisect_left(seen, (offset, -math.inf))
            if at < len(seen):
                arrived[event_id] = seen[at][1]
        return arrived

    @property
    def first_ms(self) -> int:
        return min(self.by_event.values())

    @property
    def last_ms(self) -> int:
        return max(self.by_event.values())


async def read_times(settings: Settings, topic: str, expected: int, timeout_s: float = 120.0) -> TopicTimes:
    """Every record's timestamp, by the `event_id` field of its JSON value, read from the start."""
    import msgspec

    class WithId(msgspec.Struct):
        event_id: str

    decode = msgspec.json.Decoder(WithId).decode
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, auto_offset_reset="earliest",
        **kafka_client_options(settings),
        isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    times: dict[str, int] = {}
    positions: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(times) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                for record in records:
                    event_id = decode(record.value).event_id
                    if event_id not in times:
                        times[event_id] = record.timestamp
                        positions[event_id] = (record.partition, record.offset)
    finally:
        await consumer.stop()
    return TopicTimes(times, positions)
