"""Which fault a lost or duplicated event belongs to: the one nearest in time to when it was sent.

A replay doubles the events that were in flight when an instance died, froze or lost its
partitions, so they were sent shortly before (or during) the fault that caused it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tools.chaos.faults import FaultRecord

# Further than this from every fault, an event's trouble has some other cause.
NEAR_S = 15.0


def nearest_fault(sent_at: float, faults: Sequence[FaultRecord]) -> int | None:
    """The index of the fault nearest to `sent_at` (0 s inside it), or None if none is near."""
    distances = [max(fault.started_at - sent_at, 0.0, sent_at - fault.ended_at) for fault in faults]
    if not distances or min(distances) > NEAR_S:
        return None
    return distances.index(min(distances))


def by_fault(sent_times: Iterable[float], faults: Sequence[FaultRecord]) -> tuple[list[int], int]:
    """How many of the events sent at `sent_times` belong to each fault, and how many to none."""
    counts = [0] * len(faults)
    elsewhere = 0
    for sent_at in sent_times:
        index = nearest_fault(sent_at, faults)
        if index is None:
            elsewhere += 1
        else:
            counts[index] += 1
    return counts, elsewhere
