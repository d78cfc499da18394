"""Users to refresh later: their purchase is dated after the moment it was written (another machine's clock ahead).

Features count purchases up to the moment they are computed, as the loader's rebuild does, so a
purchase from the future counts only once its time has come: the sink then refreshes its user
again. Held in memory: after a restart such a user is refreshed by their next purchase or the
next rebuild, whichever comes first.
"""

from __future__ import annotations

import heapq
import logging
from datetime import datetime

log = logging.getLogger(__name__)

# About 100 bytes each; a stream of purchases dated far ahead must not grow the sink without end.
MAX_DUE_REFRESHES = 100_000


class DueRefreshes:
    def __init__(self, max_size: int = MAX_DUE_REFRESHES) -> None:
        self._heap: list[tuple[datetime, int]] = []
        self._max_size = max_size
        self._warned_full = False

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due_at: datetime, user_id: int) -> None:
        if len(self._heap) >= self._max_size:
            if not self._warned_full:
                self._warned_full = True
                log.warning("%d users wait for purchases dated ahead of this machine's clock; further ones count from"
                            " their user's next purchase or the next rebuild (is a producer's clock far ahead?)", self._max_size)
            return
        heapq.heappush(self._heap, (due_at, user_id))

    def pop_due(self, now: datetime) -> set[int]:
        """The users whose purchases have come due by `now`, each once."""
        due = set()
        while self._heap and self._heap[0][0] <= now:
            due.add(heapq.heappop(self._heap)[1])
        if not self._heap:
            self._warned_full = False
        return due
