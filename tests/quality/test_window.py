"""The window of recent labels and its figures, against a direct computation with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from events.purchase import Purchase
from events.schema import Prediction
from model.calibration import expected_calibration_error
from quality.window import LabelledWindow, measure
from tests.quality.builders import T0, prediction, purchase, tracker


def test_the_window_keeps_the_last_labels_in_order():
    window = LabelledWindow(capacity=3)
    for i in range(5):
        window.push(i / 10, i % 2 == 1, event_time_us=1_000 + i)
    labels, probabilities = window.arrays()
    assert probabilities.tolist() == [0.2, 0.3, 0.4]
    assert labels.tolist() == [0, 1, 0]
    assert window.oldest_event_time_us() == 1_002
    assert len(window) == 3


def test_figures_match_scikit_learn():
    rng = np.random.default_rng(3)
    probabilities = rng.uniform(0.01, 0.99, 500)
    labels = (rng.uniform(size=500) < probabilities).astype(np.int8)
    quality = measure(labels, probabilities)
    assert quality.count == 500
    assert quality.auc == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
    assert quality.log_loss == pytest.approx(log_loss(labels, probabilities), abs=1e-12)
    assert quality.brier == pytest.approx(brier_score_loss(labels, probabilities), abs=1e-12)
    assert quality.ece == pytest.approx(expected_calibration_error(labels, probabilities), abs=1e-12)
    assert quality.mean_probability == pytest.approx(probabilities.mean())
    assert quality.positive_rate == pytest.approx(labels.mean())


def test_one_class_has_no_auc_and_a_certain_miss_a_finite_log_loss():
    quality = measure(np.array([0, 0]), np.array([0.0, 1.0]))
    assert quality.auc is None
    assert quality.log_loss is not None and 17 < quality.log_loss < 18  # ln(1e15) / 2
    assert measure(np.array([], dtype=np.int8), np.array([])).log_loss is None


def test_the_trackers_figures_are_those_of_the_last_labels_by_the_rule():
    """Synthetic outcomes drawn from known probabilities; the tracker's window figures equal a direct
    recomputation over the last `window_size` predictions labelled by the rule, in (time, id) order."""
    rng = np.random.default_rng(11)
    window_s, window_size, users = 10, 200, 40
    t = tracker(window_s, allowance_s=3, window_size=window_size, max_pending=10_000)
    events = []
    for i in range(1_000):
        seconds, user = i * 0.25, int(rng.integers(users))
        probability = float(1 / (1 + np.exp(-rng.normal(-1, 1.5))))
        events.append((seconds, f"e{i:05d}", user, probability))
    purchases: dict[int, list[float]] = {}
    for seconds, _event_id, user, probability in events:
        if rng.uniform() < probability:
            purchases.setdefault(user, []).append(seconds + float(rng.uniform(0.5, 9)))
    records: list[tuple[float, Prediction | Purchase]] = [
        (seconds, prediction(event_id, user, seconds, probability)) for seconds, event_id, user, probability in events
    ]
    records += [(seconds, purchase(user, seconds)) for user, times in purchases.items() for seconds in times]
    for _seconds, record in sorted(records, key=lambda r: (r[0], isinstance(r[1], Purchase))):
        if isinstance(record, Prediction):
            t.prediction(record, "serving")
        else:
            t.purchase(record)

    assert t.watermark_us is not None
    watermark_s = (t.watermark_us - int(T0.timestamp() * 1e6)) / 1e6
    due = [e for e in events if e[0] + window_s <= watermark_s]
    last = sorted(due, key=lambda e: (e[0], e[1]))[-window_size:]
    expected_labels = np.array([
        int(any(seconds < bought <= seconds + window_s for bought in purchases.get(user, []))) for seconds, _id, user, _p in last
    ])
    expected_probabilities = np.array([p for *_rest, p in last])
    [model] = t.snapshot(T0).models
    assert model.labelled == len(due) and model.window == window_size
    assert model.labelled_positive == sum(
        any(seconds < bought <= seconds + window_s for bought in purchases.get(user, [])) for seconds, _id, user, _p in due
    )
    assert model.auc == pytest.approx(roc_auc_score(expected_labels, expected_probabilities), abs=1e-9)
    assert model.log_loss == pytest.approx(log_loss(expected_labels, expected_probabilities, labels=[0, 1]), abs=1e-9)
    assert model.brier == pytest.approx(brier_score_loss(expected_labels, expected_probabilities), abs=1e-9)
    assert model.ece == pytest.approx(expected_calibration_error(expected_labels, expected_probabilities), abs=1e-9)
    assert model.positive_rate == pytest.approx(expected_labels.mean(), abs=1e-12)
    assert model.mean_probability == pytest.approx(expected_probabilities.mean(), abs=1e-12)


def test_figures_are_computed_again_only_when_asked_and_changed():
    t = tracker(window_s=10)
    t.prediction(prediction("e1", 1, 0, 0.3), "serving")
    t.purchase(purchase(999, 20))
    first = t.snapshot(T0).models[0]
    assert first.window == 1
    t.prediction(prediction("e2", 1, 21, 0.8), "serving")
    t.purchase(purchase(1, 22))
    t.purchase(purchase(999, 40))
    stale = t.snapshot(T0, remeasure=False).models[0]
    assert stale.labelled == 2 and stale.window == 1  # counters are live; the figures wait for the next snapshot
    fresh = t.snapshot(T0).models[0]
    assert fresh.window == 2 and fresh.auc == 1.0
