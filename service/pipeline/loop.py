"""The consume → validate → predict → hand over loop.

Stages overlap: while Kafka takes batch N's outputs, the loop already fetches and processes
batch N+1. The loop polls through a `Guarantee` (service/delivery/guarantee.py), which owns the
consumer's position and decides how outputs reach Kafka and how progress is committed: at least
once, or exactly once with transactions.

The batch being processed can always be given up: a rebalance or a shutdown that cannot wait
any longer abandons it uncommitted, so its records are read again.

A new model version (service/models/) takes over between batches, once everything in hand is
delivered and committed: no batch, and in exactly_once no transaction, holds outputs of two versions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from typing import Any

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from config import Settings
from errors import ShutdownRequested
from features.user import FeatureStore
from service.delivery.guarantee import Guarantee, Polled, Work
from service.delivery.positions import next_offsets
from service.failures import describe_error, retriable
from service.models.shadow_outputs import ShadowOutputs
from service.models.slots import ServingModels
from service.observe.model_stats import ModelStats
from service.observe.stats import ServiceStats
from service.pipeline.predict import Predicted, predict_events
from service.pipeline.validate import validate_records
from service.retry import Backoff, retry_until_done

log = logging.getLogger(__name__)

# How long abandoned work may take to notice its cancellation.
ABANDON_WAIT_S = 2.0


class PredictionLoop:
    def __init__(
        self,
        settings: Settings,
        guarantee: Guarantee,
        feature_store: FeatureStore,
        models: ServingModels,
        stop: asyncio.Event,
        stats: ServiceStats,
        model_stats: ModelStats | None = None,
        shadow_outputs: ShadowOutputs | None = None,
    ) -> None:
        self.guarantee = guarantee
        self._feature_store = feature_store
        self.models = models
        self._model_stats = model_stats
        self._shadow_outputs = shadow_outputs
        self._stop = stop
        self._backoff = Backoff.from_settings(settings)
        self.stats = stats
        self._processing: asyncio.Task[Any] | None = None

    async def run(self) -> None:
        """Process until `stop` is set, then finish and commit what is in hand."""
        while not self._stop.is_set():
            await self.turn()
        if not await self.drain(timeout_s=None):
            log.warning("stopped before all in hand was delivered and committed; the rest is processed again on the next start")

    async def turn(self) -> None:
        """One poll, the batch it brings, and the guarantee's bookkeeping after it. The batch is
        handed over (or abandoned) before the next poll, as the guarantee expects."""
        if self.models.swap_due():
            await self._swap_models()
        polled = await self.guarantee.poll()
        if polled.records:
            await self._run_batch(polled)
        await self.guarantee.between_batches(idle=not polled.records)

    async def _swap_models(self) -> None:
        """Commit what the old version produced, then let the new one take over; if the work in
        hand cannot be committed yet, the swap waits for a later turn."""
        if self.guarantee.holds_work and not await self.drain(timeout_s=None):
            return
        self.models.swap()

    async def _run_batch(self, polled: Polled) -> None:
        """Process one batch as a task of its own, so a rebalance or shutdown can abandon it."""
        batch = asyncio.create_task(self.process(polled))
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

    async def process(self, polled: Polled) -> None:
        """Validate, predict and hand the outputs over; acknowledgement and commit come later."""
        started_perf_s, polled_mono_s = time.perf_counter(), time.monotonic()
        by_partition = polled.records
        if len(by_partition) == 1:
            records = next(iter(by_partition.values()))
        else:
            records = [record for partition_records in by_partition.values() for record in partition_records]
        batch = validate_records(records, self.stats)
        self.stats.observe_stage("parse", time.perf_counter() - started_perf_s)
        events = [event for _, event in batch.valid]
        serving, shadow = self.models.serving, self.models.shadow  # one version each for the whole batch
        predicted = await retry_until_done(
            lambda: predict_events(events, self._feature_store, serving, self.stats, shadow, self._shadow_outputs is not None),
            dependency="MySQL", action="looking up features", stop=self._stop, backoff=self._backoff,
            on_retry=self.stats.record_retry,
        )
        if predicted.shadow is not None:
            await self._shadow(predicted)
        sources = [record for record, _ in batch.valid]
        work = Work(
            next_offsets(by_partition), list(zip(sources, predicted.predictions, strict=True)), batch.invalid,
            len(records), started_perf_s, polled_mono_s, time.perf_counter(), polled.generations,
        )
        await self.guarantee.hand_over(work)

    async def _shadow(self, predicted: Predicted) -> None:
        if self._model_stats is not None and predicted.serving_scores is not None and predicted.shadow_scores is not None:
            self._model_stats.compare_shadow(predicted.serving_scores, predicted.shadow_scores)
        if self._shadow_outputs is not None and predicted.shadow:
            await self._shadow_outputs.publish(predicted.shadow)

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
            if not retriable(exc):
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


class FinishBatchBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """Lets the work in hand finish and commit before its partitions move to another instance,
    so a scale-out or scale-in does not replay work that was already published.

    The wait is bounded by what is left of the group's rebalance timeout (Settings.revoke_wait_s):
    past it the instance would be evicted while still working, and its late commit refused, so
    the work is abandoned instead and its records go to whoever owns them next.
    """

    def __init__(self, loop: PredictionLoop, max_wait_s: float) -> None:
        self._loop = loop
        self._max_wait_s = max_wait_s

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        if not await self._loop.drain(self._max_wait_s):
            await self._loop.abandon(f"the rebalance cannot wait longer than {self._max_wait_s:.1f} s")
        await self._loop.guarantee.on_revoked(revoked)
        if revoked:
            log.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        await self._loop.guarantee.on_assigned(assigned)
