"""What scoring alone costs per event, measured in this process: the yardstick for the shadow's cost."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from events.synthetic import random_pages
from features.inputs import numeric_inputs
from features.user import UserFeatures
from model.artifact import load_model

BATCH = 2_000
ROUNDS = 50


def scoring_us_per_event(model_path: Path) -> float:
    """Microseconds per event for the model's own scoring path (folded or predict_proba), batches of 2,000."""
    model = load_model(model_path)
    rng = random.Random(0)
    now = time.time()
    pages = [random_pages(rng) for _ in range(BATCH)]
    users = [UserFeatures(rng.uniform(5, 300), rng.randint(1, 30), now - rng.uniform(0, 300) * 86_400) if rng.random() < 0.9 else None
             for _ in range(BATCH)]
    numbers = numeric_inputs(model.contract, users, np.full(BATCH, now))
    model.predict_numbers(pages, numbers)  # warm
    started = time.perf_counter()
    for _ in range(ROUNDS):
        model.predict_numbers(pages, numbers)
    return (time.perf_counter() - started) / (ROUNDS * BATCH) * 1e6
