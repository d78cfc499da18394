"""Factories for test data shared by unit and integration tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from events.schema import InputEvent, encode_event
from events.synthetic import random_event
from model.dataset import make_labelled_data
from model.train import train_and_evaluate
from offline_store.features import UserFeatures


def event_bytes(user_id: int = 1, pages=("home", "product", "cart"), event_id: str = "e-1",
                timestamp: str = "2026-11-26T12:00:00Z") -> bytes:
    return encode_event(
        InputEvent(event_id=event_id, user_id=user_id, timestamp=datetime.fromisoformat(timestamp),
                   last_three_pages_visited=tuple(pages))
    )


def random_events(count: int, user_ids: list[int], seed: int = 0) -> list[InputEvent]:
    rng = random.Random(seed)
    return [random_event(rng, rng.choice(user_ids), datetime.now(UTC)) for _ in range(count)]


def small_feature_table(num_users: int = 200, seed: int = 3) -> dict[int, UserFeatures]:
    """Plausible features for users 0..num_users-1, every fourth one without history."""
    rng = random.Random(seed)
    return {
        user_id: UserFeatures(rng.uniform(5, 300), rng.randint(1, 30), rng.uniform(0, 364), False)
        for user_id in range(num_users)
        if user_id % 4
    }


def trained_model(known_users: dict[int, UserFeatures], num_users: int, samples: int = 20_000, seed: int = 11):
    model, _metrics = train_and_evaluate(make_labelled_data(known_users, num_users, samples, seed), seed)
    return model
