"""The cap on pending predictions: past it, a sample by a hash of the event id, with everything it lets go counted."""

from __future__ import annotations

from quality.pending import Admission, PendingPrediction, PendingPredictions, sample_hash
from tests.quality.builders import prediction, purchase, tracker


def pending(event_id: str, seconds: int = 0, role: str = "serving") -> PendingPrediction:
    return PendingPrediction(seconds, event_id, role, 1, 0.5, "v1", replayed=False)


def test_the_hash_is_stable_and_spread():
    assert sample_hash("event-1") == sample_hash("event-1")
    low_bits = [sample_hash(f"event-{i}") & 1 for i in range(2_000)]
    assert 900 < sum(low_bits) < 1_100


def test_below_the_cap_everything_is_admitted_once():
    queue = PendingPredictions(capacity=10)
    assert queue.admit(pending("a")) == (Admission.ADMITTED, 0)
    assert queue.admit(pending("a")) == (Admission.DUPLICATE, 0)
    assert queue.admit(pending("a", role="shadow")) == (Admission.ADMITTED, 0)
    assert len(queue) == 2 and queue.sample_level == 0


def test_at_the_cap_the_sample_halves_and_what_it_lets_go_is_accounted_for():
    capacity = 100
    queue = PendingPredictions(capacity)
    offered, admitted, let_go, refused = 1_000, 0, 0, 0
    for i in range(offered):
        admission, dropped = queue.admit(pending(f"e{i}", seconds=i))
        let_go += dropped
        admitted += admission is Admission.ADMITTED
        refused += admission is Admission.SAMPLED_OUT
        assert len(queue) <= capacity
    assert queue.sample_level >= 3
    assert admitted - let_go == len(queue)
    assert admitted + refused == offered
    # What is pending is exactly the sample: every kept id passes the current rate, and none else of those offered is kept.
    kept = {p.event_id for p in queue.pop_due(offered)}
    rate = 1 << queue.sample_level
    assert kept <= {f"e{i}" for i in range(offered) if sample_hash(f"e{i}") % rate == 0}


def test_the_sample_widens_again_once_pending_falls_to_a_quarter():
    queue = PendingPredictions(capacity=8)
    i = 0
    while queue.sample_level == 0:
        queue.admit(pending(f"e{i}", seconds=i))
        i += 1
    level = queue.sample_level
    queue.pop_due(i)  # everything labelled
    assert queue.sample_level == level - 1


def test_due_predictions_come_out_in_event_time_event_id_and_role_order():
    queue = PendingPredictions(capacity=10)
    for event_id, seconds, role in [("b", 5, "shadow"), ("b", 5, "serving"), ("a", 5, "serving"), ("z", 1, "serving"), ("c", 9, "serving")]:
        queue.admit(pending(event_id, seconds, role))
    assert [(p.event_id, p.role) for p in queue.pop_due(5)] == [("z", "serving"), ("a", "serving"), ("b", "serving"), ("b", "shadow")]
    assert len(queue) == 1


def test_the_tracker_counts_sampled_out_predictions_and_labels_the_rest():
    t = tracker(window_s=10, max_pending=100)
    for i in range(1_000):
        t.prediction(prediction(f"e{i}", i % 50, 0.001 * i), "serving")  # all within one second: none due yet
    assert len(t.pending) <= 100
    assert t.sampled_out == 1_000 - len(t.pending)
    still_pending = len(t.pending)
    t.purchase(purchase(999, 100))
    book = t.books[("v1", "serving")]
    assert book.labelled == still_pending
