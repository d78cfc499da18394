"""The last QUALITY_WINDOW labelled predictions of one model version in one role, and their quality.

Ring buffers of numpy arrays: a label costs three stores, and the figures are computed from the
arrays only when asked (once per snapshot), not per label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from model.calibration import expected_calibration_error

# log loss is infinite for a confident miss (p = 0 for a purchase); clipped, one such miss weighs ln(1e15) ≈ 34.5.
PROBABILITY_CLIP = 1e-15


@dataclass(frozen=True)
class WindowQuality:
    """Quality over a window; every figure is None for an empty window, `auc` also with one class only."""

    count: int
    auc: float | None = None
    log_loss: float | None = None
    brier: float | None = None
    ece: float | None = None
    mean_probability: float | None = None
    positive_rate: float | None = None


def measure(labels: np.ndarray, probabilities: np.ndarray) -> WindowQuality:
    """ROC AUC, log loss, Brier score, ECE (10 bins), mean probability and positive rate of labelled predictions."""
    count = len(labels)
    if count == 0:
        return WindowQuality(0)
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    positives = int(y.sum())
    return WindowQuality(
        count=count,
        auc=float(roc_auc_score(y, p)) if 0 < positives < count else None,
        log_loss=float(log_loss(y, np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP), labels=[0, 1])),
        brier=float(np.mean((p - y) ** 2)),
        ece=expected_calibration_error(y, p),
        mean_probability=float(p.mean()),
        positive_rate=positives / count,
    )


class LabelledWindow:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._probabilities = np.empty(capacity, dtype=np.float64)
        self._labels = np.empty(capacity, dtype=np.int8)
        self._event_times_us = np.empty(capacity, dtype=np.int64)
        self._next = 0
        self._size = 0
        # Bumped by every push, so a cached measurement knows whether it is still current.
        self.version = 0

    def __len__(self) -> int:
        return self._size

    def push(self, probability: float, positive: bool, event_time_us: int) -> None:
        index = self._next
        self._probabilities[index] = probability
        self._labels[index] = positive
        self._event_times_us[index] = event_time_us
        self._next = (index + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self.version += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities), oldest label first."""
        if self._size < self.capacity:
            return self._labels[: self._size].copy(), self._probabilities[: self._size].copy()
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._labels[order], self._probabilities[order]

    def oldest_event_time_us(self) -> int | None:
        """The earliest event time in the window: where a replay must start to rebuild it."""
        if self._size == 0:
            return None
        return int(self._event_times_us[: self._size].min())

    def measure(self) -> WindowQuality:
        return measure(*self.arrays())
