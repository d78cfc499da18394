"""The purchase schedule: nothing comes out before its moment, and everything in order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from events.purchase import Purchase
from terminal.outcomes_schedule import PurchaseSchedule

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def purchase(n: int, at: datetime) -> Purchase:
    return Purchase(f"p-{n}", n % 7, 10.0 + n, at)


def test_a_purchase_is_never_handed_out_before_its_timestamp():
    """Asked at moments moving forward by random steps, the schedule hands out each purchase once, at or after its
    moment, and every one whose moment has passed; at the end none is left."""
    rng = random.Random(1)
    schedule = PurchaseSchedule()
    added = [purchase(n, T0 + timedelta(seconds=rng.uniform(0, 60))) for n in range(500)]
    for p in added:
        schedule.add(p)
    now, handed = T0 - timedelta(seconds=1), []
    while now < T0 + timedelta(seconds=61):
        now += timedelta(seconds=rng.uniform(0, 2))
        due = schedule.pop_due(now)
        assert all(p.timestamp <= now for p in due)
        next_due = schedule.next_due()
        assert next_due is None or next_due > now  # nothing due left behind
        handed += due
    assert sorted(handed, key=lambda p: p.purchase_id) == sorted(added, key=lambda p: p.purchase_id)
    assert [p.timestamp for p in handed] == sorted(p.timestamp for p in added)
    assert len(schedule) == 0 and schedule.last_due() is None


def test_next_and_last_due_follow_what_is_waiting():
    """next_due is the earliest waiting purchase, last_due the latest; equal moments are both kept."""
    schedule = PurchaseSchedule()
    assert schedule.next_due() is None and schedule.last_due() is None
    for n, seconds in enumerate((30, 10, 10, 50)):
        schedule.add(purchase(n, T0 + timedelta(seconds=seconds)))
    assert schedule.next_due() == T0 + timedelta(seconds=10) and schedule.last_due() == T0 + timedelta(seconds=50)
    assert [p.purchase_id for p in schedule.pop_due(T0 + timedelta(seconds=10))] == ["p-1", "p-2"]
    assert schedule.next_due() == T0 + timedelta(seconds=30) and len(schedule) == 2
    assert schedule.pop_due(T0 + timedelta(seconds=29)) == []
