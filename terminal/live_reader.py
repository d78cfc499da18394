"""`consumer.py --live`: reads predictions and dead letters together, follows the quality monitor's
snapshots beside them, and redraws the live view."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from config import Settings
from events.dead_letter import ERROR_KIND, read_dead_letter_headers
from events.schema import decode_prediction
from messaging.kafka_security import kafka_client_options, start_kafka_client
from terminal.live_view import LiveTally, render
from terminal.prediction_reader import ReadPlan
from terminal.quality_feed import QualityFeed
from terminal.topic_setup import ensure_pipeline_topics

if TYPE_CHECKING:  # rich loads only when the live view is shown
    from rich.console import Console

REFRESH_PER_S = 4
# The quality feed stops at its next poll; this bounds a feed still waiting on Kafka.
FEED_STOP_S = 2.0


async def watch_live(settings: Settings, plan: ReadPlan, stop: asyncio.Event, console: Console | None = None) -> LiveTally:
    """Redraw until `plan.count` predictions are read, `plan.idle_timeout_s` passes without a record, or `stop` is set.

    Not on a terminal (a pipe, a file), there is nothing to redraw: the last picture is printed once at the end.
    """
    from rich.console import Console
    from rich.live import Live

    console = Console() if console is None else console

    await ensure_pipeline_topics(settings)
    consumer = AIOKafkaConsumer(
        settings.output_topic, settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="prediction-live-view",
        group_id=None,  # a reader: it must never take partitions from the service
        auto_offset_reset="earliest" if plan.from_beginning else "latest",
        isolation_level="read_committed",  # as prediction_reader: committed transactions only
        **kafka_client_options(settings),
    )
    await start_kafka_client(consumer, settings)
    tally = LiveTally()
    feed = QualityFeed(settings)
    feed_stop = asyncio.Event()
    feed_task = asyncio.create_task(feed.follow(feed_stop))
    try:
        for tp in consumer.assignment():
            await consumer.position(tp)
        last_record = time.monotonic()
        live = Live(render(tally, quality=feed.state), console=console, refresh_per_second=REFRESH_PER_S) if console.is_terminal else None
        with live if live is not None else contextlib.nullcontext():
            while not stop.is_set() and (plan.count is None or tally.predictions < plan.count):
                batches = await consumer.getmany(timeout_ms=1000 // REFRESH_PER_S)
                records = [record for partition in batches.values() for record in partition]
                if records:
                    last_record = time.monotonic()
                elif plan.idle_timeout_s is not None and time.monotonic() - last_record >= plan.idle_timeout_s:
                    break
                for record in records:
                    if plan.count is not None and tally.predictions >= plan.count:
                        break
                    _count(record, settings, tally)
                if live is not None:
                    live.update(render(tally, quality=feed.state))
    finally:
        feed_stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(feed_task, FEED_STOP_S)
        await consumer.stop()
    if live is None:
        console.print(render(tally, quality=feed.state))
    return tally


def _count(record: ConsumerRecord, settings: Settings, tally: LiveTally) -> None:
    if record.topic == settings.dlq_topic:
        tally.add_dead_letter(read_dead_letter_headers(record.headers).get(ERROR_KIND, "?"))
        return
    try:
        prediction = decode_prediction(record.value or b"")
    except msgspec.MsgspecError:
        tally.unreadable += 1
        return
    tally.add_prediction(prediction, datetime.now(UTC))
