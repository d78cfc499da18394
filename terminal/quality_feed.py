"""Follows QUALITY_TOPIC for `consumer.py --live`, keeping the quality monitor's newest snapshot.

Its own consumer, beside the one reading predictions, so a quality topic that does not exist yet
(no monitor has run) or that this principal may not read costs the view its quality table, never
its predictions: the reason is shown in the table's place and the topic is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from config import Settings
from errors import SetupError
from messaging.kafka_security import kafka_client_options, start_kafka_client
from terminal.quality_view import QualityState

# Snapshots are small and published every few seconds: starting a few records before the end
# shows the newest at once, even when the last records are transaction markers, not snapshots.
LOOKBACK_RECORDS = 10
POLL_MS = 250
ASSIGNMENT_WAIT_S = 10.0
RETRY_S = 5.0


class QualityFeed:
    """`follow` keeps `state` on the newest snapshot until `stop` is set."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.state = QualityState(settings.quality_topic)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._follow_once(stop)
            except (KafkaError, SetupError) as exc:
                self.state.problem = f"cannot read it: {exc}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)

    async def _follow_once(self, stop: asyncio.Event) -> None:
        settings = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id="prediction-live-view-quality",
            group_id=None,  # a reader: it joins no group and commits nothing
            enable_auto_commit=False,
            auto_offset_reset="latest",
            isolation_level="read_committed",  # the monitor's committed snapshots only
            **kafka_client_options(settings),
        )
        await start_kafka_client(consumer, settings)
        try:
            # Subscribing to a topic that does not exist would have the broker create it with
            # defaults the monitor did not choose; wait for the monitor to create it instead.
            if settings.quality_topic not in await consumer.topics():
                self.state.problem = "the topic does not exist yet: is quality_monitor.py running?"
                return
            consumer.subscribe([settings.quality_topic])
            partitions = await _assigned(consumer, stop)
            if not partitions:
                self.state.problem = f"no partition of the topic assigned within {ASSIGNMENT_WAIT_S:.0f} s"
                return
            await _seek_near_end(consumer, partitions)
            self.state.problem = None
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for records in batches.values():
                    for record in records:
                        self.state.offer(record.value or b"")
        finally:
            await consumer.stop()


async def _assigned(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> set[TopicPartition]:
    """The topic's partitions, once the group-less consumer has taken them all (or none, at the deadline or stop)."""
    deadline = asyncio.get_running_loop().time() + ASSIGNMENT_WAIT_S
    while not stop.is_set() and asyncio.get_running_loop().time() < deadline:
        partitions: set[TopicPartition] = consumer.assignment()
        if partitions:
            return partitions
        await asyncio.sleep(0.05)
    return set()


async def _seek_near_end(consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
    starts = await consumer.beginning_offsets(list(partitions))
    ends = await consumer.end_offsets(list(partitions))
    for tp in partitions:
        consumer.seek(tp, max(starts[tp], ends[tp] - LOOKBACK_RECORDS))
