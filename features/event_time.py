"""Recency at the event's own time: the one function serving and training compute it with.

The store keeps when a user last bought; an event carries when it happened. Their difference is
the age the model sees, so the same event gets the same inputs however late it is processed, and
training (events drawn at many times) sees inputs made the same way.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_DAY = 86_400.0


def days_since_last_purchase(last_purchase_at_s: np.ndarray, event_at_s: np.ndarray) -> np.ndarray:
    """Days from the last purchase to the event, both in seconds since the epoch.

    An event dated before the last purchase the store knows of (a late or replayed event, or a
    store rebuilt after it happened) counts as age 0: the user was buying at that moment. A
    negative age would be outside anything the model learned from.
    """
    return np.maximum(np.asarray(event_at_s, np.float64) - np.asarray(last_purchase_at_s, np.float64), 0.0) / SECONDS_PER_DAY


def recency(days_since: np.ndarray, scale_days: float) -> np.ndarray:
    """1 for a purchase at the event's moment, fading towards 0 with e-folding time `scale_days`."""
    return np.exp(-np.asarray(days_since, dtype=np.float64) / scale_days)
