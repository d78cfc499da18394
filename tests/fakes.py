"""Small in-memory stand-ins behind the same interfaces as Kafka and MySQL, for unit tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Iterable

import pymysql
from aiokafka.structs import ConsumerRecord, TopicPartition

from offline_store.features import UserFeatures

_offsets = itertools.count()


def make_record(value: bytes | None, *, topic: str = "input_topic", partition: int = 0, offset: int | None = None,
                key: bytes | None = b"1", headers: Iterable[tuple[str, bytes]] = ()) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, offset=next(_offsets) if offset is None else offset,
        timestamp=0, timestamp_type=0, key=key, value=value, checksum=None,
        serialized_key_size=len(key or b""), serialized_value_size=len(value or b""), headers=tuple(headers),
    )


class InMemoryFeatureStore:
    """Serves fixed features; can be told to fail like an unreachable MySQL."""

    def __init__(self, features: dict[int, UserFeatures] | None = None, failures_before_success: int = 0) -> None:
        self.features = features or {}
        self.failures_left = failures_before_success
        self.lookups: list[list[int]] = []

    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        self.lookups.append(list(user_ids))
        if self.failures_left:
            self.failures_left -= 1
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server (in-memory stand-in)")
        return {user_id: self.features[user_id] for user_id in user_ids if user_id in self.features}


class InMemorySource:
    """Hands out queued batches like AIOKafkaConsumer.getmany and records commits."""

    def __init__(self, batches: Iterable[list[ConsumerRecord]], stop: asyncio.Event) -> None:
        self._batches = list(batches)
        self._stop = stop
        self.commits: list[dict[TopicPartition, int]] = []

    async def getmany(self, *partitions, timeout_ms: int, max_records: int | None = None):
        if not self._batches:
            self._stop.set()  # drained: let the loop finish
            return {}
        batch = self._batches.pop(0)
        grouped: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in batch:
            grouped.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return grouped

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class InMemorySink:
    """Acknowledges sends like AIOKafkaProducer.send; can fail the first N deliveries."""

    def __init__(self, failures_before_success: int = 0, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.failures_left = failures_before_success
        self.error = error

    async def send(self, topic, value=None, key=None, *, headers=None) -> asyncio.Future:
        delivery = asyncio.get_running_loop().create_future()
        if self.failures_left:
            self.failures_left -= 1
            delivery.set_exception(self.error)
        else:
            self.sent.append((topic, value, key, list(headers or [])))
            delivery.set_result(None)
        return delivery

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        return [message for message in self.sent if message[0] == topic]
