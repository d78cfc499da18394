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
    """Hands out queued batches like AIOKafkaConsumer.getmany and records commits and seeks.

    A queued exception instead of a batch is raised by getmany, as aiokafka raises fetch errors.
    """

    def __init__(self, batches: Iterable[list[ConsumerRecord] | Exception], stop: asyncio.Event,
                 log_start: dict[TopicPartition, int] | None = None, log_end: dict[TopicPartition, int] | None = None) -> None:
        self._batches = list(batches)
        self._stop = stop
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int | str]] = []
        self._log_start = log_start or {}
        self._log_end = log_end or {}

    async def getmany(self, *partitions, timeout_ms: int, max_records: int | None = None):
        if not self._batches:
            self._stop.set()  # drained: let the loop finish
            return {}
        batch = self._batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        grouped: dict[TopicPartition, list[ConsumerRecord]] = {}
        for record in batch:
            grouped.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return grouped

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool:
        self.seeks.extend((tp, "beginning") for tp in partitions)
        return True

    async def beginning_offsets(self, partitions):
        return {tp: self._log_start.get(tp, 0) for tp in partitions}

    async def end_offsets(self, partitions):
        return {tp: self._log_end.get(tp, 0) for tp in partitions}


class InMemorySink:
    """Acknowledges sends like AIOKafkaProducer.send; can fail the first N deliveries, or refuse
    every record that `refuse(topic, value)` picks, with `refusal`."""

    def __init__(self, failures_before_success: int = 0, error: Exception | None = None,
                 refuse=lambda topic, value: False, refusal: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.failures_left = failures_before_success
        self.error = error
        self.refuse = refuse
        self.refusal = refusal
        self.refused = 0

    async def send(self, topic, value=None, key=None, *, headers=None) -> asyncio.Future:
        delivery = asyncio.get_running_loop().create_future()
        if self.refuse(topic, value):
            self.refused += 1
            delivery.set_exception(self.refusal)
        elif self.failures_left:
            self.failures_left -= 1
            delivery.set_exception(self.error)
        else:
            self.sent.append((topic, value, key, list(headers or [])))
            delivery.set_result(None)
        return delivery

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        return [message for message in self.sent if message[0] == topic]
