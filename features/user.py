"""Per-user offline features and the interface the service looks them up through."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple, Protocol


class UserFeatures(NamedTuple):
    """What the offline store knows of a user with purchase history.

    `last_purchase_at` is a moment (seconds since the Unix epoch, UTC), not an age: the age is
    computed against each event's own timestamp (features/event_time.py), so it is never stale.
    A user the store does not know is a cold-start user; the model's contract says what they get.
    """

    mean_last_3_purchases: float
    purchase_count: int
    last_purchase_at: float
    is_new_user: bool = False


class FeatureChanges(NamedTuple):
    """Users' rows the offline store rewrote after a given change number, and the last number among them.

    `last_seq` is the number to ask after next time; with no rows, the one asked after.
    """

    features: dict[int, UserFeatures]
    last_seq: int


class FeatureStore(Protocol):
    async def get_features(self, user_ids: Collection[int]) -> Mapping[int, UserFeatures]:
        """Features of the users that have history; users left out of the result are cold-start."""
        ...
