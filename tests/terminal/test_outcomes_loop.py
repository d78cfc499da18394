"""The producer's send loop with outcomes, on a clock that moves only when the loop sleeps: purchases go
out at their moment (never before), the wait after the last event is bounded, a stop drops and counts."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from config import Settings
from events.purchase import Purchase, decode_purchase
from events.schema import parse_event
from features.user import UserFeatures
from terminal.event_producer import ProducerReport, TrafficPlan, send_traffic
from terminal.outcomes import OutcomeSimulation

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW_S = 20
# Events come every 0.1 s in these tests: a loop that looked for due purchases only at events would be later.
MAX_LATENESS = timedelta(milliseconds=60)
SETTINGS = Settings(input_topic="events", purchases_topic="buys", label_window_s=WINDOW_S)


class FakeClock:
    """Time that passes only when slept on; no real waiting."""

    def __init__(self) -> None:
        self.elapsed_s = 0.0

    def monotonic(self) -> float:
        return self.elapsed_s

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed_s)

    async def sleep(self, seconds: float, stop: asyncio.Event | None) -> None:
        assert seconds < float("inf"), "the loop must never sleep without an end"
        self.elapsed_s += max(seconds, 0.0)


@dataclass
class Sent:
    at: datetime
    topic: str
    key: bytes
    value: bytes


class FakeSender:
    """Records what is sent and when; sets `stop` once `stop_after` events are sent."""

    def __init__(self, clock: FakeClock, stop: asyncio.Event | None = None, stop_after: int | None = None) -> None:
        self.clock, self.stop, self.stop_after = clock, stop, stop_after
        self.sent: list[Sent] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append(Sent(self.clock.now(), topic, key, value))
        if self.stop is not None and self.stop_after is not None and len(self.events()) >= self.stop_after:
            self.stop.set()
        delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def events(self) -> list[Sent]:
        return [s for s in self.sent if s.topic == "events"]

    def purchases(self) -> list[tuple[Sent, Purchase]]:
        return [(s, decode_purchase(s.value)) for s in self.sent if s.topic == "buys"]


def store_users() -> dict[int, UserFeatures]:
    rng = random.Random(2)
    return {u: UserFeatures(rng.uniform(5, 200), rng.randint(1, 20), T0.timestamp() - rng.uniform(0, 90) * 86_400) for u in range(0, 60, 2)}


def plan(**overrides: Any) -> TrafficPlan:
    values: dict[str, Any] = {"count": 400, "rate_per_s": 10.0, "seed": 4, "invalid_ratio": 0.1, "users": 60,
                              "unknown_user_ratio": 0.1, "outcomes": True, **overrides}
    return TrafficPlan(**values)


async def run(traffic: TrafficPlan, stop: asyncio.Event | None = None, stop_after: int | None = None,
              outcomes: bool = True) -> tuple[ProducerReport, FakeSender, FakeClock]:
    clock = FakeClock()
    sender = FakeSender(clock, stop, stop_after)
    simulation = OutcomeSimulation(store_users(), WINDOW_S, traffic.seed) if outcomes else None
    report = await send_traffic(sender, SETTINGS, traffic, simulation, stop, clock=clock)
    return report, sender, clock


async def test_purchases_go_out_at_their_moment_never_before():
    """Every purchase is sent at or after its timestamp, and soon after (the loop wakes for it between events;
    a purchase due within 50 ms of its event may wait until it is drawn); after the last event the loop
    waits for the rest, so all that were drawn are sent."""
    report, sender, _clock = await run(plan())
    sent = sender.purchases()
    assert len(sent) == report.purchases_sent == report.purchases_drawn > 20
    assert report.purchases_dropped == 0 and report.purchases_to_come == 0
    for record, purchase in sent:
        assert purchase.timestamp <= record.at <= purchase.timestamp + MAX_LATENESS, (record.at, purchase)
        assert record.key == str(purchase.user_id).encode()
    last_event = sender.events()[-1].at
    assert any(purchase.timestamp > last_event for _record, purchase in sent), "some purchases are sent after the last event"
    assert 0 < report.purchases_waited_s <= WINDOW_S
    assert f"; {len(sent)} purchases to buys, the last" in report.summary("events", "buys")


async def test_each_purchase_follows_an_event_of_its_user_within_the_window():
    """A purchase's user had a valid event in the window before it: invalid records and unseen users never buy."""
    _report, sender, _clock = await run(plan())
    events_by_user: dict[int, list[datetime]] = {}
    for record in sender.events():
        if record.key != b"invalid":
            event = parse_event(record.value)
            events_by_user.setdefault(event.user_id, []).append(event.timestamp)
    for _record, purchase in sender.purchases():
        times = events_by_user.get(purchase.user_id, [])
        assert any(t < purchase.timestamp <= t + timedelta(seconds=WINDOW_S) for t in times), purchase


async def test_the_wait_after_the_last_event_is_bounded_and_the_rest_counted():
    """With a purchase wait of 5 s, purchases due within it are sent and the later ones dropped and counted."""
    report, sender, clock = await run(plan(purchase_wait_s=5.0))
    last_event = sender.events()[-1].at
    assert report.purchases_dropped > 0
    assert report.purchases_sent + report.purchases_dropped == report.purchases_drawn
    assert all(record.at <= last_event + timedelta(seconds=5) for record, _ in sender.purchases())
    assert clock.now() <= last_event + timedelta(seconds=5)
    assert f"; {report.purchases_dropped} more drawn but dropped" in report.summary("events", "buys")


async def test_a_stop_ends_the_run_at_once_and_counts_the_purchases_not_yet_due():
    """Stopped after 100 events, the loop sends no further event, waits for no purchase, and reports the dropped ones."""
    stop = asyncio.Event()
    report, sender, clock = await run(plan(), stop, stop_after=100)
    assert len(sender.events()) == report.sent == 100
    assert report.purchases_dropped == report.purchases_drawn - report.purchases_sent > 0
    assert clock.now() == sender.events()[-1].at


async def test_outcomes_leave_the_event_stream_as_it_was():
    """The same seed sends the same events (ids, users, pages, invalid records) with outcomes or without."""
    with_outcomes, sender_with, _ = await run(plan(count=200))
    without, sender_without, _ = await run(plan(count=200, outcomes=False), outcomes=False)

    def stream(sender: FakeSender) -> list[tuple[bytes, Any]]:
        return [(s.key, s.value if s.key == b"invalid" else _identity(s.value)) for s in sender.events()]

    assert stream(sender_with) == stream(sender_without)
    assert with_outcomes.purchases_sent > 0 and sender_without.purchases() == []
    assert "purchases" in with_outcomes.summary("events", "buys") and "purchases" not in without.summary("events", "buys")


def _identity(value: bytes) -> tuple[str, int, tuple[str, str, str]]:
    event = parse_event(value)
    return event.event_id, event.user_id, event.pages


@pytest.mark.parametrize("rate", [0.0, 1_000.0])
async def test_events_sent_in_blocks_still_get_their_purchases(rate: float):
    """As fast as possible (blocks of events drawn together) every event is sent and purchases follow as ever."""
    report, sender, _clock = await run(plan(count=3_000, rate_per_s=rate))
    assert len(sender.events()) == report.sent == 3_000
    assert report.purchases_sent == report.purchases_drawn > 100
    assert all(purchase.timestamp <= record.at for record, purchase in sender.purchases())
