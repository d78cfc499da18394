"""The consume → validate → predict → publish → commit loop, one micro-batch at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from events.dead_letter import dead_letter_headers
from events.schema import Prediction, encode_key, encode_prediction
from model.artifact import PurchaseModel
from offline_store.features import FeatureStore
from service.batch import SplitBatch, predict_events, split_batch
from service.retry import Backoff, retry_until_done
from service.stats import ServiceStats

log = logging.getLogger(__name__)

T = TypeVar("T")
COMMIT_TIMEOUT_S = 15.0


class RecordSource(Protocol):
    """The part of AIOKafkaConsumer the loop uses."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class RecordSink(Protocol):
    """The part of AIOKafkaProducer the loop uses."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future: ...


def next_offsets(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
    """Per partition, the offset to resume from: one past the last record handled."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


class PredictionLoop:
    """Runs batches until `stop` is set. Offsets are committed only after a batch's outputs and
    dead letters are acknowledged by Kafka, so a crash anywhere means a replay, never a loss."""

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
        self._sink = sink
        self._feature_store = feature_store
        self._model = model
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        self.stats = ServiceStats() if stats is None else stats
        # Held while a batch is in hand, so a rebalance waits for it to be committed.
        self.batch_lock = asyncio.Lock()

    async def run(self) -> None:
        settings = self._settings
        while not self._stop.is_set():
            by_partition = await self._source.getmany(
                timeout_ms=settings.poll_timeout_ms, max_records=settings.batch_max_records
            )
            records = [record for partition_records in by_partition.values() for record in partition_records]
            if records:
                async with self.batch_lock:
                    await self.process(records)
            self.stats.log_summary_if_due(settings.stats_interval_s)

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        started = time.perf_counter()
        batch = split_batch(records)
        for record, error in batch.invalid:
            log.warning(
                "dead-lettering %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, error.kind, error.reason,
                extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "error_kind": error.kind},
            )
        events = [event for _, event in batch.valid]
        predictions = await self._retry(lambda: predict_events(events, self._feature_store, self._model), "feature lookup and prediction")
        await self._retry(lambda: self._publish(batch, predictions), "publishing predictions and dead letters")
        await self._commit(next_offsets(records))
        self.stats.record_batch(len(records), len(predictions), len(batch.invalid), time.perf_counter() - started)
        log.debug("batch of %d done", len(records), extra={"batch_size": len(records)})

    async def _publish(self, batch: SplitBatch, predictions: Sequence[Prediction]) -> None:
        settings = self._settings
        deliveries = []
        try:
            for prediction in predictions:
                deliveries.append(
                    await self._sink.send(
                        settings.output_topic, encode_prediction(prediction), encode_key(prediction.user_id)
                    )
                )
            for record, error in batch.invalid:
                headers = dead_letter_headers(error, record.topic, record.partition, record.offset, record.headers)
                deliveries.append(await self._sink.send(settings.dlq_topic, record.value, record.key, headers=headers))
        finally:
            # Wait for every delivery, even after a failure, so none is left unobserved.
            results = await asyncio.gather(*deliveries, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        # aiokafka retries a commit internally with no deadline; ours hands control back to the
        # retry loop, which is where a stop request is noticed.
        def commit() -> Awaitable[None]:
            return asyncio.wait_for(self._source.commit(offsets), COMMIT_TIMEOUT_S)

        try:
            await self._retry(commit, "offset commit")
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another instance before the commit: it will replay this
            # batch, which is the at-least-once contract. Nothing is lost.
            log.warning("could not commit %s after a rebalance, the batch will be replayed: %s", offsets, exc)

    def _retry(self, step: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return retry_until_done(step, what=what, stop=self._stop, backoff=self._backoff, on_retry=self.stats.record_retry)


class FinishBatchBeforeRevoke(ConsumerRebalanceListener):
    """Lets the batch in hand finish and commit before its partitions move to another instance,
    so a scale-out or scale-in does not replay work that was already published."""

    def __init__(self, loop: PredictionLoop, max_wait_s: float) -> None:
        self._loop = loop
        self._max_wait_s = max_wait_s

    async def on_partitions_revoked(self, revoked) -> None:
        try:
            async with asyncio.timeout(self._max_wait_s):
                async with self._loop.batch_lock:
                    pass
        except TimeoutError:
            log.warning("rebalance did not wait for the batch in hand any longer; it may be replayed")
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
