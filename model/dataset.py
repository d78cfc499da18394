"""Labelled training data: synthetic browsing joined with the offline store's user features."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from events.synthetic import random_pages
from model.features import feature_frame
from model.ground_truth import true_purchase_probability
from offline_store.features import UserFeatures, features_or_cold_start

# Share of training events from user ids the store has never seen. Above the producer's default
# (2%) on purpose: the cold-start path needs enough examples to be learned well.
UNKNOWN_USER_SHARE = 0.05


@dataclass(frozen=True)
class LabelledData:
    features: pd.DataFrame
    true_probability: np.ndarray
    labels: np.ndarray


def make_labelled_data(known_users: Mapping[int, UserFeatures], num_users: int, samples: int, seed: int) -> LabelledData:
    """`samples` events from users 0..num_users-1 (and a few unknown ones), labelled by the ground truth."""
    rng = random.Random(seed)
    unknown_ids = range(num_users, num_users + max(1, num_users // 10))
    user_ids = [
        rng.choice(unknown_ids) if rng.random() < UNKNOWN_USER_SHARE else rng.randrange(num_users)
        for _ in range(samples)
    ]
    pages = [random_pages(rng) for _ in range(samples)]
    users = [features_or_cold_start(known_users, user_id) for user_id in user_ids]
    frame = feature_frame(pages, users)
    probability = true_purchase_probability(frame)
    labels = (np.random.default_rng(seed).random(samples) < probability).astype(np.int8)
    return LabelledData(features=frame, true_probability=probability, labels=labels)
