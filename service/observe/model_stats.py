"""What the service knows of its models: which serve, swaps and refusals, and how a shadow
model compares with the serving one on the same events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from service.observe.histogram import Histogram

# Probability buckets for the shadow's score distribution.
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
# Scores on the other side of this from the serving model's count as a disagreement.
DECISION_THRESHOLD = 0.5


@dataclass
class ModelStats:
    serving_version: str | None = None
    shadow_version: str | None = None
    swaps: Counter[str] = field(default_factory=Counter)  # role: serving | shadow
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)  # (role, reason)
    source_errors: Counter[str] = field(default_factory=Counter)  # role: the registry could not be read
    shadow_scores: Histogram = field(default_factory=lambda: Histogram(SCORE_BUCKETS))
    shadow_events: int = 0
    shadow_abs_difference: float = 0.0
    shadow_disagreements: int = 0
    shadow_failed_batches: int = 0  # record batches to SHADOW_OUTPUT_TOPIC that Kafka did not take

    def compare_shadow(self, serving: np.ndarray, shadow: np.ndarray) -> None:
        """The shadow's scores of a batch, against the serving model's for the same events."""
        self.shadow_scores.observe_array(shadow)
        self.shadow_events += len(shadow)
        self.shadow_abs_difference += float(np.abs(shadow - serving).sum())
        self.shadow_disagreements += int(np.count_nonzero((shadow >= DECISION_THRESHOLD) != (serving >= DECISION_THRESHOLD)))

    def shadow_mean_abs_difference(self) -> float | None:
        return self.shadow_abs_difference / self.shadow_events if self.shadow_events else None
