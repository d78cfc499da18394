"""Factories for test data shared by unit and integration tests."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from events.schema import InputEvent, encode_event
from events.synthetic import random_event
from features.contract import FeatureContract
from features.event_time import SECONDS_PER_DAY
from features.user import UserFeatures
from model.artifact import PurchaseModel, save_model
from model.dataset import make_labelled_data
from model.estimators import DEFAULT_ESTIMATOR
from model.evaluation import Trained, train_and_evaluate


def event_bytes(user_id: int = 1, pages=("home", "product", "cart"), event_id: str = "e-1",
                timestamp: str = "2026-11-26T12:00:00Z") -> bytes:
    return encode_event(
        InputEvent(event_id=event_id, user_id=user_id, timestamp=datetime.fromisoformat(timestamp),
                   last_three_pages_visited=tuple(pages))
    )


def random_events(count: int, user_ids: list[int], seed: int = 0) -> list[InputEvent]:
    rng = random.Random(seed)
    return [random_event(rng, rng.choice(user_ids), datetime.now(UTC)) for _ in range(count)]


def small_feature_table(num_users: int = 200, seed: int = 3, now_s: float | None = None) -> dict[int, UserFeatures]:
    """Plausible features for users 0..num_users-1, every fourth one without history; each last
    purchase up to a year before `now_s` (default: the current time)."""
    rng = random.Random(seed)
    now = time.time() if now_s is None else now_s
    return {
        user_id: UserFeatures(rng.uniform(5, 300), rng.randint(1, 30), now - rng.uniform(0, 364) * SECONDS_PER_DAY, False)
        for user_id in range(num_users)
        if user_id % 4
    }


def train(known_users: dict[int, UserFeatures], num_users: int, samples: int = 20_000, seed: int = 11,
          estimator: str = DEFAULT_ESTIMATOR, built_at_s: float | None = None) -> Trained:
    """A model trained and judged on events dated after a store built at `built_at_s` (default: now)."""
    contract = FeatureContract()
    built_at = time.time() if built_at_s is None else built_at_s
    data = make_labelled_data(contract, known_users, num_users, samples, seed, built_at_s=built_at)
    return train_and_evaluate(data, seed, estimator, contract)


def trained_model(known_users: dict[int, UserFeatures], num_users: int, samples: int = 20_000, seed: int = 11,
                  estimator: str = DEFAULT_ESTIMATOR, built_at_s: float | None = None) -> PurchaseModel:
    return train(known_users, num_users, samples, seed, estimator, built_at_s).model


def model_metadata(trained: Trained) -> dict[str, Any]:
    """The model.json that `model.train` writes beside an accepted model (save_model adds the checksum)."""
    model = trained.model
    return {
        "version": model.version,
        "estimator": model.estimator,
        "sklearn_version": model.sklearn_version,
        "contract": model.contract.to_dict(),
        "metrics": trained.metrics,
        "gates": trained.gates,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"samples": int(trained.metrics["train_rows"] + trained.metrics["test_rows"])},
    }


def save_trained(trained: Trained, model_path: Path) -> str:
    """Save as `model.train` does; returns the artifact's SHA-256."""
    return save_model(trained.model, model_path, model_metadata(trained))
