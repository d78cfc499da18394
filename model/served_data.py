"""What was served: the predictions on OUTPUT_TOPIC joined with their events' pages on INPUT_TOPIC.

A prediction carries the event's id, user, time (`timestamp`), the probability and the model
version; the event's pages are only on the input topic, so the two are joined on `event_id`. Both
topics are read as any reader of the pipeline reads them: read_committed (so an aborted
transaction's outputs are never trained on), without a consumer group (the service's group is
never touched), from the first record at or after the start, up to the end each partition had
when the read began.

An event id seen twice (a replay under at_least_once, a producer retry) counts once: its first
prediction and its first event. Events without a prediction (dead letters, or not yet predicted)
are skipped. Memory is bounded: at most `max_events` predictions are kept, about 300 bytes each
while reading; past that the read stops and says so. The whole training run peaks at about 0.7 KB
per served event over a 260 MB base (380 MB for 169,000 events), so about 1 GB at the default
limit of a million.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from config import Settings
from errors import PredictionError
from events.schema import Event, InvalidEvent, Prediction, decode_prediction, parse_event
from features.inputs import Pages
from messaging.kafka_security import kafka_client_options, start_kafka_client
from runtime.progress import progress_on

log = logging.getLogger(__name__)

CLIENT_ID = "model-train-from-logged"
DEFAULT_MAX_EVENTS = 1_000_000
# The input is read from this long before the start of the outputs: an event produced just before
# `since` may have been predicted just after it (the service's lag).
INPUT_LOOKBACK = timedelta(minutes=10)
# A partition that stops advancing before its end (records deleted under the read) ends the read.
IDLE_LIMIT_S = 30.0
PROGRESS_LOG_INTERVAL_S = 5.0
POLL_TIMEOUT_MS = 500


class NoServedData(PredictionError):
    """Nothing to train on: a topic that does not exist, or no prediction or event in the range read."""

    exit_code = 4


class _Served:
    """One served event, as small as Python allows: a million of them are held at once."""

    __slots__ = ("event_at_s", "model_version", "pages", "probability", "user_id")

    def __init__(self, user_id: int, event_at_s: float, model_version: str, probability: float) -> None:
        self.user_id = user_id
        self.event_at_s = event_at_s
        self.model_version = model_version
        self.probability = probability
        self.pages: Pages | None = None


@dataclass
class ReadCounts:
    predictions: int = 0  # records read from OUTPUT_TOPIC
    duplicate_predictions: int = 0  # for an event id already predicted
    unreadable_predictions: int = 0
    events: int = 0  # records read from INPUT_TOPIC
    invalid_events: int = 0  # the service dead-lettered these; none has a prediction
    predictions_without_event: int = 0  # whose event was not found on INPUT_TOPIC (before the range read, or deleted)
    limit_reached: bool = False


# eq=False: the fields include arrays, whose == is elementwise.
@dataclass(frozen=True, eq=False)
class ServedHistory:
    """Served events with their pages, oldest first by event time."""

    event_ids: list[str]
    user_ids: np.ndarray  # int64
    event_at_s: np.ndarray  # float64 seconds since the epoch: the event's own time
    pages: list[Pages]
    probabilities: np.ndarray  # float64: what the service published
    model_versions: list[str]
    counts: ReadCounts = field(default_factory=ReadCounts)

    def __len__(self) -> int:
        return len(self.event_ids)

    def event_times(self) -> list[datetime]:
        return [datetime.fromtimestamp(seconds, UTC) for seconds in self.event_at_s.tolist()]


class ServedCollector:
    """Joins predictions with their events in memory: first prediction and first event per event id."""

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.max_events = max_events
        self.counts = ReadCounts()
        self._served: dict[str, _Served] = {}
        self._versions: dict[str, str] = {}  # one string per version, however many predictions name it
        self._pages: dict[Pages, Pages] = {}  # likewise per combination of pages
        self._joined = 0

    @property
    def full(self) -> bool:
        return self.counts.limit_reached

    @property
    def all_joined(self) -> bool:
        return self._joined == len(self._served)

    def __len__(self) -> int:
        return len(self._served)

    def add_prediction_record(self, value: bytes | None) -> None:
        self.counts.predictions += 1
        try:
            prediction = decode_prediction(value or b"")
        except msgspec.MsgspecError:
            self.counts.unreadable_predictions += 1
            return
        self.add_prediction(prediction)

    def add_prediction(self, prediction: Prediction) -> None:
        if prediction.event_id in self._served:
            self.counts.duplicate_predictions += 1
            return
        if len(self._served) >= self.max_events:
            self.counts.limit_reached = True
            return
        version = self._versions.setdefault(prediction.model_version, prediction.model_version)
        event_at_s = prediction.timestamp.timestamp()
        self._served[prediction.event_id] = _Served(prediction.user_id, event_at_s, version, prediction.purchase_probability)

    def add_event_record(self, value: bytes | None) -> None:
        self.counts.events += 1
        try:
            event = parse_event(value)
        except InvalidEvent:
            self.counts.invalid_events += 1
            return
        self.add_event(event)

    def add_event(self, event: Event) -> None:
        served = self._served.get(event.event_id)
        if served is None or served.pages is not None:
            return  # no prediction (the event is skipped), or its event was seen already
        served.pages = self._pages.setdefault(event.pages, event.pages)
        self._joined += 1

    def history(self) -> ServedHistory:
        """The joined events, oldest first; predictions whose event never came are counted and left out."""
        joined = sorted(
            ((event_id, served) for event_id, served in self._served.items() if served.pages is not None),
            key=lambda item: (item[1].event_at_s, item[0]),
        )
        self.counts.predictions_without_event = len(self._served) - len(joined)
        return ServedHistory(
            event_ids=[event_id for event_id, _ in joined],
            user_ids=np.fromiter((served.user_id for _, served in joined), np.int64, len(joined)),
            event_at_s=np.fromiter((served.event_at_s for _, served in joined), np.float64, len(joined)),
            pages=[served.pages for _, served in joined if served.pages is not None],
            probabilities=np.fromiter((served.probability for _, served in joined), np.float64, len(joined)),
            model_versions=[served.model_version for _, served in joined],
            counts=self.counts,
        )


async def read_served(settings: Settings, since: datetime | None, max_events: int = DEFAULT_MAX_EVENTS) -> ServedHistory:
    """Predictions on OUTPUT_TOPIC from `since` (the Kafka record time; None: from the start of the
    topic) joined with their events on INPUT_TOPIC."""
    collector = ServedCollector(max_events)
    since_ms = None if since is None else int(since.timestamp() * 1000)
    await read_topic_range(settings, settings.output_topic, since_ms, collector.add_prediction_record, lambda: collector.full)
    if collector.full:
        log.warning("stopped reading %s at %d predictions (--max-events): the rest of the range is left out;"
                    " narrow it with --since or --hours, or raise --max-events", settings.output_topic, max_events)
    if not collector:
        raise NoServedData(f"no prediction on {settings.output_topic} {_range_text(since)}: nothing was served to train on")
    lookback_ms = None if since_ms is None else since_ms - int(INPUT_LOOKBACK.total_seconds() * 1000)
    await read_topic_range(settings, settings.input_topic, lookback_ms, collector.add_event_record, lambda: collector.all_joined)
    history = collector.history()
    if history.counts.predictions_without_event:
        log.warning("%d predictions have no event on %s (produced before the range read, or deleted by retention):"
                    " left out", history.counts.predictions_without_event, settings.input_topic)
    return history


def _range_text(since: datetime | None) -> str:
    return "at all" if since is None else f"since {since.isoformat(timespec='seconds')}"


async def read_topic_range(
    settings: Settings, topic: str, since_ms: int | None, handle: Callable[[bytes | None], None], done: Callable[[], bool]
) -> int:
    """Hand each record value of `topic` from the first record at or after `since_ms` (None: the
    start) up to each partition's end at the start of the read to `handle`, until `done()`;
    returns how many records were handed over."""
    partitions = await _partitions(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=CLIENT_ID,
        group_id=None,  # a reader: it must never join, or commit for, the service's group
        enable_auto_commit=False,
        # The service writes in transactions: only committed outputs were served.
        isolation_level="read_committed",
        **kafka_client_options(settings),
    )
    try:
        await start_kafka_client(consumer, settings)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await _start_offsets(consumer, partitions, since_ms, ends)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        return await _drain(consumer, topic, starts, ends, handle, done)
    finally:
        await consumer.stop()


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The topic's partitions; NoServedData when it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id=CLIENT_ID, **kafka_client_options(settings))
    try:
        await start_kafka_client(admin, settings)
        # Every topic: a broker that creates topics on first use would create one asked for by name.
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0 and entry["partitions"]:
            return [TopicPartition(topic, number) for number in sorted(partition["partition"] for partition in entry["partitions"])]
    raise NoServedData(f"topic {topic} does not exist on Kafka at {settings.kafka_bootstrap_servers}: nothing was served there")


async def _start_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int | None, ends: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    if since_ms is None:
        return dict(await consumer.beginning_offsets(partitions))
    found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    # None: no record at or after the time, so nothing to read in that partition.
    return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in partitions}


async def _drain(
    consumer: AIOKafkaConsumer,
    topic: str,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    handle: Callable[[bytes | None], None],
    done: Callable[[], bool],
) -> int:
    remaining = {tp for tp in starts if starts[tp] < ends[tp]}
    finished = [tp for tp in starts if tp not in remaining]
    if finished:
        consumer.pause(*finished)
    total = sum(max(ends[tp] - starts[tp], 0) for tp in starts)
    handed = 0
    last_progress = time.monotonic()
    with _progress(topic, total) as show:
        while remaining and not done():
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            for tp, records in batches.items():
                handed += _hand_over(records, ends[tp], handle)
            positions = {tp: await consumer.position(tp) for tp in starts}
            for tp in list(remaining):
                if positions[tp] >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            show(sum(min(positions[tp], ends[tp]) - starts[tp] for tp in starts))
            if any(batches.values()):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > IDLE_LIMIT_S:
                log.warning("%s stopped advancing %g s before its end (records deleted under the read?): read what there was",
                            topic, IDLE_LIMIT_S)
                break
    return handed


def _hand_over(records: list[ConsumerRecord], end: int, handle: Callable[[bytes | None], None]) -> int:
    handed = 0
    for record in records:
        if record.offset >= end:
            break  # written after the read began: the next run's
        handle(record.value)
        handed += 1
    return handed


@contextlib.contextmanager
def _progress(topic: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar on a terminal; a log line every few seconds otherwise."""
    with progress_on(sys.stderr, total, f"reading {topic}") as bar:
        if bar is not None:
            yield bar
            return
        last_line = time.monotonic()

        def log_line(read: int) -> None:
            nonlocal last_line
            if time.monotonic() - last_line >= PROGRESS_LOG_INTERVAL_S:
                last_line = time.monotonic()
                log.info("read %d/%d records of %s", read, total, topic)

        yield log_line
