"""The quality monitor's Kafka clients: the group-less reader of the prediction and purchase topics, where
it starts reading after a restart, and the snapshots on QUALITY_TOPIC (the last one read back, new ones sent).

Every client is built with messaging/kafka_security, so the monitor runs on a secured cluster as the
other programs do.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Collection, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.structs import TopicPartition

from config import Settings
from errors import PredictionError
from messaging.kafka_security import KAFKA_AUTHORIZATION_ERRORS, kafka_client_options, start_kafka_client
from messaging.topics import ensure_topics
from quality.event_time import SECOND_US, micros
from quality.snapshot import SNAPSHOT_KEY, InvalidSnapshot, PartitionPosition, QualitySnapshot, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

# The checkpoint is the last snapshot; the few before it stand in should the last be unreadable.
SNAPSHOTS_READ_BACK = 16
QUALITY_TOPIC_CONFIGS = {"cleanup.policy": "compact"}
SNAPSHOT_READ_TIMEOUT_S = 30.0
# Records are read again from this long before the checkpoint strictly needs: producers' clocks and
# record timestamps that trail the event times they carry.
REPLAY_MARGIN_S = 60


class TopicNotReady(PredictionError):
    """A topic the monitor reads has no partitions in the metadata yet (just created): retried."""

    retriable = True


class SnapshotNotRead(PredictionError):
    """The last snapshots on QUALITY_TOPIC could not be read in time: retried, since starting over would count everything again."""

    retriable = True


def new_reader(settings: Settings, client_id: str) -> AIOKafkaConsumer:
    """A consumer in no group: partitions are assigned and positioned by hand."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        # A position lost to retention: the oldest record left is as far back as the monitor can go.
        auto_offset_reset="earliest",
        # Outputs are written in transactions under exactly_once: an aborted one is no prediction.
        isolation_level="read_committed",
        **kafka_client_options(settings),
    )


async def ensure_monitor_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Create what is missing of the topics read, and QUALITY_TOPIC with one partition (its last record is the checkpoint).

    QUALITY_TOPIC is compacted: every snapshot has the same key and only the latest few are ever read, so
    the topic stays small however long the monitor runs, and the checkpoint is never lost to retention.
    """
    await ensure_topics(settings, topics)
    await ensure_topics(dataclasses.replace(settings, topic_partitions=1), [settings.quality_topic], QUALITY_TOPIC_CONFIGS)


async def topic_partitions(settings: Settings, topics: Collection[str]) -> list[TopicPartition]:
    """Every partition of `topics`, as the cluster describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="quality-monitor-setup",
                                **kafka_client_options(settings))
    await start_kafka_client(admin, settings)
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    partitions: list[TopicPartition] = []
    for topic in described:
        error = for_code(topic["error_code"]) if topic["error_code"] else None
        if error in KAFKA_AUTHORIZATION_ERRORS:
            raise error(topic["topic"])  # kafka_refusal says what to grant
        if error is not None or not topic["partitions"]:
            raise TopicNotReady(f"topic {topic['topic']} has no partitions in the cluster metadata yet")
        partitions.extend(TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"])
    return sorted(partitions)


async def read_last_snapshot(settings: Settings) -> QualitySnapshot | None:
    """The latest readable snapshot of the last few on QUALITY_TOPIC; None when there is none."""
    consumer = new_reader(settings, "quality-monitor-checkpoint")
    await start_kafka_client(consumer, settings)
    try:
        partitions = await topic_partitions(settings, [settings.quality_topic])
        consumer.assign(partitions)
        begins = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        to_read = {tp: ends[tp] for tp in partitions if ends[tp] > begins[tp]}
        for tp in to_read:
            consumer.seek(tp, max(begins[tp], ends[tp] - SNAPSHOTS_READ_BACK))
        latest: QualitySnapshot | None = None
        deadline = time.monotonic() + SNAPSHOT_READ_TIMEOUT_S
        while to_read:
            if time.monotonic() > deadline:
                raise SnapshotNotRead(
                    f"the last snapshots on {settings.quality_topic} did not arrive within {SNAPSHOT_READ_TIMEOUT_S:.0f} s"
                )
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        snapshot = decode_snapshot(record.value)
                    except InvalidSnapshot as exc:
                        log.warning("skipping record %d of %s[%d]: %s", record.offset, record.topic, record.partition, exc)
                        continue
                    if latest is None or snapshot.at >= latest.at:
                        latest = snapshot
            for tp in list(to_read):
                if await consumer.position(tp) >= to_read[tp]:
                    del to_read[tp]
        return latest
    finally:
        await consumer.stop()


def replay_start_ms(snapshot: QualitySnapshot | None, label_window_s: int, late_allowance_s: int) -> int | None:
    """The record time (unix ms) to read the topics again from after a restart; None: from the beginning.

    Early enough for every prediction still pending at the checkpoint (event time after W − LABEL_WINDOW_S),
    the purchases before them within the allowance, and every prediction of each model's window.
    """
    if snapshot is None or snapshot.watermark is None:
        return None
    starts = [micros(snapshot.watermark) - (label_window_s + late_allowance_s) * SECOND_US]
    starts.extend(micros(model.window_start) for model in snapshot.models if model.window_start is not None)
    return (min(starts) - REPLAY_MARGIN_S * SECOND_US) // 1000


def checkpoint_positions(snapshot: QualitySnapshot | None) -> dict[TopicPartition, int]:
    if snapshot is None:
        return {}
    return {TopicPartition(p.topic, p.partition): p.offset for p in snapshot.positions}


async def position_for_replay(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], start_ms: int | None, checkpoint: dict[TopicPartition, int]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Seek every partition to where reading starts. Returns those offsets, and the checkpoint's positions
    that still hold: below them, records were taken into account before the restart.

    From the beginning without a checkpoint; else from the first record at or after `start_ms`, and never
    past the checkpoint's own position, so that nothing it had not taken into account is skipped.
    """
    begins = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    if start_ms is None:
        starts = dict(begins)
    else:
        found = await consumer.offsets_for_times({tp: start_ms for tp in partitions})
        starts = {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in partitions}
    boundary = {}
    for tp in partitions:
        if tp in checkpoint and checkpoint[tp] > ends[tp]:
            log.warning("the checkpoint read %s[%d] up to offset %d, but it ends at %d now (deleted and created again?):"
                        " counting all of it", tp.topic, tp.partition, checkpoint[tp], ends[tp])
        elif tp in checkpoint:
            boundary[tp] = checkpoint[tp]
            starts[tp] = min(starts[tp], checkpoint[tp])
        starts[tp] = max(starts[tp], begins[tp])
        consumer.seek(tp, starts[tp])
    return starts, boundary


def positions_for_checkpoint(processed: dict[TopicPartition, int], boundary: dict[TopicPartition, int]) -> list[PartitionPosition]:
    """How far each partition has been taken into account: by this run, or by the checkpoint it resumed from."""
    merged = dict(boundary)
    for tp, offset in processed.items():
        merged[tp] = max(offset, merged.get(tp, 0))
    return [PartitionPosition(tp.topic, tp.partition, offset) for tp, offset in sorted(merged.items())]


def new_snapshot_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="quality-monitor", acks="all", **kafka_client_options(settings)
    )


async def publish_snapshot(producer: AIOKafkaProducer, topic: str, snapshot: QualitySnapshot) -> None:
    await producer.send_and_wait(topic, encode_snapshot(snapshot), key=SNAPSHOT_KEY)
