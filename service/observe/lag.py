"""Consumer lag per assigned partition, read from the consumer at scrape time."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

# A position not yet known (just assigned, being reset) is skipped rather than waited for: a
# scrape must not hang on the consumer.
POSITION_WAIT_S = 0.2


class LagSource(Protocol):
    """The part of AIOKafkaConsumer lag is computed from."""

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def position(self, partition: TopicPartition) -> int: ...


async def partition_lag(consumer: LagSource) -> dict[tuple[str, int], int]:
    """High watermark minus position for each assigned partition both are known for.

    The high watermark comes with each fetch response, so a partition nothing was fetched from
    yet has none and is left out. The position is the next offset the loop will be handed, so
    records in the batch in hand no longer count as lag.
    """
    lag = {}
    for tp in sorted(consumer.assignment()):
        try:
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await asyncio.wait_for(consumer.position(tp), POSITION_WAIT_S)
        # Revoked meanwhile (position() raises IllegalStateError, highwater() asserts), or not
        # positioned yet: this scrape leaves the partition out.
        except (TimeoutError, IllegalStateError, AssertionError):
            continue
        lag[(tp.topic, tp.partition)] = max(0, highwater - position)
    return lag
