"""The consume → validate → predict → publish → commit loop, one micro-batch at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from model.artifact import PurchaseModel
from offline_store.features import FeatureStore
from service.batch import predict_events, split_batch
from service.offsets import Repositionable, next_offsets, recover_lost_positions, start_at_beginning
from service.publish import Publisher, RecordSink
from service.retry import Backoff, ShutdownRequested, retry_until_done
from service.stats import ServiceStats

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_TIMEOUT_S = 15.0
# How long an abandoned batch may take to notice its cancellation.
ABANDON_WAIT_S = 2.0


class RecordSource(Repositionable, Protocol):
    """The part of AIOKafkaConsumer the loop uses."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class PredictionLoop:
    """Runs batches until `stop` is set. Offsets are committed only after a batch's outputs and
    dead letters are acknowledged by Kafka, so a crash anywhere means a replay, never a loss.

    Each batch runs as a task of its own, so that a rebalance or a shutdown that cannot wait
    any longer can abandon it: a cancelled batch commits nothing, and is replayed.
    """

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
        self._in_hand: asyncio.Task | None = None

    async def run(self) -> None:
        while not self._stop.is_set():
            records = await self._poll()
            if records:
                await self._run_batch(records)

    async def _poll(self) -> list[ConsumerRecord]:
        try:
            by_partition = await self._source.getmany(
                timeout_ms=self._settings.poll_timeout_ms, max_records=self._settings.batch_max_records
            )
        except NoOffsetForPartitionError as exc:
            await start_at_beginning(self._source, exc.args[0])
            return []
        except OffsetOutOfRangeError as exc:
            await recover_lost_positions(self._source, exc.args[0], self.stats)
            return []
        return [record for partition_records in by_partition.values() for record in partition_records]

    async def _run_batch(self, records: Sequence[ConsumerRecord]) -> None:
        batch = asyncio.create_task(self.process(records))
        self._in_hand = batch
        try:
            await asyncio.wait({batch})
        finally:
            self._in_hand = None
            if not batch.done():
                batch.cancel()  # run() itself was cancelled
        if batch.cancelled():
            self.stats.record_abandoned()
            return
        try:
            batch.result()
        except ShutdownRequested as exc:
            log.warning("stopped while %s; the batch in hand was not committed and will be processed on the next start", exc)

    async def wait_for_batch(self, timeout_s: float) -> bool:
        """Wait for the batch in hand to finish; False if it is still running after `timeout_s`."""
        batch = self._in_hand
        if batch is None:
            return True
        await asyncio.wait({batch}, timeout=timeout_s)
        return batch.done()

    async def abandon_batch(self, why: str) -> None:
        """Cancel the batch in hand before it commits; its records will be read again."""
        batch = self._in_hand
        if batch is None or batch.done():
            return
        log.warning("abandoning the batch in hand uncommitted (%s); it will be processed again", why)
        batch.cancel()
        await asyncio.wait({batch}, timeout=ABANDON_WAIT_S)

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        started = time.perf_counter()
        batch = split_batch(records)
        for record, error in batch.invalid:
            self.stats.record_dead_letter(error.kind, record.topic, record.partition, record.offset)
            log.debug(
                "dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, error.kind, error.reason,
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "error_kind": error.kind},
            )
        events = [event for _, event in batch.valid]
        predictions = await self._retry(
            lambda: predict_events(events, self._feature_store, self._model), "MySQL", "looking up features"
        )
        sources = [record for record, _ in batch.valid]
        await self._retry(
            lambda: self._publisher.publish(list(zip(sources, predictions)), batch.invalid),
            "Kafka", "publishing predictions and dead letters",
        )
        await self._commit(next_offsets(records))
        self.stats.record_batch(len(records), len(predictions), len(batch.invalid), time.perf_counter() - started)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # aiokafka retries a commit internally with no deadline; ours hands control back to the
        # retry loop, which is where a stop request is noticed.
        async def commit() -> None:
            try:
                await asyncio.wait_for(self._source.commit(offsets), COMMIT_TIMEOUT_S)
            except TimeoutError:
                raise TimeoutError(f"no answer within {COMMIT_TIMEOUT_S:g} s") from None

        try:
            await self._retry(commit, "Kafka", "committing offsets")
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another instance before the commit: it will replay this
            # batch, which is the at-least-once contract. Nothing is lost.
            log.warning("could not commit %s after a rebalance, the batch will be replayed: %s", offsets, exc)

    def _retry(self, step: Callable[[], Awaitable[T]], dependency: str, action: str) -> Awaitable[T]:
        return retry_until_done(
            step, dependency=dependency, action=action, stop=self._stop, backoff=self._backoff, on_retry=self.stats.record_retry
        )


class FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Lets the batch in hand finish and commit before its partitions move to another instance,
    so a scale-out or scale-in does not replay work that was already published.

    The wait is bounded by what is left of the group's rebalance timeout (Settings.revoke_wait_s):
    past it the instance would be evicted while still working, and its late commit refused, so
    the batch is abandoned instead and its records go to whoever owns them next.
    """

    def __init__(self, loop: PredictionLoop, max_wait_s: float) -> None:
        self._loop = loop
        self._max_wait_s = max_wait_s

    async def on_partitions_revoked(self, revoked) -> None:
        if not await self._loop.wait_for_batch(self._max_wait_s):
            await self._loop.abandon_batch(f"the rebalance cannot wait longer than {self._max_wait_s:.1f} s")
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
