"""Emits synthetic browsing events, paced to a rate, with an optional share of invalid ones."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from config import Settings
from events.invalid_samples import random_invalid
from events.schema import encode_event, encode_key
from events.synthetic import random_event
from messaging.kafka_security import kafka_client_options, start_kafka_client
from terminal.topic_setup import ensure_pipeline_topics

log = logging.getLogger(__name__)

# Deliveries awaited together; bounds memory on long runs and shows progress as it goes.
DELIVERY_CHUNK = 1_000
PROGRESS_INTERVAL_S = 5.0
# A progress bar redraws about this often; more would cost the send loop for nothing seen.
PROGRESS_REDRAW_S = 0.1


@dataclass
class ProducerReport:
    valid: int = 0
    invalid_by_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    event_ids: list[str] = field(default_factory=list)  # filled only when the plan asks for it

    @property
    def invalid(self) -> int:
        return sum(self.invalid_by_kind.values())

    @property
    def sent(self) -> int:
        return self.valid + self.invalid

    def summary(self, topic: str) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.invalid_by_kind.items()))
        text = f"sent {self.sent} events to {topic} in {self.seconds:.1f} s ({rate:.0f}/s): {self.valid} valid, {self.invalid} invalid"
        return f"{text} ({kinds})" if kinds else text


@dataclass(frozen=True)
class TrafficPlan:
    count: int
    rate_per_s: float  # 0 means as fast as the broker takes them
    seed: int | None
    invalid_ratio: float
    users: int
    unknown_user_ratio: float
    # Off by default: a long run would otherwise hold every id in memory.
    keep_event_ids: bool = False


async def produce_events(
    settings: Settings, plan: TrafficPlan, stop: asyncio.Event | None = None, progress: Callable[[int], None] | None = None
) -> ProducerReport:
    """Send `plan.count` events (fewer if `stop` is set first); returns what was sent.

    `progress`, when given, is called with the number sent so far instead of the periodic log line.
    """
    rng = random.Random(plan.seed)
    await ensure_pipeline_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="event-producer", acks="all", linger_ms=5,
        **kafka_client_options(settings),
    )
    await start_kafka_client(producer, settings)
    report = ProducerReport()
    started = last_progress = time.monotonic()
    pending = []
    try:
        for n in range(plan.count):
            if stop is not None and stop.is_set():
                break
            if plan.rate_per_s > 0:
                delay = started + n / plan.rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            key, value = _next_record(rng, plan, n, report)
            pending.append(await producer.send(settings.input_topic, value, key))
            if len(pending) >= DELIVERY_CHUNK:
                await asyncio.gather(*pending)
                pending.clear()
            now = time.monotonic()
            if progress is not None and now - last_progress >= PROGRESS_REDRAW_S:
                last_progress = now
                progress(report.sent)
            elif progress is None and now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                log.info("sent %d/%d events", report.sent, plan.count)
        await asyncio.gather(*pending)
        if progress is not None:
            progress(report.sent)
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - started
    return report


def _next_record(rng: random.Random, plan: TrafficPlan, n: int, report: ProducerReport) -> tuple[bytes, bytes]:
    if rng.random() < plan.invalid_ratio:
        kind, value = random_invalid(rng, n)
        report.invalid_by_kind[kind] += 1
        return b"invalid", value
    if rng.random() < plan.unknown_user_ratio:
        user_id = plan.users + rng.randrange(plan.users)  # never loaded: a cold-start user
    else:
        user_id = rng.randrange(plan.users)
    event = random_event(rng, user_id, datetime.now(UTC))
    report.valid += 1
    if plan.keep_event_ids:
        report.event_ids.append(event.event_id)
    return encode_key(user_id), encode_event(event)
