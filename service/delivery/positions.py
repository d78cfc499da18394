"""The consumer's position: where each partition resumes, and what to do when a committed one is gone.

Only service/delivery/ moves the position (polls, seeks, pauses, rewinds and commits).

The consumer runs with `auto_offset_reset="none"`, so Kafka never moves a position silently.
A partition with no committed offset (a new group) starts at its beginning, as "earliest"
would; a committed offset that no longer exists (retention deleted the records during a long
outage) is a loss, and it is logged at ERROR and counted instead of being skipped quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiokafka.structs import ConsumerRecord, TopicPartition

from service.observe.stats import ServiceStats

log = logging.getLogger(__name__)


class RecordSource(Protocol):
    """The part of AIOKafkaConsumer the service uses, so tests can stand in for it."""

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> bool: ...

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    def assignment(self) -> set[TopicPartition]: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


def next_offsets(by_partition: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> dict[TopicPartition, int]:
    """Per partition, the offset to resume from: one past the last record handled (a fetch
    returns each partition's records in offset order)."""
    return {tp: records[-1].offset + 1 for tp, records in by_partition.items() if records}


def name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


async def start_at_beginning(consumer: RecordSource, partition: TopicPartition, stats: ServiceStats) -> None:
    if partition in stats.committed_partitions:
        # Its offset was committed by this very process: the broker dropped it with the topic
        # (deleted and created again) or with the group's expired offsets.
        stats.record_position_reset()
        log.warning(
            "%s: its committed offset is gone (the topic was deleted and created again, or the group's offsets"
            " expired); starting at its beginning", name(partition),
            extra={"topic": partition.topic, "partition": partition.partition},
        )
    else:
        log.info("%s has no committed offset in this group: starting at its beginning", name(partition))
    await consumer.seek_to_beginning(partition)


async def recover_lost_positions(
    consumer: RecordSource, positions: Mapping[TopicPartition, int], stats: ServiceStats
) -> dict[TopicPartition, int]:
    """Resume each partition at its oldest record, saying how many offsets were lost on the way;
    returns where each partition now resumes."""
    partitions = list(positions)
    resumed: dict[TopicPartition, int] = {}
    earliest = await consumer.beginning_offsets(partitions)
    latest = await consumer.end_offsets(partitions)
    for tp, position in positions.items():
        start = earliest[tp]
        if position < start:
            skipped = start - position
            stats.record_skipped(skipped)
            log.error(
                "%s: offset %d was deleted before it was read (retention outran the service);"
                " %d offsets were skipped, resuming at %d",
                name(tp), position, skipped, start,
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position, "skipped_offsets": skipped},
            )
        else:
            log.error(
                "%s: offset %d is past the end of the log (%d): the topic was recreated or truncated;"
                " resuming at its beginning, %d",
                name(tp), position, latest[tp], start,
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position},
            )
        stats.record_position_reset()
        consumer.seek(tp, start)
        resumed[tp] = start
    return resumed


async def rewind_to_committed(consumer: RecordSource) -> None:
    """Move every assigned partition back to its last committed offset (its start if none),
    so that whatever was read after it is read again."""
    for tp in consumer.assignment():
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
