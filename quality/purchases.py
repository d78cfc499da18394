"""The purchases a pending prediction may still need, per user, in time order."""

from __future__ import annotations

import bisect
import heapq


class PurchaseTimes:
    """Each user's purchase times (event time, µs), kept only while a prediction can still be labelled with them.

    `forget_until(horizon)` drops every purchase at or before the horizon, oldest first. At most
    `max_kept` purchases are held: past that the oldest go first (counted in `evicted`), so memory
    stays bounded whatever the purchase rate.
    """

    def __init__(self, max_kept: int) -> None:
        self.max_kept = max_kept
        self.evicted = 0
        self._by_user: dict[int, list[int]] = {}
        # Every kept purchase as (time, user): the oldest first, to forget them in order.
        self._oldest: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self._oldest)

    def add(self, user_id: int, at_us: int) -> None:
        bisect.insort(self._by_user.setdefault(user_id, []), at_us)
        heapq.heappush(self._oldest, (at_us, user_id))
        if len(self._oldest) > self.max_kept:
            self._forget_oldest()
            self.evicted += 1

    def any_within(self, user_id: int, after_us: int, until_us: int) -> bool:
        """Whether the user has a purchase in (after_us, until_us]."""
        times = self._by_user.get(user_id)
        if not times:
            return False
        index = bisect.bisect_right(times, after_us)
        return index < len(times) and times[index] <= until_us

    def forget_until(self, horizon_us: int) -> None:
        while self._oldest and self._oldest[0][0] <= horizon_us:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _at_us, user_id = heapq.heappop(self._oldest)
        times = self._by_user[user_id]
        # The user's earliest time is the one popped: every one of them is in the heap.
        del times[0]
        if not times:
            del self._by_user[user_id]
