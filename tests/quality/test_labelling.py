"""Labelling by event time: the label rule at its edges, the watermark, late records and repeats."""

from __future__ import annotations

import random

import pytest

from events.purchase import Purchase
from events.schema import Prediction
from tests.quality.builders import T0, labelled, prediction, purchase, tracker, window_labels

WINDOW_S = 10


def label_of(purchase_at_s: float | None, event_at_s: float = 100.0) -> tuple[int, int]:
    """(positive, negative) for one prediction at `event_at_s` and one purchase of its user, once the window closed."""
    t = tracker(WINDOW_S)
    t.prediction(prediction("e1", 7, event_at_s), "serving")
    if purchase_at_s is not None:
        t.purchase(purchase(7, purchase_at_s))
    t.purchase(purchase(999, event_at_s + WINDOW_S + 1))  # another user's purchase moves the watermark past the window
    return labelled(t)


@pytest.mark.parametrize(
    ("purchase_at_s", "expected"),
    [
        (100.0, (0, 1)),  # at the event itself: the window is (t, t + window]
        (100.000001, (1, 0)),  # the first microsecond after it
        (101.0, (1, 0)),  # one second after
        (110.0, (1, 0)),  # exactly at t + window: inside
        (110.000001, (0, 1)),  # one microsecond past the window
        (99.0, (0, 1)),  # before the event
        (None, (0, 1)),  # no purchase at all
    ],
)
def test_the_label_rule_at_its_edges(purchase_at_s, expected):
    assert label_of(purchase_at_s) == expected


def test_another_users_purchase_does_not_label_positive():
    t = tracker(WINDOW_S)
    t.prediction(prediction("e1", 7, 100), "serving")
    t.purchase(purchase(8, 105))
    t.purchase(purchase(999, 200))
    assert labelled(t) == (0, 1)


def test_a_prediction_waits_until_the_watermark_passes_its_window_and_the_allowance():
    t = tracker(WINDOW_S, allowance_s=5)
    t.prediction(prediction("e1", 7, 100), "serving")
    t.purchase(purchase(7, 104))
    t.purchase(purchase(999, 114.999))  # W = 109.999: the window closes at 110
    assert labelled(t) == (0, 0) and len(t.pending) == 1
    t.purchase(purchase(999, 115))  # W = 110
    assert labelled(t) == (1, 0) and len(t.pending) == 0
    assert t.max_event_time_us is not None and t.watermark_us == t.max_event_time_us - 5_000_000


def test_a_late_purchase_is_counted_and_still_labels_a_pending_prediction():
    t = tracker(WINDOW_S, allowance_s=0)
    t.prediction(prediction("e1", 7, 100), "serving")
    t.purchase(purchase(999, 105))  # W = 105
    t.purchase(purchase(7, 103))  # 103 <= W: late, but e1 (window to 110) is not labelled yet
    assert t.late_purchases == 1
    t.purchase(purchase(999, 111))
    assert labelled(t) == (1, 0)


def test_a_purchase_later_than_a_labelled_window_is_counted_and_changes_nothing():
    t = tracker(WINDOW_S, allowance_s=0)
    t.prediction(prediction("e1", 7, 100), "serving")
    t.purchase(purchase(999, 130))  # e1 labelled negative; purchases up to 120 are forgotten
    t.purchase(purchase(7, 105))
    assert t.late_purchases == 1
    assert labelled(t) == (0, 1)
    assert len(t.purchases) == 1  # only the one at 130 is kept


def test_a_purchase_on_time_is_not_late():
    t = tracker(WINDOW_S, allowance_s=5)
    t.purchase(purchase(999, 100))  # W = 95
    t.purchase(purchase(7, 96))  # after W
    assert t.late_purchases == 0


def test_a_prediction_read_after_its_label_time_is_counted_late_and_not_labelled():
    t = tracker(WINDOW_S, allowance_s=0)
    t.purchase(purchase(999, 200))  # W = 200
    t.prediction(prediction("old", 7, 190), "serving")  # label time 200 <= W
    t.prediction(prediction("recent", 7, 191), "serving")
    assert t.late_predictions == 1
    assert len(t.pending) == 1


def test_a_repeated_prediction_is_labelled_once_while_pending_and_counted_late_after():
    t = tracker(WINDOW_S)
    t.prediction(prediction("e1", 7, 100), "serving")
    t.prediction(prediction("e1", 7, 100), "serving")  # at_least_once may publish an event twice
    assert len(t.pending) == 1
    t.purchase(purchase(999, 111))
    t.prediction(prediction("e1", 7, 100), "serving")  # once more, after its label
    assert labelled(t) == (0, 1)
    assert t.late_predictions == 1


def test_serving_and_shadow_predictions_of_one_event_are_labelled_each_in_its_own_book():
    t = tracker(WINDOW_S)
    t.prediction(prediction("e1", 7, 100, 0.9, version="v1"), "serving")
    t.prediction(prediction("e1", 7, 100, 0.2, version="v2"), "shadow")
    t.purchase(purchase(7, 102))
    t.purchase(purchase(999, 111))
    assert labelled(t, "v1", "serving") == (1, 0)
    assert labelled(t, "v2", "shadow") == (1, 0)


def test_a_model_version_is_counted_apart_from_another():
    t = tracker(WINDOW_S)
    t.prediction(prediction("e1", 7, 100, version="v1"), "serving")
    t.prediction(prediction("e2", 7, 101, version="v2"), "serving")
    t.purchase(purchase(999, 112))
    assert labelled(t, "v1") == (0, 1) and labelled(t, "v2") == (0, 1)


def test_predictions_are_labelled_in_event_time_then_event_id_order_whatever_order_they_arrive_in():
    t = tracker(WINDOW_S, allowance_s=30)
    users_that_buy = {1, 4}
    # (event id, user, event time): the ids tie at 100 s to check the second key.
    events = [("c", 1, 100), ("a", 2, 100), ("b", 3, 101), ("d", 4, 99)]
    for event_id, user, seconds in reversed(events):
        t.prediction(prediction(event_id, user, seconds), "serving")
    for user in users_that_buy:
        t.purchase(purchase(user, 105))
    t.purchase(purchase(999, 200))
    # Sorted by (time, id): d (user 4), a (user 2), c (user 1), b (user 3).
    assert window_labels(t) == [1, 0, 1, 0]


def snapshot_figures(t) -> tuple:
    snapshot = t.snapshot(T0)
    return (snapshot.watermark, snapshot.pending, snapshot.late_purchases,
            tuple((m.model_version, m.role, m.labelled, m.labelled_positive, m.auc, m.log_loss, m.ece) for m in snapshot.models))


def test_any_read_order_within_the_allowance_gives_the_same_labels_and_figures():
    """Records that arrive out of order by less than the allowance change nothing."""
    rng = random.Random(5)
    records: list[tuple[str, Prediction | Purchase]] = []
    for i in range(300):
        seconds = i * 0.5
        user = rng.randrange(20)
        records.append(("prediction", prediction(f"e{i:04d}", user, seconds, probability=rng.random())))
        if rng.random() < 0.3:
            records.append(("purchase", purchase(user, seconds + rng.uniform(0.1, 12))))
    records.sort(key=lambda record: record[1].timestamp)

    def run(order) -> tuple:
        t = tracker(WINDOW_S, allowance_s=20, window_size=50)
        for _kind, record in order:
            if isinstance(record, Prediction):
                t.prediction(record, "serving")
            else:
                t.purchase(record)
        return snapshot_figures(t)

    # Shuffle only within blocks of 10 s of event time: disorder well inside the 20 s allowance.
    shuffled = sorted(records, key=lambda record: (record[1].timestamp.timestamp() // 10, rng.random()))
    assert shuffled != records
    in_order, disordered = run(records), run(shuffled)
    assert in_order == disordered
    assert in_order[3][0][2] > 200  # most predictions were labelled
