"""Synthetic purchase history: what the loader puts in `purchases` when there is no real data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

HISTORY_DAYS = 365


@dataclass(frozen=True)
class PurchaseHistory:
    user_ids: np.ndarray  # int64, one entry per purchase
    amounts: np.ndarray  # float64, rounded to cents
    purchased_at: list[datetime]

    def __len__(self) -> int:
        return len(self.user_ids)


def generate_history(num_users: int, as_of: datetime, seed: int, share_without_purchases: float = 0.15) -> PurchaseHistory:
    """Purchases for users 0..num_users-1 over the year before `as_of`.

    Each user has a spend level (lognormal) and an activity level; active users buy more often
    and more recently. Some users have bought nothing: they are the store's cold-start users.
    """
    rng = np.random.default_rng(seed)
    buys = rng.random(num_users) >= share_without_purchases
    counts = np.where(buys, 1 + rng.poisson(rng.gamma(2.0, 3.0, num_users)), 0)
    spend_level = rng.lognormal(mean=3.6, sigma=0.7, size=num_users)
    # Days since the last purchase: short for most, a long tail of lapsed users.
    last_days_ago = np.minimum(rng.exponential(scale=40.0, size=num_users), HISTORY_DAYS - 1)

    user_ids = np.repeat(np.arange(num_users, dtype=np.int64), counts)
    amounts = np.round(np.repeat(spend_level, counts) * rng.lognormal(0.0, 0.35, size=len(user_ids)), 2)
    amounts = np.maximum(amounts, 0.5)

    # The first purchase of each user is the latest; the rest fall between it and a year back.
    first_of_user = np.concatenate(([0], np.cumsum(counts)[:-1]))[counts > 0]
    newest = np.repeat(last_days_ago, counts)
    days_ago = newest + rng.random(len(user_ids)) * (HISTORY_DAYS - newest)
    days_ago[first_of_user] = newest[first_of_user]
    seconds_ago = np.round(days_ago * 86_400).astype(np.int64)
    purchased_at = [as_of - timedelta(seconds=int(s)) for s in seconds_ago]
    return PurchaseHistory(user_ids=user_ids, amounts=amounts, purchased_at=purchased_at)
