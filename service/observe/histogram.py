"""Bucketed durations kept by ServiceStats and read by the /metrics collector at scrape time.

The hot loop only bisects and increments here; nothing about Prometheus is imported, so the
stats stay the one bookkeeping source and cost the same with the endpoint on or off.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import numpy as np

# Upper bounds in seconds. A stage takes from well under a millisecond (parsing a small batch)
# to seconds (a feature lookup near its timeout).
STAGE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event time to published prediction: tens of milliseconds when caught up, minutes behind a backlog.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Counts per bucket (not cumulative), their sum and their count."""

    __slots__ = ("_bounds_array", "bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._bounds_array = np.array(self.bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket: Prometheus's `le`.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self.bounds, self.counts
        total = 0.0
        n = 0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
            n += 1
        self.sum += total
        self.count += n

    def observe_array(self, values: np.ndarray) -> None:
        """observe_many for a whole batch as one numpy array: per batch, not per event."""
        if not len(values):
            return
        per_bucket = np.bincount(np.searchsorted(self._bounds_array, values, side="left"), minlength=len(self.counts))
        for bucket, count in enumerate(per_bucket.tolist()):
            self.counts[bucket] += count
        self.sum += float(values.sum())
        self.count += len(values)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) for every bucket, ending with +Inf."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets
