"""Runs the quality monitor: reads predictions and purchases, labels the predictions, and publishes a
snapshot of each model's quality every few seconds, until stopped.

Start-up steps retry while Kafka is away, as the service's do; a setting or a grant Kafka refuses stops
the monitor with one message (exit code 2). On SIGINT or SIGTERM it publishes a final snapshot and stops.
After a restart it reads the last snapshot back, takes its counters, and reads the topics again from
early enough to rebuild what was pending and each model's window (docs/model-quality.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import ConfigError, Settings
from errors import ShutdownRequested
from messaging.kafka_security import start_kafka_client
from quality.alignment import EventTimeAlignment
from quality.endpoint import serve_quality_endpoint
from quality.exporter import build_registry
from quality.kafka_io import (
    checkpoint_positions,
    ensure_monitor_topics,
    new_reader,
    new_snapshot_producer,
    position_for_replay,
    positions_for_checkpoint,
    publish_snapshot,
    read_last_snapshot,
    replay_start_ms,
    topic_partitions,
)
from quality.progress import describe_snapshot
from quality.records import Incoming, decode_prediction_record, decode_purchase_record
from quality.snapshot import QualitySnapshot
from quality.tracker import QualityTracker
from quality.training_auc import TrainingAucs
from runtime.logs import flush_collapsed_logs
from runtime.shutdown import stop_on_signals
from service.failures import as_setup_error, describe_error, retriable
from service.retry import Backoff, log_retry, pause_unless_stopped, retry_until_done, unless_stopped

log = logging.getLogger(__name__)

T = TypeVar("T")

SNAPSHOT_INTERVAL_S = 5.0
POLL_TIMEOUT_MS = 200
POLL_MAX_RECORDS = 5_000
# Records held per partition for the event-time merge before that partition's fetching pauses.
MAX_WAITING_PER_PARTITION = 10_000
# How long the merge waits for a partition with records left to read before going on without it.
ALIGN_WAIT_S = 2.0
# /healthz fails when the read loop has not come round for this long.
STALL_AFTER_S = 60.0
# An invalid purchase is logged with its reason, then only every this many.
LOG_EVERY_INVALID = 1_000
SEND_TIMEOUT_S = 10.0
FINAL_SNAPSHOT_TIMEOUT_S = 5.0


def check_topics(settings: Settings) -> None:
    """The topics the monitor reads and writes must be different ones."""
    reads = {settings.output_topic, settings.shadow_output_topic} - {""}
    if settings.purchases_topic in reads:
        raise ConfigError("PURCHASES_TOPIC", "must differ from OUTPUT_TOPIC and SHADOW_OUTPUT_TOPIC: purchases are no predictions")
    if settings.quality_topic in reads | {settings.purchases_topic, settings.input_topic, settings.dlq_topic}:
        raise ConfigError("QUALITY_TOPIC", "must differ from the pipeline's other topics: the monitor writes its snapshots there")


class QualityMonitor:
    """The monitor's state between records: the tracker, where each partition was read to, and the checkpoint's boundary."""

    def __init__(self, settings: Settings, snapshot_interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
        self.settings = settings
        self.snapshot_interval_s = snapshot_interval_s
        self.tracker = QualityTracker(
            label_window_s=settings.label_window_s, late_allowance_s=settings.label_late_allowance_s,
            window_size=settings.quality_window, max_pending=settings.quality_max_pending,
        )
        self.training_aucs = TrainingAucs([settings.model_uri, settings.shadow_model_uri], settings.mlflow_tracking_uri)
        self.roles = {settings.output_topic: "serving"}
        if settings.shadow_output_topic:
            self.roles[settings.shadow_output_topic] = "shadow"
        self.topics = [*self.roles, settings.purchases_topic]
        # Below these offsets, records were taken into account before the restart: read again, counted no more.
        self.boundary: dict[TopicPartition, int] = {}
        self.processed: dict[TopicPartition, int] = {}
        self.loop_seen_mono_s: float | None = None
        self._replaying: set[TopicPartition] = set()
        self._auc_refresh: asyncio.Task[None] | None = None
        self._invalid_logged = 0

    def restore(self, checkpoint: QualitySnapshot | None) -> None:
        if checkpoint is None:
            log.info("no snapshot on %s: reading every topic from its beginning", self.settings.quality_topic)
            return
        self.tracker.restore(checkpoint)
        log.info("resuming from the snapshot of %s (watermark %s)", checkpoint.at.isoformat(timespec="seconds"),
                 checkpoint.watermark.isoformat(timespec="seconds") if checkpoint.watermark else "none")

    def start_reading(self, starts: dict[TopicPartition, int], boundary: dict[TopicPartition, int]) -> None:
        self.boundary = boundary
        self._replaying = {tp for tp, offset in boundary.items() if starts.get(tp, offset) < offset}
        if self._replaying:
            log.info("reading %d records again to rebuild the pending predictions and windows",
                     sum(boundary[tp] - starts[tp] for tp in self._replaying))

    def decode(self, record: ConsumerRecord) -> tuple[int | None, Incoming]:
        role = self.roles.get(record.topic)
        if role is None:
            return decode_purchase_record(record.offset, record.value)
        return decode_prediction_record(record.offset, record.value, role)

    def take(self, tp: TopicPartition, incoming: Incoming) -> None:
        """Hand one record, released by the merge, to the tracker."""
        replayed = incoming.offset < self.boundary.get(tp, 0)
        tracker = self.tracker
        if incoming.prediction is not None:
            tracker.prediction(incoming.prediction, incoming.role, replayed=replayed)
        elif incoming.purchase is not None:
            tracker.purchase(incoming.purchase, replayed=replayed)
        elif incoming.invalid_purchase is not None:
            tracker.invalid_purchase(replayed=replayed)
            if not replayed:
                self._log_invalid(tp, incoming)
        else:
            tracker.unreadable_prediction(replayed=replayed)
            if not replayed:
                log.warning("%s[%d]@%d is no prediction: %s", tp.topic, tp.partition, incoming.offset, incoming.unreadable_prediction)
        self.processed[tp] = incoming.offset + 1
        if tp in self._replaying and incoming.offset + 1 >= self.boundary[tp]:
            self._replaying.discard(tp)
            if not self._replaying:
                log.info("read again up to the snapshot's positions: counting from here")

    def snapshot(self, remeasure: bool = True) -> QualitySnapshot:
        return self.tracker.snapshot(
            datetime.now(UTC), training_auc=self.training_aucs.get,
            positions=positions_for_checkpoint(self.processed, self.boundary), remeasure=remeasure,
        )

    async def publish(self, producer: AIOKafkaProducer) -> QualitySnapshot:
        snapshot = self.snapshot()
        self._refresh_training_aucs(model.model_version for model in snapshot.models)
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await publish_snapshot(producer, self.settings.quality_topic, snapshot)
        return snapshot

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        if self.loop_seen_mono_s is None:
            return True, {"status": "starting"}
        idle_s = time.monotonic() - self.loop_seen_mono_s
        alive = idle_s <= STALL_AFTER_S
        return alive, {"status": "ok" if alive else "stalled", "seconds_since_activity": round(idle_s, 3), "bound_s": STALL_AFTER_S}

    async def read_until_stopped(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, partitions: list[TopicPartition], stop: asyncio.Event,
        backoff: Backoff,
    ) -> None:
        alignment: EventTimeAlignment[TopicPartition, Incoming] = EventTimeAlignment(
            partitions, max_waiting=MAX_WAITING_PER_PARTITION, wait_s=ALIGN_WAIT_S
        )
        paused: set[TopicPartition] = set()
        next_snapshot = time.monotonic() + self.snapshot_interval_s
        failures = 0
        while not stop.is_set():
            self.loop_seen_mono_s = time.monotonic()
            try:
                batches = await unless_stopped(
                    consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=POLL_MAX_RECORDS), stop, "reading the topics"
                )
                for tp in partitions:
                    alignment.set_caught_up(tp, await _caught_up(consumer, tp))
            except ShutdownRequested:
                break
            except Exception as exc:
                if not retriable(exc):
                    raise
                failures += 1
                wait_s = backoff.delay(failures)
                log_retry("Kafka", "reading the topics", failures, exc, wait_s)
                await pause_unless_stopped(stop, wait_s)
                continue
            failures = 0
            for tp, records in batches.items():
                alignment.add(tp, (self.decode(record) for record in records))
            for tp, incoming in alignment.release():
                self.take(tp, incoming)
            _pause_full_partitions(consumer, alignment, partitions, paused)
            if time.monotonic() >= next_snapshot:
                next_snapshot = time.monotonic() + self.snapshot_interval_s
                await self._publish_logged(producer)

    async def _publish_logged(self, producer: AIOKafkaProducer) -> None:
        try:
            snapshot = await self.publish(producer)
        except Exception as exc:
            if not (retriable(exc) or isinstance(exc, TimeoutError)):
                raise
            log.warning("snapshot not published to %s (tried again in %.0f s): %s", self.settings.quality_topic,
                        self.snapshot_interval_s, describe_error(exc))
            return
        log.info("%s", describe_snapshot(snapshot))
        flush_collapsed_logs()

    def _refresh_training_aucs(self, versions: Iterable[str]) -> None:
        if self._auc_refresh is not None and not self._auc_refresh.done():
            return
        self._auc_refresh = asyncio.get_running_loop().create_task(self.training_aucs.refresh(set(versions)))

    def _log_invalid(self, tp: TopicPartition, incoming: Incoming) -> None:
        count = self.tracker.invalid_purchases
        if count - self._invalid_logged >= LOG_EVERY_INVALID or self._invalid_logged == 0:
            self._invalid_logged = count
            log.warning("%s[%d]@%d is no valid purchase (%s); %d invalid purchases so far, the next logged after %d more",
                        tp.topic, tp.partition, incoming.offset, incoming.invalid_purchase, count, LOG_EVERY_INVALID)


async def _caught_up(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """Whether every committed record of the partition has been handed out (read_committed: up to the last stable offset)."""
    end = consumer.last_stable_offset(tp)
    if end is None or end < 0:
        end = consumer.highwater(tp)
    return end is not None and await consumer.position(tp) >= end


def _pause_full_partitions(
    consumer: AIOKafkaConsumer, alignment: EventTimeAlignment[TopicPartition, Incoming], partitions: list[TopicPartition],
    paused: set[TopicPartition],
) -> None:
    for tp in partitions:
        if tp not in paused and alignment.is_full(tp):
            consumer.pause(tp)
            paused.add(tp)
        elif tp in paused and alignment.has_room(tp):
            consumer.resume(tp)
            paused.discard(tp)


async def run_monitor(settings: Settings, stop: asyncio.Event | None = None, snapshot_interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
    """Run until `stop` is set (by default, until SIGINT or SIGTERM)."""
    check_topics(settings)
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop, settings.shutdown_timeout_s)
    backoff = Backoff.from_settings(settings)

    def step(action: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return retry_until_done(lambda: unless_stopped(action(), stop, what), dependency="Kafka", action=what, stop=stop, backoff=backoff)

    monitor = QualityMonitor(settings, snapshot_interval_s)
    registry = build_registry(monitor.tracker, monitor.training_aucs.get)
    where = settings.kafka_bootstrap_servers
    try:
        async with serve_quality_endpoint(settings.metrics_host, settings.quality_metrics_port, registry, monitor.liveness):
            await step(lambda: ensure_monitor_topics(settings, monitor.topics), f"creating topics at {where}")
            checkpoint = await step(lambda: read_last_snapshot(settings), f"reading the last snapshot on {settings.quality_topic}")
            monitor.restore(checkpoint)
            consumer = new_reader(settings, "quality-monitor")
            producer = new_snapshot_producer(settings)
            async with contextlib.AsyncExitStack() as resources:
                await step(lambda: start_kafka_client(consumer, settings), f"connecting to Kafka at {where}")
                resources.push_async_callback(_close, "the reader", consumer.stop)
                partitions = await step(lambda: topic_partitions(settings, monitor.topics), "reading the topics' partitions")
                consumer.assign(partitions)
                start_ms = replay_start_ms(checkpoint, settings.label_window_s, settings.label_late_allowance_s)
                positions = checkpoint_positions(checkpoint)
                starts, boundary = await step(
                    lambda: position_for_replay(consumer, partitions, start_ms, positions), "finding where to read from"
                )
                monitor.start_reading(starts, boundary)
                await step(lambda: start_kafka_client(producer, settings), f"connecting the snapshot producer to {where}")
                resources.push_async_callback(_close, "the snapshot producer", producer.stop)
                log.info("reading %s; snapshots to %s every %g s", ", ".join(monitor.topics), settings.quality_topic, snapshot_interval_s)
                await monitor.read_until_stopped(consumer, producer, partitions, stop, backoff)
                try:
                    async with asyncio.timeout(FINAL_SNAPSHOT_TIMEOUT_S):
                        snapshot = await monitor.publish(producer)
                    log.info("final %s", describe_snapshot(snapshot))
                except Exception as exc:  # noqa: BLE001 - the next start replays from the previous snapshot instead
                    log.warning("final snapshot not published: %s", describe_error(exc))
        log.info("stopped cleanly")
    except ShutdownRequested as exc:
        log.warning("stopped while still %s", exc)
    except Exception as exc:
        refusal = as_setup_error(exc, settings)
        if refusal is None or refusal is exc:
            raise
        raise refusal from exc


async def _close(what: str, close: Callable[[], Awaitable[None]]) -> None:
    try:
        async with asyncio.timeout(FINAL_SNAPSHOT_TIMEOUT_S):
            await close()
    except Exception as exc:  # noqa: BLE001 - nothing is in hand any more; a failed close must not change the exit code
        log.warning("closing %s failed: %s", what, describe_error(exc))
