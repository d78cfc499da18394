"""Predictions waiting for their label, at most a fixed number, sampled by event id once that is reached.

The sample is a hash of the event id: a prediction is kept while `hash % 2**level == 0`. The level
starts at 0 (everything kept). When the cap is reached it goes up by one and the pending predictions
outside the new sample are let go, which halves them on average; it comes down by one whenever the
pending predictions fall to a quarter of the cap. The hash does not depend on the prediction's
outcome, so a sample's quality figures estimate the whole's without bias, and the decision for an
event does not depend on the order records are read in. A serving and a shadow prediction of the
same event share its id, so they are kept or let go together and stay comparable.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
from dataclasses import dataclass

# A 64-bit hash allows up to 63 halvings; far more than any cap needs.
MAX_SAMPLE_LEVEL = 63


class Admission(enum.Enum):
    ADMITTED = "admitted"
    DUPLICATE = "duplicate"  # the same event in the same role is pending already
    SAMPLED_OUT = "sampled_out"


@dataclass(slots=True)
class PendingPrediction:
    event_time_us: int
    event_id: str
    role: str
    user_id: int
    probability: float
    model_version: str
    # Read again after a restart, from before the checkpoint's position in its partition.
    replayed: bool
    sample_hash: int = 0
    sequence: int = 0


def sample_hash(event_id: str) -> int:
    """A hash of the event id that is the same in every process (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class PendingPredictions:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sample_level = 0
        self._by_key: dict[tuple[str, str], PendingPrediction] = {}
        # (event time, event id, role, sequence): the order they are labelled in. A prediction let go
        # by the sample leaves its entry behind until the heap is rebuilt; the sequence tells them apart.
        self._due: list[tuple[int, str, str, int]] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by_key

    def in_sample(self, hashed: int) -> bool:
        return hashed & ((1 << self.sample_level) - 1) == 0

    def admit(self, prediction: PendingPrediction) -> tuple[Admission, int]:
        """Add a prediction unless it is pending already or outside the sample; also returns how many
        pending predictions were let go to make room."""
        key = (prediction.role, prediction.event_id)
        if key in self._by_key:
            return Admission.DUPLICATE, 0
        prediction.sample_hash = sample_hash(prediction.event_id)
        let_go = 0
        while True:
            if not self.in_sample(prediction.sample_hash):
                return Admission.SAMPLED_OUT, let_go
            if len(self._by_key) < self.capacity:
                break
            if self.sample_level >= MAX_SAMPLE_LEVEL:
                return Admission.SAMPLED_OUT, let_go
            self.sample_level += 1
            let_go += self._keep_only_the_sample()
        self._sequence += 1
        prediction.sequence = self._sequence
        self._by_key[key] = prediction
        heapq.heappush(self._due, (prediction.event_time_us, prediction.event_id, prediction.role, prediction.sequence))
        return Admission.ADMITTED, let_go

    def pop_due(self, until_event_time_us: int) -> list[PendingPrediction]:
        """Remove and return every pending prediction whose event time is at most `until_event_time_us`,
        in (event time, event id, role) order."""
        due, popped = self._due, []
        while due and due[0][0] <= until_event_time_us:
            _at_us, event_id, role, sequence = heapq.heappop(due)
            prediction = self._by_key.get((role, event_id))
            if prediction is None or prediction.sequence != sequence:
                continue  # let go by the sample meanwhile
            del self._by_key[(role, event_id)]
            popped.append(prediction)
        if self.sample_level and len(self._by_key) <= self.capacity // 4:
            self.sample_level -= 1
        return popped

    def _keep_only_the_sample(self) -> int:
        outside = [key for key, prediction in self._by_key.items() if not self.in_sample(prediction.sample_hash)]
        for key in outside:
            del self._by_key[key]
        self._due = [(p.event_time_us, p.event_id, p.role, p.sequence) for p in self._by_key.values()]
        heapq.heapify(self._due)
        return len(outside)
