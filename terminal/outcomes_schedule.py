"""Purchases waiting for their moment: a simulated purchase is sent only once the clock has reached it."""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime

from events.purchase import Purchase


class PurchaseSchedule:
    """A heap of purchases by timestamp."""

    def __init__(self) -> None:
        # The counter breaks ties between equal timestamps: purchases themselves are not ordered.
        self._heap: list[tuple[datetime, int, Purchase]] = []
        self._order = itertools.count()
        self._latest: datetime | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, purchase: Purchase) -> None:
        heapq.heappush(self._heap, (purchase.timestamp, next(self._order), purchase))
        if self._latest is None or purchase.timestamp > self._latest:
            self._latest = purchase.timestamp

    def pop_due(self, now: datetime) -> list[Purchase]:
        """Every purchase with a timestamp at or before `now`, earliest first; the rest stay."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        if not self._heap:
            self._latest = None
        return due

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def last_due(self) -> datetime | None:
        """When the last purchase still waiting is due; None when none is."""
        return self._latest
