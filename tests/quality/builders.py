"""Predictions and purchases at given event times, for the quality monitor's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events.purchase import Purchase
from events.schema import Prediction
from quality.tracker import QualityTracker

T0 = datetime(2026, 12, 5, 17, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def prediction(event_id: str, user_id: int, seconds: float, probability: float = 0.5, version: str = "v1") -> Prediction:
    return Prediction(event_id, user_id, probability, version, at(seconds), at(seconds) + timedelta(milliseconds=40))


def purchase(user_id: int, seconds: float, purchase_id: str | None = None) -> Purchase:
    return Purchase(purchase_id or f"p-{user_id}-{seconds}", user_id, 9.99, at(seconds))


def tracker(window_s: int = 10, allowance_s: int = 0, window_size: int = 100, max_pending: int = 1_000) -> QualityTracker:
    return QualityTracker(label_window_s=window_s, late_allowance_s=allowance_s, window_size=window_size, max_pending=max_pending)


def labelled(t: QualityTracker, version: str = "v1", role: str = "serving") -> tuple[int, int]:
    """(positive, negative) labels counted for one model version and role."""
    book = t.books.get((version, role))
    return (0, 0) if book is None else (book.positive, book.negative)


def window_labels(t: QualityTracker, version: str = "v1", role: str = "serving") -> list[int]:
    labels, _probabilities = t.books[(version, role)].window.arrays()
    return [int(label) for label in labels]
