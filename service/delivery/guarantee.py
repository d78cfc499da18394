"""The delivery interface: what the loop polls, what it hands over once a batch is predicted, and
the two ways outputs and progress reach Kafka.

A `Guarantee` is the one owner of the consumer's position: it polls, and it alone seeks,
pauses, rewinds and commits. The loop (service/pipeline/loop.py) polls through it, validates
and predicts, and hands the outputs back as `Work`:
- at_least_once (at_least_once.py): one producer; offsets are committed by the consumer once
  the outputs are acknowledged. A crash between the two publishes again.
- exactly_once (exactly_once.py): per input partition, outputs and offsets commit in one Kafka
  transaction, so read_committed readers see each event's output once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from errors import ShutdownRequested
from events.schema import InvalidEvent, Prediction
from service.delivery.positions import RecordSource, recover_lost_positions, start_at_beginning
from service.observe.stats import ServiceStats
from service.retry import Backoff, retry_until_done

Records = dict[TopicPartition, list[ConsumerRecord]]


@dataclass
class Polled:
    """One poll's records that may be processed, and the delivery's generation of each partition
    when they were read: work read before a partition was rewound carries an older one, and is
    dropped at hand-over instead of being committed past the records to redo."""

    records: Records = field(default_factory=dict)
    generations: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class Work:
    """One predicted batch: every record of it became a prediction or a dead letter."""

    offsets: dict[TopicPartition, int]  # per partition, one past the last record handled
    predictions: list[tuple[ConsumerRecord, Prediction]]
    invalid: list[tuple[ConsumerRecord, InvalidEvent]]
    events: int
    started_perf_s: float  # time.perf_counter() when processing began, for the batch time
    polled_mono_s: float  # time.monotonic() when it was polled, for the age of the work in hand
    enqueued_perf_s: float  # time.perf_counter() when handed over, for the publish stage
    generations: dict[TopicPartition, int] = field(default_factory=dict)  # Polled.generations

    def cap_offset(self, tp: TopicPartition, position: int) -> None:
        """Commit no further than `position` for `tp`: its log was reset under this work."""
        if self.offsets.get(tp, -1) > position:
            self.offsets[tp] = position


class Guarantee(ABC):
    """The loop polls, processes what the poll admitted, and hands that over before polling again."""

    def __init__(self, settings: Settings, source: RecordSource, stats: ServiceStats, stop: asyncio.Event) -> None:
        self._settings = settings
        self._source = source
        self._stats = stats
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)

    async def poll(self) -> Polled:
        """The next records to process, or none within the poll's wait. A partition whose
        position is missing or gone is repositioned here, and the poll comes back empty."""
        try:
            records = await self._source.getmany(timeout_ms=self._poll_timeout_ms(), max_records=self._settings.batch_max_records)
        except NoOffsetForPartitionError as exc:
            await start_at_beginning(self._source, exc.args[0], self._stats)
            return Polled()
        except OffsetOutOfRangeError as exc:
            await self._reset_positions(exc.args[0])
            return Polled()
        finally:
            self._stats.mark_polled()  # alive, whether or not records came
        return self._admit(records)

    @property
    @abstractmethod
    def holds_work(self) -> bool:
        """Whether anything handed over is not committed yet."""

    @abstractmethod
    async def hand_over(self, work: Work) -> None:
        """Give the outputs to Kafka; acknowledgement and commit come later."""

    @abstractmethod
    async def between_batches(self, idle: bool) -> None:
        """Take in acknowledgements, commit what is due, recover from failed deliveries."""

    @abstractmethod
    async def finish(self) -> bool:
        """Wait until everything handed over is delivered and committed; False if it could not be."""

    @abstractmethod
    async def abandon(self) -> None:
        """Give up everything not yet committed; its records will be read again."""

    async def on_revoked(self, partitions: Collection[TopicPartition]) -> None:  # noqa: B027 - a hook, empty by default
        """The group moved these partitions away; the work in hand was finished or abandoned."""

    async def on_assigned(self, partitions: Collection[TopicPartition]) -> None:  # noqa: B027 - a hook, empty by default
        """The group gave these partitions to this instance."""

    @abstractmethod
    async def close(self) -> None: ...

    def _poll_timeout_ms(self) -> int:
        return self._settings.poll_timeout_ms

    def _admit(self, records: Records) -> Polled:
        """Of the polled records, those this instance may process now."""
        return Polled(records)

    @abstractmethod
    def _on_repositioned(self, positions: Mapping[TopicPartition, int]) -> None:
        """A partition's log was truncated or recreated under it, and reading resumes at
        `positions`: no commit of work read before may pass that position."""

    async def _reset_positions(self, lost: dict[TopicPartition, int]) -> None:
        """Resume where the log now starts, and commit that at once: left at the old offset, a
        restart (or a rewind) would resume there, past records that a truncated or recreated
        log writes at those offsets again."""
        positions = await recover_lost_positions(self._source, lost, self._stats)
        self._on_repositioned(positions)
        # A stop request ends the retries: the next start finds the old position gone and resets it again.
        with contextlib.suppress(ShutdownRequested):
            await retry_until_done(
                lambda: self._source.commit(positions), dependency="Kafka", action="committing the reset positions",
                stop=self._stop, backoff=self._backoff, on_retry=self._stats.record_retry,
            )
            self._stats.note_committed(positions)


def account_delivered(stats: ServiceStats, work: Work) -> None:
    """Count work whose outputs are delivered: its time, and each event's end-to-end latency
    from its input record's Kafka timestamp."""
    now = time.perf_counter()
    stats.observe_stage("publish", now - work.enqueued_perf_s)
    stats.record_batch(work.events, len(work.predictions), len(work.invalid), now - work.started_perf_s)
    if work.predictions:
        input_ms = np.fromiter((record.timestamp for record, _ in work.predictions), np.float64, len(work.predictions))
        stats.observe_latencies(time.time() - input_ms / 1000)
