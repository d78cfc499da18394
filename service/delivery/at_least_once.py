"""At-least-once delivery: one producer, offsets committed by the consumer after the acknowledgement.

While Kafka acknowledges batch N, the loop already fetches and processes batch N+1; batch N's
offsets are committed once everything it produced is acknowledged, in order, at most every
COMMIT_INTERVAL_MS (and whenever the loop goes idle). Nothing is committed before it is
delivered, so a crash anywhere means a replay, never a loss; but outputs published before a
crash and after the last commit are published again.

A failed delivery rewinds every partition to its last commit, so the records are read again.
Until that rewind has succeeded nothing polled is processed: a batch read past the lost ones
would otherwise be committed while they are still to be redone, and a crash (or a second
failure) then would skip them for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import TopicPartition

from config import Settings
from service.delivery.guarantee import Guarantee, Polled, Records, Work, account_delivered
from service.delivery.outputs import Pending, RecordSink
from service.delivery.positions import RecordSource, rewind_to_committed
from service.delivery.publisher import Publisher
from service.failures import describe_error, retriable
from service.observe.stats import ServiceStats
from service.retry import log_retry, pause_unless_stopped

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 15.0
# Batches awaiting acknowledgement while the next ones are processed; more only adds memory.
MAX_IN_FLIGHT = 4
# The poll's wait while acknowledgements are due: new records and acknowledgements are both
# picked up within a couple of milliseconds, and neither waits for the other.
ACK_POLL_MS = 2


@dataclass
class InFlight:
    work: Work
    pending: Pending

    @property
    def polled_mono_s(self) -> float:
        return self.work.polled_mono_s


class AtLeastOnce(Guarantee):
    def __init__(
        self, settings: Settings, source: RecordSource, sink: RecordSink, stats: ServiceStats, stop: asyncio.Event
    ) -> None:
        super().__init__(settings, source, stats, stop)
        self._publisher = Publisher(sink, settings.output_topic, settings.dlq_topic, stats)
        self._in_flight: deque[InFlight] = deque()
        self._acknowledged: dict[TopicPartition, int] = {}  # delivered, not yet committed
        self._last_commit = time.monotonic()
        self._settling = asyncio.Lock()  # the loop and a rebalance may both take acknowledgements and commit
        self._committing: asyncio.Task[Any] | None = None
        self._failures = 0  # delivery failures in a row, for the backoff
        self._rewind_needed = False

    def _admit(self, records: Records) -> Polled:
        # Polled after the lost work, before the rewind: the rewind reads them again.
        return Polled() if self._rewind_needed else Polled(records)

    def _poll_timeout_ms(self) -> int:
        return ACK_POLL_MS if self._in_flight else self._settings.poll_timeout_ms

    @property
    def holds_work(self) -> bool:
        return bool(self._in_flight or self._acknowledged)

    async def hand_over(self, work: Work) -> None:
        pending = await self._publisher.enqueue(work.predictions, work.invalid)
        self._in_flight.append(InFlight(work, pending))
        self._stats.set_batch_in_hand(self._in_flight[0].polled_mono_s)

    async def between_batches(self, idle: bool) -> None:
        if self._rewind_needed:
            await self._rewind()
            return
        try:
            async with self._settling:
                await self._take_acknowledged(wait_all=False)
                self._commit_in_background(force=idle)
        except Exception as exc:
            if not retriable(exc):
                raise
            await self._recover_from_failed_delivery(exc)

    async def finish(self) -> bool:
        async with self._settling:
            await self._take_acknowledged(wait_all=True)
            return await self._commit_now()

    async def abandon(self) -> None:
        for batch in self._in_flight:
            batch.pending.discard()
        self._in_flight.clear()
        self._acknowledged = {}

    def _on_repositioned(self, positions: Mapping[TopicPartition, int]) -> None:
        for tp, position in positions.items():
            for batch in self._in_flight:
                batch.work.cap_offset(tp, position)
            if self._acknowledged.get(tp, -1) > position:
                self._acknowledged[tp] = position

    async def close(self) -> None:
        await self._publisher.close()

    async def _take_acknowledged(self, wait_all: bool) -> None:
        """Take in the batches Kafka has acknowledged, oldest first, so their offsets become
        committable; wait for the oldest only when `wait_all` or when too many are in flight."""
        while self._in_flight:
            oldest = self._in_flight[0]
            if not wait_all and len(self._in_flight) <= MAX_IN_FLIGHT and not oldest.pending.acknowledged():
                return
            await self._publisher.settle(oldest.pending)
            if not self._in_flight or self._in_flight[0] is not oldest:
                return  # abandoned by a rebalance meanwhile
            self._in_flight.popleft()
            self._acknowledged.update(oldest.work.offsets)
            self._failures = 0
            account_delivered(self._stats, oldest.work)
        self._stats.set_batch_in_hand(self._in_flight[0].polled_mono_s if self._in_flight else None)

    def _commit_in_background(self, force: bool) -> None:
        """Start committing what is acknowledged, when due, without the loop waiting for it:
        a commit's round trip would otherwise hold up every record that arrives meanwhile."""
        running = self._committing
        if running is not None:
            if not running.done():
                return
            self._committing = None
            running.result()  # a bug or a set-up error surfaces here; outages are handled inside
        if not self._acknowledged:
            return
        if not force and time.monotonic() - self._last_commit < self._settings.commit_interval_ms / 1000:
            return
        offsets, self._acknowledged = self._acknowledged, {}
        self._committing = asyncio.create_task(self._commit_offsets(offsets))

    async def _commit_now(self) -> bool:
        """Wait for the commit under way, then commit the rest; False if Kafka could not take it."""
        if self._committing is not None:
            running, self._committing = self._committing, None
            await asyncio.wait({running})
            running.result()
        if not self._acknowledged:
            return True
        offsets, self._acknowledged = self._acknowledged, {}
        return await self._commit_offsets(offsets)

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> bool:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._source.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another instance before the commit: it replays from the
            # last commit, which is the at-least-once contract. Nothing is lost.
            log.warning("could not commit %s after a rebalance; the new owner will process them again: %s", offsets, exc)
            return False
        except Exception as exc:
            if not retriable(exc):
                raise
            # Not committed yet: they go with the next commit, unless newer offsets do first.
            for tp, offset in offsets.items():
                self._acknowledged.setdefault(tp, offset)
            error = "no answer" if isinstance(exc, TimeoutError) else describe_error(exc)
            log.warning(
                "Kafka unavailable while committing offsets: %s; they go with the next commit", error, extra={"dependency": "Kafka"}
            )
            self._stats.record_retry("Kafka")
            return False
        finally:
            self._last_commit = time.monotonic()
        self._stats.observe_stage("commit", time.perf_counter() - started)
        self._stats.note_committed(offsets)
        return True

    async def _recover_from_failed_delivery(self, exc: BaseException) -> None:
        """Drop the work in flight, back off, and read it again from the last commit."""
        await self.abandon()
        self._rewind_needed = True
        if not await self._back_off("publishing (the work in flight is read again from the last commit)", exc):
            await self._rewind()

    async def _rewind(self) -> None:
        try:
            await rewind_to_committed(self._source)
        except Exception as exc:
            if not retriable(exc):
                raise
            await self._back_off("rewinding to the last commit", exc)
            return
        self._rewind_needed = False

    async def _back_off(self, action: str, exc: BaseException) -> bool:
        """Wait before the next try; True if the service was stopped meanwhile."""
        self._failures += 1
        wait_s = self._backoff.delay(self._failures)
        log_retry("Kafka", action, self._failures, exc, wait_s)
        self._stats.record_retry("Kafka")
        return await pause_unless_stopped(self._stop, wait_s)
