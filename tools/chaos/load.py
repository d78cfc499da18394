"""The load: a planned stream of events, each with an id the verdict can trace, sent at a steady rate.

Every record, valid or not, carries a unique id `chaos-<run>-<n>`: a valid event as its
event_id, an invalid one somewhere in its raw bytes, which a dead letter keeps as they were.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from config import Settings
from events.schema import InputEvent, InvalidEvent, encode_event, encode_key, parse_event
from events.synthetic import random_pages
from messaging.kafka_security import kafka_client_options

INVALID_SHARE = 0.02
# Like producer.py: a few events from users the store has never seen (cold start).
UNKNOWN_USER_SHARE = 0.02
ID_PATTERN = re.compile(rb"chaos-[0-9a-f]{6}-[0-9]{7}")
_ID_USER = '"event_id": "{id}", "user_id": {user}'
_WHEN = '"timestamp": "2026-11-26T12:00:00Z"'
_PAGES = '"last_three_pages_visited": ["home", "product", "cart"]'
# (the dead-letter kind the service must give it, the raw record with {id} and {user} to fill in)
INVALID_FORMS: tuple[tuple[str, str], ...] = (
    ("not_json", "{id} looked at the cart"),
    ("not_json", "{{" + _ID_USER + ', "timest'),
    ("invalid_field", '{{"event_id": "{id}", "user_id": "{user}", ' + _WHEN + ", " + _PAGES + "}}"),
    ("invalid_field", "{{" + _ID_USER + ', "timestamp": "yesterday", ' + _PAGES + "}}"),
    ("invalid_field", "{{" + _ID_USER + ", " + _WHEN + "}}"),
    ("invalid_pages", "{{" + _ID_USER + ", " + _WHEN + ', "last_three_pages_visited": "home/cart"}}'),
    ("invalid_pages", "{{" + _ID_USER + ", " + _WHEN + ', "last_three_pages_visited": ["home", "product", "cart", "checkout"]}}'),
)
# Deliveries awaited together: bounds memory, and a broker outage stalls the pacing, not the count.
DELIVERY_CHUNK = 500
# Long enough to ride out a killed broker's outage and restart, so no event is given up on.
REQUEST_TIMEOUT_MS = 180_000


@dataclass(frozen=True)
class PlannedEvent:
    event_id: str
    user_id: int
    key: bytes
    value: bytes
    pages: tuple[str, str, str] | None  # None: an invalid record
    invalid_kind: str | None = None


def make_plan(run: str, count: int, users: int, seed: int) -> list[PlannedEvent]:
    """`count` records for users 0..users-1 (and a few unknown ones), about 2% of them invalid."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    plan = []
    for n in range(count):
        event_id = f"chaos-{run}-{n:07d}"
        user_id = users + rng.randrange(users) if rng.random() < UNKNOWN_USER_SHARE else rng.randrange(users)
        if rng.random() < INVALID_SHARE:
            kind, form = rng.choice(INVALID_FORMS)
            value = form.format(id=event_id, user=user_id).encode()
            plan.append(PlannedEvent(event_id, user_id, encode_key(user_id), value, None, _checked(kind, value)))
        else:
            pages = random_pages(rng)
            value = encode_event(InputEvent(event_id, user_id, now, pages))
            plan.append(PlannedEvent(event_id, user_id, encode_key(user_id), value, pages))
    return plan


def _checked(kind: str, value: bytes) -> str:
    # The schema decides what is invalid; a form it no longer rejects as planned is a harness bug.
    try:
        parse_event(value)
    except InvalidEvent as error:
        if error.kind == kind:
            return kind
        raise AssertionError(f"{value!r} is rejected as {error.kind}, not {kind}") from None
    raise AssertionError(f"{value!r} is accepted by the schema")


@dataclass
class LoadReport:
    planned: int
    sent: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by Kafka
    failures: Counter[str] = field(default_factory=Counter)  # error type → records Kafka never took
    seconds: float = 0.0


async def send_paced(
    settings: Settings, topic: str, plan: list[PlannedEvent], rate_per_s: float, report: LoadReport,
    on_fail: Callable[[str], None],
) -> None:
    """Send the plan at `rate_per_s`, keyed by user id; after an outage, the backlog goes at once."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="chaos-load", acks="all", **kafka_client_options(settings),
        # The broker drops a retried batch it already has: a broker killed mid-request must not
        # double an input record, or the verdict would count the service's duplicates wrong.
        enable_idempotence=True, linger_ms=5, request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    await producer.start()
    started = time.monotonic()
    count = _counter(report, on_fail)
    pending: list[asyncio.Future[Any]] = []
    try:
        for n, event in enumerate(plan):
            delay = started + n / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            delivery = await producer.send(topic, event.value, event.key)
            delivery.add_done_callback(count)
            pending.append(delivery)
            report.sent += 1
            if len(pending) >= DELIVERY_CHUNK:
                await asyncio.wait(pending)
                pending.clear()
        if pending:
            await asyncio.wait(pending)
    finally:
        report.seconds = time.monotonic() - started
        await producer.stop()


def _counter(report: LoadReport, on_fail: Callable[[str], None]) -> Callable[[asyncio.Future[Any]], None]:
    """Counts each delivery as Kafka answers it, so the progress lines show acknowledgements as they come."""

    def count(delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled():
            return
        error = delivery.exception()
        if error is None:
            report.delivered += 1
            return
        if not report.failures:
            on_fail(f"the load producer lost a record: {type(error).__name__}: {error}")
        report.failures[type(error).__name__] += 1

    return count
