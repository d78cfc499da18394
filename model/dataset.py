"""Labelled training data: synthetic browsing joined with the offline store's user features.

Events are dated over the weeks after the store was built, as served events are, and their
features are computed at each event's own time (features/inputs.py), so the model learns
recency over the ages it will meet.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from events.synthetic import random_pages
from features.contract import FeatureContract
from features.event_time import SECONDS_PER_DAY
from features.inputs import feature_frame
from features.user import UserFeatures
from model.ground_truth import true_purchase_probability

# Share of training events from user ids the store has never seen. Above the producer's default
# (2%) on purpose: the cold-start path needs enough examples to be learned well.
UNKNOWN_USER_SHARE = 0.05
# Events fall this many days after the store's build time: a store rebuilt weekly or less often.
EVENT_SPAN_DAYS = 60.0


@dataclass(frozen=True)
class LabelledData:
    features: pd.DataFrame
    true_probability: np.ndarray
    labels: np.ndarray


def make_labelled_data(
    contract: FeatureContract, known_users: Mapping[int, UserFeatures], num_users: int, samples: int, seed: int, built_at_s: float
) -> LabelledData:
    """`samples` events from users 0..num_users-1 (and a few unknown ones), labelled by the ground truth."""
    rng = random.Random(seed)
    unknown_ids = range(num_users, num_users + max(1, num_users // 10))
    user_ids = [
        rng.choice(unknown_ids) if rng.random() < UNKNOWN_USER_SHARE else rng.randrange(num_users)
        for _ in range(samples)
    ]
    pages = [random_pages(rng) for _ in range(samples)]
    users = [known_users.get(user_id) for user_id in user_ids]
    generator = np.random.default_rng(seed)
    event_at_s = built_at_s + generator.uniform(0.0, EVENT_SPAN_DAYS * SECONDS_PER_DAY, samples)
    frame = feature_frame(contract, pages, users, event_at_s)
    probability = true_purchase_probability(frame)
    labels = (generator.random(samples) < probability).astype(np.int8)
    return LabelledData(features=frame, true_probability=probability, labels=labels)
