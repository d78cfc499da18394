"""Per-user offline features and the interface the service looks them up through."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple, Protocol


class UserFeatures(NamedTuple):
    mean_last_3_purchases: float
    purchase_count: int
    days_since_last_purchase: float
    is_new_user: bool


# What a user with no purchase history gets: nothing spent, nothing bought, and a recency a
# year out, which is also where the loader's history stops. `is_new_user` lets the model tell
# "never bought" apart from "bought little, long ago".
COLD_START_DAYS_SINCE_LAST_PURCHASE = 365.0
COLD_START = UserFeatures(
    mean_last_3_purchases=0.0,
    purchase_count=0,
    days_since_last_purchase=COLD_START_DAYS_SINCE_LAST_PURCHASE,
    is_new_user=True,
)


class FeatureStore(Protocol):
    async def get_features(self, user_ids: Collection[int]) -> Mapping[int, UserFeatures]:
        """Features of the users that have history; users left out of the result are cold-start."""
        ...


def features_or_cold_start(known: Mapping[int, UserFeatures], user_id: int) -> UserFeatures:
    return known.get(user_id, COLD_START)
