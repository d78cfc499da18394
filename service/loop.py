"""The consume → validate → predict → hand over loop.

Stages overlap: while Kafka takes batch N's outputs, the loop already fetches and processes
batch N+1. How outputs reach Kafka and how progress is committed is the `Guarantee`'s part
(service/guarantee.py): at least once, or exactly once with transactions.

The batch being processed can always be given up: a rebalance or a shutdown that cannot wait
any longer abandons it uncommitted, so its records are read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from model.artifact import PurchaseModel
from offline_store.features import FeatureStore
from service.batch import predict_events, split_batch
from service.guarantee import Guarantee, Records, Work
from service.offsets import next_offsets, recover_lost_positions, start_at_beginning
from service.retry import Backoff, ShutdownRequested, describe_error, is_transient, retry_until_done
from service.source import RecordSource
from service.stats import ServiceStats

log = logging.getLogger(__name__)

# How long abandoned work may take to notice its cancellation.
ABANDON_WAIT_S = 2.0
# The poll's wait while acknowledgements are due.
ACK_POLL_MS = 2


class PredictionLoop:
    def __init__(
        self,
        settings: Settings,
        source: RecordSource,
        guarantee: Guarantee,
        feature_store: FeatureStore,
        model: PurchaseModel,
        stop: asyncio.Event,
        stats: ServiceStats,
    ) -> None:
        self._settings = settings
        self._source = source
        self.guarantee = guarantee
        self._feature_store = feature_store
        self._model = model
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        self.stats = stats
        self._processing: asyncio.Task | None = None

    async def run(self) -> None:
        """Process until `stop` is set, then finish and commit what is in hand."""
        while not self._stop.is_set():
            await self.turn()
        if not await self.drain(timeout_s=None):
            log.warning("stopped before all in hand was delivered and committed; the rest is processed again on the next start")

    async def turn(self) -> None:
        """One poll, the batch it brings, and the guarantee's bookkeeping after it."""
        # While acknowledgements are due, poll briefly: new records and acknowledgements are
        # both picked up within a couple of milliseconds, and neither waits for the other.
        waiting = self.guarantee.awaiting_acknowledgement
        records = self.guarantee.admit(await self._poll(ACK_POLL_MS if waiting else self._settings.poll_timeout_ms))
        if records:
            await self._run_batch(records)
        await self.guarantee.between_batches(idle=not records)

    async def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        try:
            return await self._source.getmany(timeout_ms=timeout_ms, max_records=self._settings.batch_max_records)
        except NoOffsetForPartitionError as exc:
            await start_at_beginning(self._source, exc.args[0], self.stats)
            return {}
        except OffsetOutOfRangeError as exc:
            await self._reset_positions(exc.args[0])
            return {}
        finally:
            self.stats.mark_polled()  # alive, whether or not records came

    async def _reset_positions(self, lost: dict[TopicPartition, int]) -> None:
        """Resume where the log now starts, and commit that at once: left at the old offset, a
        restart (or a rewind) would resume there, past records that a truncated or recreated
        log writes at those offsets again."""
        positions = await recover_lost_positions(self._source, lost, self.stats)
        self.guarantee.on_repositioned(positions)
        # A stop request ends the retries: the next start finds the old position gone and resets it again.
        with contextlib.suppress(ShutdownRequested):
            await retry_until_done(
                lambda: self._source.commit(positions), dependency="Kafka", action="committing the reset positions",
                stop=self._stop, backoff=self._backoff, on_retry=self.stats.record_retry,
            )
            self.stats.note_committed(positions)

    async def _run_batch(self, records: Records) -> None:
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
            batch.result()
        except ShutdownRequested as exc:
            log.warning("stopped while %s; the batch in hand was not committed and will be processed on the next start", exc)

    async def process(self, by_partition: Records) -> None:
        """Validate, predict and hand the outputs over; acknowledgement and commit come later."""
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
        work = Work(
            next_offsets(by_partition), list(zip(sources, predictions, strict=True)), batch.invalid,
            len(records), started, taken_at, time.perf_counter(),
        )
        await self.guarantee.hand_over(work)

    async def drain(self, timeout_s: float | None) -> bool:
        """Finish the work in hand and commit it; False (nothing more committed) if that takes
        longer than `timeout_s` or fails."""
        try:
            async with asyncio.timeout(timeout_s):
                if self._processing is not None:
                    await asyncio.wait({self._processing})
                return await self.guarantee.finish()
        except TimeoutError:
            return False
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not finish the work in hand: %s", describe_error(exc))
            return False

    async def close(self) -> None:
        await self.guarantee.close()

    async def abandon(self, why: str) -> None:
        """Give up the work in hand before it commits; its records will be read again."""
        batch = self._processing
        if batch is not None or self.guarantee.holds_work:
            log.warning("abandoning the work in hand uncommitted (%s); it will be processed again", why)
        if batch is not None and not batch.done():
            batch.cancel()
            await asyncio.wait({batch}, timeout=ABANDON_WAIT_S)
        await self.guarantee.abandon()


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
        await self._loop.guarantee.on_revoked(revoked)
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        await self._loop.guarantee.on_assigned(assigned)
