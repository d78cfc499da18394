"""Reading several partitions in event-time order, so that a backlog is labelled as it was lived.

A monitor that starts behind (after a restart, or against topics with history) fetches whole chunks of
each partition at a time, and one topic's chunk can be minutes of event time ahead of another's: read
as fetched, the purchases would move the watermark past predictions not read yet, and every label
would be wrong. So records wait here, per partition, and come out smallest event time first, and only
once every partition that still has records to read has some waiting: the merge order does not depend
on how the fetches happened to fall. A partition that has been read to its end (caught up) is not
waited for; one that has delivered nothing for `wait_s` is not waited for either, until it delivers again.

Records without an event time (an unreadable one) take the last event time of their partition, so
they come out in their place without holding anything up.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)
T = TypeVar("T")

# Before any record, a partition's event time is the smallest there is.
EARLIEST = -(2**63)


@dataclass
class _Partition(Generic[T]):
    order: int
    waiting: deque[tuple[int, T]] = field(default_factory=deque)
    last_event_time_us: int = EARLIEST
    caught_up: bool = False
    starving_since: float | None = None  # when it last ran dry while records remained to read


class EventTimeAlignment(Generic[P, T]):
    def __init__(self, partitions: Iterable[P], *, max_waiting: int, wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self._clock = clock
        now = clock()
        self._partitions: dict[P, _Partition[T]] = {}
        for order, partition in enumerate(partitions):
            self._partitions[partition] = _Partition(order, starving_since=now)
        # (event time, partition order, partition) of each partition's first waiting record.
        self._heads: list[tuple[int, int, P]] = []
        # Partitions with nothing waiting and records still to read: the merge waits for them.
        self._starving: set[P] = set(self._partitions)

    def add(self, partition: P, records: Iterable[tuple[int | None, T]]) -> None:
        """Records of one partition in offset order, each with its event time (µs) or None."""
        state = self._partitions[partition]
        was_empty = not state.waiting
        for event_time_us, record in records:
            at_us = state.last_event_time_us if event_time_us is None else event_time_us
            state.last_event_time_us = max(state.last_event_time_us, at_us)
            state.waiting.append((at_us, record))
        if state.waiting:
            state.starving_since = None
            self._starving.discard(partition)
            if was_empty:
                heapq.heappush(self._heads, (state.waiting[0][0], state.order, partition))

    def set_caught_up(self, partition: P, caught_up: bool) -> None:
        """Whether the partition has been read to its end (its position is at the last stable offset)."""
        state = self._partitions[partition]
        state.caught_up = caught_up
        if caught_up:
            state.starving_since = None
            self._starving.discard(partition)
        elif not state.waiting and state.starving_since is None:
            state.starving_since = self._clock()
            self._starving.add(partition)

    def waiting(self, partition: P) -> int:
        return len(self._partitions[partition].waiting)

    def is_full(self, partition: P) -> bool:
        """Enough waiting that fetching more of this partition should pause until some are taken."""
        return len(self._partitions[partition].waiting) >= self.max_waiting

    def has_room(self, partition: P) -> bool:
        """Few enough waiting that a paused partition may be fetched again."""
        return len(self._partitions[partition].waiting) <= self.max_waiting // 2

    def release(self) -> Iterable[tuple[P, T]]:
        """The records that may be processed now, in merge order, each with its partition."""
        while self._heads and not self._blocked():
            _at_us, _order, partition = heapq.heappop(self._heads)
            state = self._partitions[partition]
            _at, record = state.waiting.popleft()
            if state.waiting:
                heapq.heappush(self._heads, (state.waiting[0][0], state.order, partition))
            elif not state.caught_up:
                state.starving_since = self._clock()
                self._starving.add(partition)
            yield partition, record

    def _blocked(self) -> bool:
        """Whether a partition with records still to read has none waiting, and has not yet had `wait_s` to deliver them."""
        if not self._starving:
            return False
        now = self._clock()
        return any(now - since < self.wait_s for p in self._starving if (since := self._partitions[p].starving_since) is not None)
