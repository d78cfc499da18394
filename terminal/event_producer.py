"""Emits synthetic browsing events, paced to a rate, with an optional share of invalid ones; with
outcomes, also the purchases that follow them (terminal/outcomes.py), each sent once its moment has come."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaProducer

from config import Settings
from events.invalid_samples import random_invalid
from events.purchase import encode_purchase
from events.schema import Event, InputEvent, encode_event, encode_key, parse_event
from events.synthetic import random_event
from features.user import UserFeatures
from messaging.kafka_security import kafka_client_options, start_kafka_client
from terminal.topic_setup import ensure_pipeline_topics

# numpy, pandas and the database client load only for --outcomes: a plain run starts without them.
if TYPE_CHECKING:
    from terminal.outcomes import OutcomeSimulation

log = logging.getLogger(__name__)

# Deliveries awaited together; bounds memory on long runs and shows progress as it goes.
DELIVERY_CHUNK = 1_000
# Events generated in one go when the rate lets several be due at once: their purchases are drawn
# together (one ground-truth computation), and due purchases go out between blocks.
EVENT_BLOCK = 1_000
PROGRESS_INTERVAL_S = 5.0
# A progress bar redraws about this often; more would cost the send loop for nothing seen.
PROGRESS_REDRAW_S = 0.1
# Purchases are drawn for the events of up to this long together: one ground-truth computation
# costs about as much for one event as for a thousand. A purchase can fall due sooner than this
# after its event; it then goes out that much late, never early.
DRAW_INTERVAL_S = 0.05
# While only purchases are left to send, the loop wakes at least this often to show progress.
WAITING_TICK_S = 1.0
# An event is due at started + n / rate; floating point must not leave it a hair short of due.
DUE_TOLERANCE = 1e-9


@dataclass
class ProducerReport:
    valid: int = 0
    invalid_by_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    event_ids: list[str] = field(default_factory=list)  # filled only when the plan asks for it
    outcomes: bool = False
    purchases_drawn: int = 0
    purchases_sent: int = 0
    purchases_dropped: int = 0  # drawn, but not yet due when the producer stopped
    purchases_waited_s: float = 0.0  # from the last event to the last purchase sent

    @property
    def invalid(self) -> int:
        return sum(self.invalid_by_kind.values())

    @property
    def sent(self) -> int:
        return self.valid + self.invalid

    @property
    def purchases_to_come(self) -> int:
        return self.purchases_drawn - self.purchases_sent - self.purchases_dropped

    def summary(self, topic: str, purchases_topic: str | None = None) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.invalid_by_kind.items()))
        text = f"sent {self.sent} events to {topic} in {self.seconds:.1f} s ({rate:.0f}/s): {self.valid} valid, {self.invalid} invalid"
        if kinds:
            text = f"{text} ({kinds})"
        if not self.outcomes:
            return text
        text = f"{text}; {_purchases(self.purchases_sent)} to {purchases_topic}"
        if self.purchases_waited_s > 0:
            text += f", the last {self.purchases_waited_s:.1f} s after the last event"
        if self.purchases_dropped:
            text += (f"; {self.purchases_dropped} more drawn but dropped, not yet due when the producer stopped:"
                     " their events' predictions may be labelled negative")
        return text

    def purchases_progress(self) -> str:
        return f"purchases: {self.purchases_sent} sent, {self.purchases_to_come} to come"


def _purchases(count: int) -> str:
    return f"{count} purchase" if count == 1 else f"{count} purchases"


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
    # Also send the purchases that follow the events (terminal/outcomes.py).
    outcomes: bool = False
    # After the last event, how long to wait for purchases still to come; None: until the last one.
    purchase_wait_s: float | None = None


class Clock(Protocol):
    """Time as the send loop sees it; tests pass one that moves only when slept on."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float, stop: asyncio.Event | None) -> None:
        """Return after `seconds`, or sooner once `stop` is set."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await asyncio.sleep(max(seconds, 0.0))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


class RecordSender(Protocol):
    """What the loop needs of AIOKafkaProducer: `send` hands a record over and returns its delivery."""

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]: ...


ReportProgress = Callable[[ProducerReport], None]


async def produce_events(
    settings: Settings, plan: TrafficPlan, stop: asyncio.Event | None = None, progress: ReportProgress | None = None,
    store_users: Mapping[int, UserFeatures] | None = None,
) -> ProducerReport:
    """Send `plan.count` events (fewer if `stop` is set first), and with `plan.outcomes` their purchases;
    returns what was sent.

    `store_users` (terminal/outcomes_setup.read_store_users) is the offline store's users, which
    `plan.outcomes` needs. `progress`, when given, is called with the report so far instead of the
    periodic log line.
    """
    if plan.outcomes and store_users is None:
        raise ValueError("simulating outcomes needs the offline store's users (terminal/outcomes_setup.read_store_users)")
    await ensure_pipeline_topics(settings)
    simulation = None
    if plan.outcomes and store_users is not None:
        from terminal.outcomes import OutcomeSimulation
        from terminal.outcomes_setup import ensure_purchases_topic

        await ensure_purchases_topic(settings)
        simulation = OutcomeSimulation(store_users, settings.label_window_s, plan.seed)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="event-producer", acks="all", linger_ms=5,
        **kafka_client_options(settings),
    )
    await start_kafka_client(producer, settings)
    try:
        return await send_traffic(producer, settings, plan, simulation, stop, progress)
    finally:
        await producer.stop()


async def send_traffic(
    sender: RecordSender, settings: Settings, plan: TrafficPlan, simulation: OutcomeSimulation | None,
    stop: asyncio.Event | None = None, progress: ReportProgress | None = None, clock: Clock | None = None,
) -> ProducerReport:
    """The send loop of `produce_events`, on any sender and clock."""
    clock = clock or SystemClock()
    rng = random.Random(plan.seed)
    report = ProducerReport(outcomes=simulation is not None)
    deliveries = _Deliveries(sender)
    shown = _ProgressShown(progress, clock, plan.count)
    undrawn = _Undrawn(simulation, clock)
    started = clock.monotonic()
    n = 0
    while n < plan.count and not _stopped(stop):
        due = _events_due(plan, n, clock.monotonic() - started)
        if due == 0:
            next_event_in = started + n / plan.rate_per_s - clock.monotonic()
            await clock.sleep(min(next_event_in, _next_purchase_in(simulation, clock), undrawn.draw_in()), stop)
        for _ in range(due):
            key, value, event = _draw_record(rng, plan, n, report, clock.now())
            await deliveries.send(settings.input_topic, value, key)
            n += 1
            if event is not None:
                undrawn.add(value)
        if undrawn.draw_in() <= 0 or n == plan.count:
            report.purchases_drawn += undrawn.draw()
        await _send_due_purchases(simulation, deliveries, settings, clock, report)
        shown.update(report)
    report.purchases_drawn += undrawn.draw()  # after a stop too, so that the dropped are counted
    await deliveries.flush()
    report.seconds = clock.monotonic() - started
    if simulation is not None:
        await _wait_for_purchases(simulation, deliveries, settings, plan, clock, stop, report, shown)
    await deliveries.flush()
    shown.update(report, final=True)
    return report


def _stopped(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _events_due(plan: TrafficPlan, n: int, elapsed_s: float) -> int:
    """How many events to send now: those whose time has come (event n is due n / rate after the start)."""
    left = plan.count - n
    if plan.rate_per_s <= 0:
        return min(left, EVENT_BLOCK)
    due = math.floor(elapsed_s * plan.rate_per_s + DUE_TOLERANCE) + 1 - n
    return max(0, min(left, EVENT_BLOCK, due))


def _next_purchase_in(simulation: OutcomeSimulation | None, clock: Clock) -> float:
    due = None if simulation is None else simulation.schedule.next_due()
    return math.inf if due is None else (due - clock.now()).total_seconds()


async def _send_due_purchases(
    simulation: OutcomeSimulation | None, deliveries: _Deliveries, settings: Settings, clock: Clock, report: ProducerReport
) -> None:
    if simulation is None:
        return
    for purchase in simulation.due(clock.now()):
        await deliveries.send(settings.purchases_topic, encode_purchase(purchase), encode_key(purchase.user_id))
        report.purchases_sent += 1


async def _wait_for_purchases(
    simulation: OutcomeSimulation, deliveries: _Deliveries, settings: Settings, plan: TrafficPlan, clock: Clock,
    stop: asyncio.Event | None, report: ProducerReport, shown: _ProgressShown,
) -> None:
    """After the last event: send the purchases still to come as they fall due, within the plan's wait."""
    events_ended = clock.monotonic()
    deadline = math.inf if plan.purchase_wait_s is None else events_ended + plan.purchase_wait_s
    await _send_due_purchases(simulation, deliveries, settings, clock, report)  # drawn last, already due: stopped or not
    if len(simulation.schedule) and not _stopped(stop):
        last = simulation.schedule.last_due()
        log.info("waiting for %d purchases still to come, the last due at %s", len(simulation.schedule),
                 last.isoformat(timespec="seconds") if last else "-")
    while len(simulation.schedule) and not _stopped(stop):
        next_in = _next_purchase_in(simulation, clock)
        if clock.monotonic() + next_in > deadline:
            break
        await clock.sleep(min(next_in, WAITING_TICK_S), stop)
        sent_before = report.purchases_sent
        await _send_due_purchases(simulation, deliveries, settings, clock, report)
        if report.purchases_sent > sent_before:
            report.purchases_waited_s = clock.monotonic() - events_ended
        shown.update(report)
    report.purchases_dropped = len(simulation.schedule)


class _Undrawn:
    """Events sent whose purchases are not drawn yet: drawn together, at most DRAW_INTERVAL_S after the first."""

    def __init__(self, simulation: OutcomeSimulation | None, clock: Clock) -> None:
        self._simulation = simulation
        self._clock = clock
        self._events: list[Event] = []
        self._since = 0.0

    def add(self, value: bytes) -> None:
        if self._simulation is None:
            return
        if not self._events:
            self._since = self._clock.monotonic()
        self._events.append(parse_event(value))  # the event as the service reads it

    def draw_in(self) -> float:
        """Seconds until the events in hand must be drawn; infinite when there are none."""
        if not self._events:
            return math.inf
        if len(self._events) >= EVENT_BLOCK:
            return 0.0
        return self._since + DRAW_INTERVAL_S - self._clock.monotonic()

    def draw(self) -> int:
        """Draw the purchases of the events in hand (scheduling them); returns how many."""
        if self._simulation is None or not self._events:
            return 0
        drawn = len(self._simulation.draw(self._events))
        self._events = []
        return drawn


class _Deliveries:
    """Records handed to the sender, their acknowledgements awaited a chunk at a time."""

    def __init__(self, sender: RecordSender) -> None:
        self._sender = sender
        self._pending: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> None:
        self._pending.append(await self._sender.send(topic, value, key))
        if len(self._pending) >= DELIVERY_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        await asyncio.gather(*self._pending)
        self._pending.clear()


class _ProgressShown:
    """The progress callback at most every PROGRESS_REDRAW_S, or else a log line every PROGRESS_INTERVAL_S."""

    def __init__(self, progress: ReportProgress | None, clock: Clock, total: int) -> None:
        self._progress = progress
        self._clock = clock
        self._total = total
        self._last = clock.monotonic()

    def update(self, report: ProducerReport, final: bool = False) -> None:
        now = self._clock.monotonic()
        if self._progress is not None:
            if final or now - self._last >= PROGRESS_REDRAW_S:
                self._last = now
                self._progress(report)
        elif not final and now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            if report.outcomes:
                log.info("sent %d/%d events, %s", report.sent, self._total, report.purchases_progress())
            else:
                log.info("sent %d/%d events", report.sent, self._total)


def _next_record(rng: random.Random, plan: TrafficPlan, n: int, report: ProducerReport) -> tuple[bytes, bytes]:
    key, value, _event = _draw_record(rng, plan, n, report, datetime.now(UTC))
    return key, value


def _draw_record(
    rng: random.Random, plan: TrafficPlan, n: int, report: ProducerReport, at: datetime
) -> tuple[bytes, bytes, InputEvent | None]:
    """The next record as key and value, and the event it holds (None for an invalid record)."""
    if rng.random() < plan.invalid_ratio:
        kind, value = random_invalid(rng, n)
        report.invalid_by_kind[kind] += 1
        return b"invalid", value, None
    if rng.random() < plan.unknown_user_ratio:
        user_id = plan.users + rng.randrange(plan.users)  # never loaded: a cold-start user
    else:
        user_id = rng.randrange(plan.users)
    event = random_event(rng, user_id, at)
    report.valid += 1
    if plan.keep_event_ids:
        report.event_ids.append(event.event_id)
    return encode_key(user_id), encode_event(event), event
