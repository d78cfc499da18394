"""Reads predictions (or dead letters) back and renders them for a person."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from config import Settings
from events.dead_letter import ERROR_KIND, ERROR_REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC, read_dead_letter_headers
from events.schema import Prediction, decode_prediction
from messaging.kafka_security import kafka_client_options, start_kafka_client
from runtime.text import printable
from terminal.percentiles import describe_latency
from terminal.topic_setup import ensure_pipeline_topics

log = logging.getLogger(__name__)

BAR_WIDTH = 10


@dataclass
class ReaderSummary:
    records: int = 0
    unreadable: int = 0
    probabilities: list[float] = field(default_factory=list)
    # Receive time minus the event's timestamp: what a reader of the output topic experiences.
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def render(self, topic: str) -> str:
        text = f"received {self.records} records from {topic} in {self.seconds:.1f} s"
        if self.probabilities:
            mean = sum(self.probabilities) / len(self.probabilities)
            likely = sum(p >= 0.5 for p in self.probabilities)
            text += f"; mean purchase probability {mean:.3f}, {likely} of {len(self.probabilities)} at 0.5 or above"
        if self.latencies_ms:
            text += f"; latency after the event {describe_latency(self.latencies_ms)}"
        if self.unreadable:
            text += f"; {self.unreadable} unreadable"
        return text


def age_ms(prediction: Prediction, now: datetime) -> float:
    """How long after its event a prediction was received."""
    return (now - prediction.timestamp).total_seconds() * 1000


def render_prediction(prediction: Prediction, now: datetime) -> str:
    p = prediction.purchase_probability
    filled = round(p * BAR_WIDTH)
    return (
        f"user {prediction.user_id:>7}  p={p:.3f} {'█' * filled}{'░' * (BAR_WIDTH - filled)}"
        f"  event {printable(prediction.event_id)}"
        f"  ({age_ms(prediction, now):.0f} ms after the event, model {printable(prediction.model_version)})"
    )


def render_dead_letter(record: ConsumerRecord) -> str:
    why = read_dead_letter_headers(record.headers)
    value = (record.value or b"")[:80]
    # repr() escapes the value's bytes; the headers are decoded text and need the same care.
    return printable(
        f"{why.get(SOURCE_TOPIC, '?')}[{why.get(SOURCE_PARTITION, '?')}]@{why.get(SOURCE_OFFSET, '?')}"
        f"  {why.get(ERROR_KIND, '?')}: {why.get(ERROR_REASON, '?')}  value={value!r}"
    )


@dataclass(frozen=True)
class ReadPlan:
    topic: str
    count: int | None
    from_beginning: bool
    idle_timeout_s: float | None
    dead_letters: bool


async def read_records(
    settings: Settings, plan: ReadPlan, stop: asyncio.Event, show: Callable[[str], None] = print
) -> ReaderSummary:
    """Print records until `count` are read, `idle_timeout_s` passes without one, or `stop` is set."""
    # Started before anything was produced, the reader would otherwise see no partitions.
    await ensure_pipeline_topics(settings)
    consumer = AIOKafkaConsumer(
        plan.topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="prediction-reader",
        group_id=None,  # a reader, not a worker: it must never take partitions from the service
        auto_offset_reset="earliest" if plan.from_beginning else "latest",
        # The service writes in transactions (PROCESSING_GUARANTEE=exactly_once): read only
        # committed ones, so that each event's output is seen once and none from an abort.
        isolation_level="read_committed",
        **kafka_client_options(settings),
    )
    await start_kafka_client(consumer, settings)
    summary = ReaderSummary()
    started = time.monotonic()
    try:
        # Resolve the starting positions now, so anything published after "waiting" is seen.
        for tp in consumer.assignment():
            await consumer.position(tp)
        show(f"waiting for {'dead letters' if plan.dead_letters else 'predictions'} on {plan.topic} (Ctrl-C to stop)")
        last_record = time.monotonic()
        while not stop.is_set() and (plan.count is None or summary.records < plan.count):
            batches = await consumer.getmany(timeout_ms=200)
            records = [record for partition in batches.values() for record in partition]
            if records:
                last_record = time.monotonic()
            elif plan.idle_timeout_s is not None and time.monotonic() - last_record >= plan.idle_timeout_s:
                show(f"no new records for {plan.idle_timeout_s:g} s, stopping")
                break
            for record in records:
                if plan.count is not None and summary.records >= plan.count:
                    break
                summary.records += 1
                show(_render(record, plan, summary))
    finally:
        await consumer.stop()
    summary.seconds = time.monotonic() - started
    return summary


def _render(record: ConsumerRecord, plan: ReadPlan, summary: ReaderSummary) -> str:
    if plan.dead_letters:
        return render_dead_letter(record)
    try:
        prediction = decode_prediction(record.value or b"")
    except msgspec.MsgspecError as exc:
        summary.unreadable += 1
        return printable(f"unreadable record at {record.topic}[{record.partition}]@{record.offset}: {exc}")
    now = datetime.now(UTC)
    summary.probabilities.append(prediction.purchase_probability)
    summary.latencies_ms.append(age_ms(prediction, now))
    return render_prediction(prediction, now)
