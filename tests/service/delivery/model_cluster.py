"""The broker's side of the delivery model (delivery_model.py): each input partition's log, the
group's committed offsets, which inputs have a delivered output, and a consumer over them.

Commits are checked as they happen: a commit may not pass a record of the log whose output is
not delivered yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec
from aiokafka.errors import KafkaConnectionError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from tests.factories import event_bytes

TOPIC = "input_topic"
PARTITIONS = (TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1))
# Records a poll hands out per partition: small, so that several batches are in flight.
RECORDS_PER_POLL = 3
# Every fourth record is not an event, so dead letters take part too.
INVALID_EVERY = 4
JUNK = b"junk "
SETTINGS = Settings(
    retry_backoff_initial_ms=0, retry_backoff_max_ms=0, commit_interval_ms=0,
)


async def never() -> None:
    """What a dead process's client calls do: never return."""
    await asyncio.Event().wait()


def identity(value: bytes | None) -> str:
    """Which input an output is for: the event id of a prediction, or the junk a dead letter carries."""
    assert value is not None
    if value.startswith(JUNK):
        return value[len(JUNK):].decode()
    return msgspec.json.decode(value)["event_id"]  # an event or its prediction


@dataclass


class PartitionLog:
    tp: TopicPartition
    start: int = 0
    records: dict[int, ConsumerRecord] = field(default_factory=dict)
    end: int = 0
    epoch: int = 0  # bumped by a truncation: what is written after it at old offsets is new

    def append(self) -> ConsumerRecord:
        offset = self.end
        name = f"{self.tp.partition}.{self.epoch}.{offset}"
        if offset % INVALID_EVERY == INVALID_EVERY - 1:
            value = JUNK + name.encode()
        else:  # one user a partition: a batch's predictions go out as one record batch
            value = event_bytes(user_id=self.tp.partition, event_id=name)
        record = ConsumerRecord(
            topic=self.tp.topic, partition=self.tp.partition, offset=offset, timestamp=0, timestamp_type=0, key=b"1",
            value=value, checksum=None, serialized_key_size=1, serialized_value_size=len(value), headers=(),
        )
        self.records[offset] = record
        self.end += 1
        return record

    def truncate(self, keep: int) -> None:
        """Drop every record from `start + keep` on, as an unclean leader election does."""
        cut = min(self.end, self.start + keep)
        for offset in range(cut, self.end):
            del self.records[offset]
        self.end = cut
        self.epoch += 1

    def delete_before(self, count: int) -> None:
        """Move the log's start forward, as retention or delete-records does."""
        new_start = min(self.end, self.start + count)
        for offset in range(self.start, new_start):
            del self.records[offset]
        self.start = new_start


class Cluster:
    def __init__(self) -> None:
        self.logs = {tp: PartitionLog(tp) for tp in PARTITIONS}
        self.committed: dict[TopicPartition, int] = {}
        self.delivered: set[str] = set()
        self.violations: list[str] = []
        # A truncation followed by new records at the same offsets is invisible to a consumer
        # without leader-epoch checks (aiokafka has none): records written below the reader's
        # position before it has noticed are never read, and records written below a committed
        # offset the truncation left past the end are lost to a restart before the next commit.
        # The model excuses exactly those; everything else must be delivered.
        self.reader: ModelConsumer | None = None
        self.unseen_truncation: set[TopicPartition] = set()
        self.stale_commit: set[TopicPartition] = set()
        self.at_risk: set[str] = set()
        self.excused: set[str] = set()
        self.epochs: dict[str, int] = {}
        self.fail_next_send = 0

    def produce(self, tp: TopicPartition, count: int) -> None:
        for _ in range(count):
            record = self.logs[tp].append()
            position = self.reader.positions.get(tp) if self.reader is not None else None
            if tp in self.unseen_truncation and position is not None and record.offset < position:
                self.excused.add(record_name(record))
            elif tp in self.stale_commit and record.offset < self.committed[tp]:
                self.at_risk.add(record_name(record))

    def truncate(self, tp: TopicPartition, keep: int) -> None:
        log = self.logs[tp]
        log.truncate(keep)
        if self.committed.get(tp, 0) > log.end:
            self.stale_commit.add(tp)
        position = self.reader.positions.get(tp) if self.reader is not None else None
        if position is not None and position > log.end:
            self.unseen_truncation.add(tp)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            missing = [
                o for o, r in self.logs[tp].records.items()
                if o < offset and record_name(r) not in self.delivered and record_name(r) not in self.excused
            ]
            if missing:
                self.violations.append(f"commit {tp.partition}@{offset} passes undelivered offsets {sorted(missing)}")
            self.committed[tp] = offset
            self.stale_commit.discard(tp)
            self.at_risk = {name for name in self.at_risk if not _read_again_from(name, tp, offset)}

    def instance_lost(self) -> None:
        self.excused |= self.at_risk

    def undelivered(self) -> list[str]:
        return sorted(
            record_name(record)
            for log in self.logs.values()
            for record in log.records.values()
            if record_name(record) not in self.delivered and record_name(record) not in self.excused
        )


def record_name(record: ConsumerRecord) -> str:
    return identity(record.value)


def _read_again_from(name: str, tp: TopicPartition, offset: int) -> bool:
    """Whether the record `name` is of `tp` at or past `offset`, so a restart reads it."""
    partition, _epoch, record_offset = (int(part) for part in name.split("."))
    return partition == tp.partition and record_offset >= offset


class ModelConsumer:
    """The part of AIOKafkaConsumer the service uses, over the cluster's logs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.positions: dict[TopicPartition, int | None] = {}
        self.paused: set[TopicPartition] = set()
        self.fail_next_committed = 0
        self.dead = False

    def assign_all(self) -> None:
        self.positions = {tp: self.cluster.committed.get(tp) for tp in PARTITIONS}
        self.cluster.reader = self
        # A reader that starts at a committed offset a truncation left past the end has not
        # seen the truncation either.
        self.cluster.unseen_truncation = {
            tp for tp, position in self.positions.items() if position is not None and position > self.cluster.logs[tp].end
        }

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None = None):
        await asyncio.sleep(0)
        if self.dead:
            await never()
        readable = {tp: position for tp, position in self.positions.items() if tp not in self.paused}
        # A position with nothing to read at is raised before any record moves a position on.
        for tp, position in readable.items():
            log = self.cluster.logs[tp]
            if position is None:
                raise NoOffsetForPartitionError(tp)
            if not log.start <= position <= log.end:
                self.cluster.unseen_truncation.discard(tp)
                raise OffsetOutOfRangeError({tp: position})
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        for tp, position in readable.items():
            assert position is not None
            log = self.cluster.logs[tp]
            taken = [log.records[o] for o in range(position, min(log.end, position + RECORDS_PER_POLL))]
            if taken:
                batch[tp] = taken
                self.positions[tp] = taken[-1].offset + 1
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(0)
        if self.dead:
            await never()
        self.cluster.commit(offsets)

    async def committed(self, partition: TopicPartition) -> int | None:
        await asyncio.sleep(0)
        if self.dead:
            await never()
        if self.fail_next_committed:
            self.fail_next_committed -= 1
            raise KafkaConnectionError("the group coordinator is away (model)")
        return self.cluster.committed.get(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if not self.dead:
            self.positions[partition] = offset
            if offset <= self.cluster.logs[partition].end:
                self.cluster.unseen_truncation.discard(partition)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool:
        for tp in partitions:
            self.seek(tp, self.cluster.logs[tp].start)
        return True

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.cluster.logs[tp].start for tp in partitions}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.cluster.logs[tp].end for tp in partitions}

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)
