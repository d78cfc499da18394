"""The purchase sink's parts that need neither Kafka nor MySQL: what it refuses to write, and users refreshed later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord

from events.purchase import Purchase, encode_purchase
from events.schema import InvalidEvent, WithheldValue
from offline_store.due_refreshes import DueRefreshes
from offline_store.purchase_sink import decode_storable
from offline_store.purchase_writes import check_storable

T0 = datetime(2026, 12, 5, 17, 0, tzinfo=UTC)


def record(value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("purchases", 0, 7, 0, 0, b"42", value, None, 0, len(value or b""), [])


def test_a_purchase_dated_before_the_year_1000_is_refused_not_retried():
    """The store's DATETIME cannot hold it: an invalid record to dead-letter, not a write to retry for ever."""
    with pytest.raises(InvalidEvent, match="year 1000") as refused:
        check_storable(Purchase("old", 1, 5.0, datetime(999, 12, 31, tzinfo=UTC)))
    assert refused.value.kind == "invalid_field"
    assert check_storable(Purchase("ok", 1, 5.0, datetime(1000, 1, 1, tzinfo=UTC))).purchase_id == "ok"


def test_records_decode_into_purchases_or_say_why_not():
    """A valid record is its purchase; bad JSON, a bad field and a withheld (decompression bomb) value each say their kind."""
    purchase = Purchase("p-1", 42, 19.9, T0)
    assert decode_storable(record(encode_purchase(purchase))) == purchase
    kinds = []
    for value in (b"{not json", b'{"purchase_id": "p", "user_id": -1, "amount": 1, "timestamp": "2026-12-05T17:00:00Z"}',
                  WithheldValue("decompression_bomb", "expands past the bound"), None):
        with pytest.raises(InvalidEvent) as refused:
            decode_storable(record(value))
        kinds.append(refused.value.kind)
    assert kinds == ["not_json", "invalid_field", "decompression_bomb", "empty"]


def test_users_come_due_in_time_order_each_once():
    """Users wait until their purchase's time; a user due twice is refreshed once."""
    due = DueRefreshes()
    due.add(T0 + timedelta(seconds=20), 2)
    due.add(T0 + timedelta(seconds=10), 1)
    due.add(T0 + timedelta(seconds=15), 1)
    assert due.pop_due(T0 + timedelta(seconds=5)) == set()
    assert due.pop_due(T0 + timedelta(seconds=15)) == {1}
    assert len(due) == 1
    assert due.pop_due(T0 + timedelta(seconds=60)) == {2}


def test_users_waiting_are_bounded(caplog):
    """Past the bound further users are not held (and a warning says so once), so the sink's memory stays bounded."""
    due = DueRefreshes(max_size=3)
    for user_id in range(10):
        due.add(T0, user_id)
    assert len(due) == 3
    assert sum("wait for purchases dated ahead" in r.getMessage() for r in caplog.records) == 1
    assert due.pop_due(T0) == {0, 1, 2}
