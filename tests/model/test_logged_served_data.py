"""Joining served predictions with their events, and holding out the most recent of them, without Kafka or MySQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from events.schema import Prediction, encode_prediction
from model.logged import MIN_LABELLED_EVENTS, MIN_PER_CLASS, split_by_time
from model.served_data import NoServedData, ServedCollector
from offline_store.point_in_time import label_horizon
from tests.factories import event_bytes

START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def prediction(event_id: str, seconds: float, user_id: int = 1, probability: float = 0.25, version: str = "v1") -> Prediction:
    moment = START + timedelta(seconds=seconds)
    return Prediction(event_id, user_id, probability, version, moment, moment + timedelta(milliseconds=40))


def event(event_id: str, pages=("home", "product", "cart"), user_id: int = 1) -> bytes:
    return event_bytes(user_id=user_id, pages=pages, event_id=event_id, timestamp=START.isoformat())


def test_predictions_join_their_events_oldest_first():
    collector = ServedCollector()
    collector.add_prediction(prediction("late", 30, user_id=2, probability=0.75, version="v2"))
    collector.add_prediction(prediction("early", 10))
    collector.add_event_record(event("early", ("home", "home", "cart")))
    collector.add_event_record(event("late", ("cart", "cart", "checkout"), user_id=2))
    history = collector.history()
    assert history.event_ids == ["early", "late"]
    assert history.user_ids.tolist() == [1, 2]
    assert history.event_at_s.tolist() == [(START + timedelta(seconds=s)).timestamp() for s in (10, 30)]
    assert history.pages == [("home", "home", "cart"), ("cart", "cart", "checkout")]
    assert history.probabilities.tolist() == [0.25, 0.75]
    assert history.model_versions == ["v1", "v2"]
    assert history.event_times()[1] == START + timedelta(seconds=30)


def test_a_repeated_event_id_counts_once_with_its_first_prediction_and_first_event():
    collector = ServedCollector()
    collector.add_prediction(prediction("e", 10, probability=0.25, version="v1"))
    collector.add_prediction(prediction("e", 10, probability=0.5, version="v2"))  # a replay after a crash
    collector.add_event_record(event("e", ("home", "product", "cart")))
    collector.add_event_record(event("e", ("help", "help", "help")))
    history = collector.history()
    assert len(history) == 1
    assert (history.probabilities.tolist(), history.model_versions, history.pages) == ([0.25], ["v1"], [("home", "product", "cart")])
    assert history.counts.duplicate_predictions == 1


def test_events_without_a_prediction_are_skipped_and_predictions_without_an_event_left_out():
    collector = ServedCollector()
    collector.add_prediction(prediction("predicted", 10))
    collector.add_prediction(prediction("event-lost", 20))
    collector.add_event_record(event("predicted"))
    collector.add_event_record(event("never-predicted"))
    collector.add_event_record(b'{"event_id": "bad"}')  # dead-lettered by the service
    assert not collector.all_joined
    history = collector.history()
    assert history.event_ids == ["predicted"]
    assert history.counts.events == 3
    assert history.counts.invalid_events == 1
    assert history.counts.predictions_without_event == 1


def test_unreadable_predictions_are_counted_not_fatal():
    collector = ServedCollector()
    collector.add_prediction_record(b"not json")
    collector.add_prediction_record(encode_prediction(prediction("ok", 5)))
    assert (collector.counts.predictions, collector.counts.unreadable_predictions, len(collector)) == (2, 1, 1)


def test_the_collector_holds_at_most_max_events_and_says_it_stopped():
    collector = ServedCollector(max_events=3)
    for number in range(5):
        collector.add_prediction(prediction(f"e{number}", number))
    assert len(collector) == 3
    assert collector.full
    assert collector.counts.limit_reached


def test_every_prediction_joined_ends_the_input_read():
    collector = ServedCollector()
    collector.add_prediction(prediction("a", 1))
    collector.add_prediction(prediction("b", 2))
    collector.add_event_record(event("a"))
    assert not collector.all_joined
    collector.add_event_record(event("b"))
    assert collector.all_joined


def alternating_labels(rows: int) -> np.ndarray:
    return (np.arange(rows) % 4 == 0).astype(np.int8)


def test_the_hold_out_is_the_most_recent_share():
    split = split_by_time(alternating_labels(1_000), 0.25)
    assert (split.at, split.holdout_rows) == (750, 250)


def test_too_few_labelled_events_are_refused_with_what_to_do():
    with pytest.raises(NoServedData, match=rf"only {MIN_LABELLED_EVENTS - 1} served events .* at least {MIN_LABELLED_EVENTS}") as caught:
        split_by_time(alternating_labels(MIN_LABELLED_EVENTS - 1), 0.25)
    assert caught.value.exit_code == 4
    assert "--since" in str(caught.value)


def test_no_purchase_at_all_is_refused_and_the_store_suspected():
    with pytest.raises(NoServedData, match=r"0 purchases .* are purchases reaching the offline store"):
        split_by_time(np.zeros(1_000, dtype=np.int8), 0.25)


def test_a_hold_out_without_enough_purchases_is_refused():
    """Purchases only in the older events: the most recent ones cannot rank anything."""
    labels = np.zeros(1_000, dtype=np.int8)
    labels[:200] = 1
    labels[-(MIN_PER_CLASS - 1):] = 1
    with pytest.raises(NoServedData, match=rf"the hold-out events \(250 of 1000\) hold {MIN_PER_CLASS - 1} purchases"):
        split_by_time(labels, 0.25)


def test_label_windows_close_behind_both_the_store_and_the_clock():
    now = START + timedelta(hours=2)
    behind_clock = START + timedelta(hours=1)
    assert label_horizon(behind_clock, now, 60) == behind_clock - timedelta(seconds=60)
    # A purchase dated in the future (a skewed clock) does not close windows that have not ended.
    assert label_horizon(now + timedelta(days=1), now, 60) == now - timedelta(seconds=60)
    assert label_horizon(None, now, 60) is None
