"""The consume → validate → predict → publish → commit loop.

Stages overlap: while Kafka acknowledges batch N, the loop already fetches and processes batch
N+1; batch N's offsets are committed once everything it produced is acknowledged, in order, at
most every COMMIT_INTERVAL_MS (and whenever the loop goes idle). Nothing is committed before it
is delivered, so a crash anywhere means a replay, never a loss.

The work in hand (the batch being processed and those awaiting acknowledgement) can always be
given up: a rebalance or a shutdown that cannot wait any longer abandons it uncommitted, and
a failed delivery rewinds every partition to its last commit, so the records are read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from model.artifact import PurchaseModel
from offline_store.features import FeatureStore
from service.batch import predict_events, split_batch
from service.offsets import Repositionable, next_offsets, recover_lost_positions, rewind_to_committed, start_at_beginning
from service.publish import Pending, Publisher, RecordSink
from service.retry import (
    Backoff,
    ShutdownRequested,
    describe_error,
    is_transient,
    log_retry,
    pause_unless_stopped,
    retry_until_done,
)
from service.stats import ServiceStats

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 15.0
# How long abandoned work may take to notice its cancellation.
ABANDON_WAIT_S = 2.0
# Batches awaiting acknowledgement while the next ones are processed; more only adds memory.
MAX_IN_FLIGHT = 4
# The poll's wait while acknowledgements are due.
ACK_POLL_MS = 2


class RecordSource(Repositionable, Protocol):
    """The part of AIOKafkaConsumer the loop uses."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


@dataclass
class InFlight:
    pending: Pending
    offsets: dict[TopicPartition, int]
    events: int
    predictions: int
    dead_letters: int
    started: float  # perf_counter, for the batch time
    taken_at: float  # monotonic, for the age of the work in hand
    input_ms: list[int]  # the predicted events' Kafka timestamps, for the end-to-end latency
    enqueued: float  # perf_counter, for the publish stage


class PredictionLoop:
    def __init__(
        self,
        settings: Settings,
        source: RecordSource,
        sink: RecordSink,
        feature_store: FeatureStore,
        model: PurchaseModel,
        stop: asyncio.Event,
        stats: ServiceStats | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._feature_store = feature_store
        self._model = model
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        self.stats = ServiceStats() if stats is None else stats
        self._publisher = Publisher(sink, settings.output_topic, settings.dlq_topic, self.stats)
        self._processing: asyncio.Task | None = None
        self._in_flight: deque[InFlight] = deque()
        self._acknowledged: dict[TopicPartition, int] = {}  # delivered, not yet committed
        self._last_commit = time.monotonic()
        self._settling = asyncio.Lock()  # the loop and a rebalance may both settle and commit
        self._committing: asyncio.Task | None = None
        self._failures = 0  # delivery failures in a row, for the backoff
        self._rewind_needed = False

    async def run(self) -> None:
        """Process until `stop` is set, then settle and commit what is in flight."""
        while not self._stop.is_set():
            if self._rewind_needed and not await self._rewind():
                continue
            # While acknowledgements are due, poll briefly: new records and acknowledgements are
            # both picked up within a couple of milliseconds, and neither waits for the other.
            records = await self._poll(timeout_ms=ACK_POLL_MS if self._in_flight else self._settings.poll_timeout_ms)
            if records:
                await self._run_batch(records)
            try:
                async with self._settling:
                    await self._settle(wait_all=False)
                    self._commit_in_background(force=not records)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._recover_from_failed_delivery(exc)
        if not await self.drain(timeout_s=None):
            log.warning("stopped before all in hand was acknowledged and committed; the rest is processed again on the next start")

    async def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            return await self._source.getmany(timeout_ms=timeout_ms, max_records=self._settings.batch_max_records)
        except NoOffsetForPartitionError as exc:
            await start_at_beginning(self._source, exc.args[0])
            return {}
        except OffsetOutOfRangeError as exc:
            await recover_lost_positions(self._source, exc.args[0], self.stats)
            return {}
        finally:
            self.stats.mark_polled()  # alive, whether or not records came

    async def _run_batch(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Process one batch as a task of its own, so a rebalance or shutdown can abandon it."""
        batch = asyncio.create_task(self.process(records))
        self._processing = batch
        try:
            await asyncio.wait({batch})
        finally:
            self._processing = None
            if not batch.done():
                batch.cancel()  # run() itself was cancelled
        if batch.cancelled():
            self.stats.record_abandoned()
            return
        try:
            self._in_flight.append(batch.result())
            self.stats.set_batch_in_hand(self._in_flight[0].taken_at)
        except ShutdownRequested as exc:
            log.warning("stopped while %s; the batch in hand was not committed and will be processed on the next start", exc)

    async def process(self, by_partition: dict[TopicPartition, list[ConsumerRecord]]) -> InFlight:
        """Validate, predict and hand the outputs to the producer; acknowledgement comes later."""
        started, taken_at = time.perf_counter(), time.monotonic()
        if len(by_partition) == 1:
            records = next(iter(by_partition.values()))
        else:
            records = [record for partition_records in by_partition.values() for record in partition_records]
        batch = split_batch(records)
        parsed = time.perf_counter()
        self.stats.observe_stage("parse", parsed - started)
        for record, error in batch.invalid:
            self.stats.record_dead_letter(error.kind, record.topic, record.partition, record.offset)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, error.kind, error.reason)
        events = [event for _, event in batch.valid]
        predictions = await retry_until_done(
            lambda: predict_events(events, self._feature_store, self._model, self.stats),
            dependency="MySQL", action="looking up features", stop=self._stop, backoff=self._backoff,
            on_retry=self.stats.record_retry,
        )
        sources = [record for record, _ in batch.valid]
        enqueued = time.perf_counter()
        pending = await self._publisher.enqueue(list(zip(sources, predictions, strict=True)), batch.invalid)
        return InFlight(
            pending, next_offsets(by_partition), len(records), len(predictions), len(batch.invalid),
            started, taken_at, [record.timestamp for record in sources], enqueued,
        )

    async def _settle(self, wait_all: bool) -> None:
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
            self._acknowledged.update(oldest.offsets)
            self._failures = 0
            self._account(oldest)
        self.stats.set_batch_in_hand(self._in_flight[0].taken_at if self._in_flight else None)

    def _account(self, batch: InFlight) -> None:
        now = time.perf_counter()
        self.stats.observe_stage("publish", now - batch.enqueued)
        self.stats.record_batch(batch.events, batch.predictions, batch.dead_letters, now - batch.started)
        if batch.input_ms:
            self.stats.observe_latencies(time.time() - np.array(batch.input_ms) / 1000)

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
            if not is_transient(exc):
                raise
            # Not committed yet: they go with the next commit, unless newer offsets do first.
            for tp, offset in offsets.items():
                self._acknowledged.setdefault(tp, offset)
            error = "no answer" if isinstance(exc, TimeoutError) else describe_error(exc)
            log.warning(
                "Kafka unavailable while committing offsets: %s; they go with the next commit", error, extra={"dependency": "Kafka"}
            )
            self.stats.record_retry("Kafka")
            return False
        finally:
            self._last_commit = time.monotonic()
        self.stats.observe_stage("commit", time.perf_counter() - started)
        return True

    async def _recover_from_failed_delivery(self, exc: BaseException) -> None:
        """Drop the work in flight, back off, and read it again from the last commit.

        Until the rewind succeeds nothing more is read: a later commit would otherwise pass
        over the records whose outputs were lost.
        """
        self._drop_in_flight()
        self._rewind_needed = True
        await self._back_off("publishing (the work in flight is read again from the last commit)", exc)

    async def _rewind(self) -> bool:
        try:
            await rewind_to_committed(self._source)
        except Exception as exc:
            if not is_transient(exc):
                raise
            await self._back_off("rewinding to the last commit", exc)
            return False
        self._rewind_needed = False
        return True

    async def _back_off(self, action: str, exc: BaseException) -> None:
        self._failures += 1
        wait_s = self._backoff.delay(self._failures)
        log_retry("Kafka", action, self._failures, exc, wait_s)
        self.stats.record_retry("Kafka")
        await pause_unless_stopped(self._stop, wait_s)

    def _drop_in_flight(self) -> None:
        self._in_flight.clear()
        self._acknowledged = {}

    async def drain(self, timeout_s: float | None) -> bool:
        """Finish the work in hand and commit it; False (nothing more committed) if that takes
        longer than `timeout_s` or fails."""
        try:
            async with asyncio.timeout(timeout_s):
                if self._processing is not None:
                    await asyncio.wait({self._processing})
                async with self._settling:
                    await self._settle(wait_all=True)
                    committed = await self._commit_now()
        except TimeoutError:
            return False
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not finish the work in hand: %s", describe_error(exc))
            return False
        return committed

    async def close(self) -> None:
        await self._publisher.close()

    async def abandon(self, why: str) -> None:
        """Give up the work in hand before it commits; its records will be read again."""
        batch = self._processing
        if batch is None and not self._in_flight:
            return
        log.warning("abandoning the batch in hand uncommitted (%s); it will be processed again", why)
        self._drop_in_flight()
        if batch is not None and not batch.done():
            batch.cancel()
            await asyncio.wait({batch}, timeout=ABANDON_WAIT_S)


class FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Lets the work in hand finish and commit before its partitions move to another instance,
    so a scale-out or scale-in does not replay work that was already published.

    The wait is bounded by what is left of the group's rebalance timeout (Settings.revoke_wait_s):
    past it the instance would be evicted while still working, and its late commit refused, so
    the work is abandoned instead and its records go to whoever owns them next.
    """

    def __init__(self, loop: PredictionLoop, max_wait_s: float) -> None:
        self._loop = loop
        self._max_wait_s = max_wait_s

    async def on_partitions_revoked(self, revoked) -> None:
        if not await self._loop.drain(self._max_wait_s):
            await self._loop.abandon(f"the rebalance cannot wait longer than {self._max_wait_s:.1f} s")
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
