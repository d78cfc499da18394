"""What the loop hands over once a batch is predicted, and the two ways it reaches Kafka.

The loop (service/loop.py) reads, validates and predicts; a `Guarantee` publishes the outputs
and records the progress:
- at_least_once (service/at_least_once.py): one producer; offsets are committed by the
  consumer once the outputs are acknowledged. A crash between the two publishes again.
- exactly_once (service/exactly_once.py): per input partition, outputs and offsets commit in
  one Kafka transaction, so read_committed readers see each event's output once.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from aiokafka.structs import ConsumerRecord, TopicPartition

from events.schema import InvalidEvent, Prediction
from service.stats import ServiceStats

Records = dict[TopicPartition, list[ConsumerRecord]]


@dataclass
class Work:
    """One predicted batch: every record of it became a prediction or a dead letter."""

    offsets: dict[TopicPartition, int]  # per partition, one past the last record handled
    predictions: list[tuple[ConsumerRecord, Prediction]]
    invalid: list[tuple[ConsumerRecord, InvalidEvent]]
    events: int
    started: float  # perf_counter, for the batch time
    taken_at: float  # monotonic, for the age of the work in hand
    enqueued: float  # perf_counter, for the publish stage

    def cap_offset(self, tp: TopicPartition, position: int) -> None:
        """Commit no further than `position` for `tp`: its log was reset under this work."""
        if self.offsets.get(tp, -1) > position:
            self.offsets[tp] = position


class Guarantee(Protocol):
    def admit(self, records: Records) -> Records:
        """The polled records this instance may process now."""

    @property
    def awaiting_acknowledgement(self) -> bool:
        """Whether outputs are with Kafka whose answer the loop should pick up soon."""

    @property
    def holds_work(self) -> bool:
        """Whether anything handed over is not committed yet."""

    async def hand_over(self, work: Work) -> None:
        """Give the outputs to Kafka; acknowledgement and commit come later."""

    async def between_batches(self, idle: bool) -> None:
        """Take in acknowledgements, commit what is due, recover from failed deliveries."""

    async def finish(self) -> bool:
        """Wait until everything handed over is delivered and committed; False if it could not be."""

    async def abandon(self) -> None:
        """Give up everything not yet committed; its records will be read again."""

    def on_repositioned(self, positions: Mapping[TopicPartition, int]) -> None:
        """A partition's log was truncated or recreated under it, and reading resumes at
        `positions`: no commit of work read before may pass that position."""

    async def on_revoked(self, partitions: Collection[TopicPartition]) -> None: ...

    async def on_assigned(self, partitions: Collection[TopicPartition]) -> None: ...

    async def close(self) -> None: ...


def account_delivered(stats: ServiceStats, work: Work) -> None:
    """Count work whose outputs are delivered: its time, and each event's end-to-end latency
    from its input record's Kafka timestamp."""
    now = time.perf_counter()
    stats.observe_stage("publish", now - work.enqueued)
    stats.record_batch(work.events, len(work.predictions), len(work.invalid), now - work.started)
    if work.predictions:
        input_ms = np.fromiter((record.timestamp for record, _ in work.predictions), np.float64, len(work.predictions))
        stats.observe_latencies(time.time() - input_ms / 1000)
