"""A bounded, expiring cache of users' features in front of the offline store.

Freshness: a user's features are at most FEATURE_CACHE_TTL_S old. A store rebuilt by the
loader reaches the service sooner, within FEATURE_CACHE_VERSION_CHECK_S: the loader bumps
`feature_set.version` in the transaction that rebuilds `user_features`, and the cache, which
reads that one number at most that often, empties itself when it changes. Users the store does
not know (cold start) are cached too, so a burst of new users does not become a burst of queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from cachetools import TTLCache

from offline_store.features import FeatureStore, UserFeatures

log = logging.getLogger(__name__)

_MISSING = object()


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0

    @property
    def hit_ratio(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class CachedFeatureStore:
    """A FeatureStore that asks the one behind it only for users it has not seen recently,
    all of a batch's misses in one call (one `IN` query)."""

    def __init__(
        self,
        store: FeatureStore,
        max_users: int,
        ttl_s: float,
        version: Callable[[], Awaitable[int | None]],
        version_check_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._entries: TTLCache = TTLCache(maxsize=max_users, ttl=ttl_s, timer=clock)
        self._version = version
        self._version_check_s = version_check_s
        self._clock = clock
        self._known_version: int | None = None
        self._next_version_check = float("-inf")
        self.counters = CacheCounters()

    @property
    def size(self) -> int:
        return len(self._entries)

    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        await self._empty_if_store_rebuilt()
        entries = self._entries
        found: dict[int, UserFeatures] = {}
        missing: list[int] = []
        unique = set(user_ids)
        for user_id in unique:
            features = entries.get(user_id, _MISSING)
            if features is _MISSING:
                missing.append(user_id)
            elif features is not None:
                found[user_id] = features
        self.counters.hits += len(unique) - len(missing)
        self.counters.misses += len(missing)
        if missing:
            fetched = await self._store.get_features(missing)
            for user_id in missing:
                features = fetched.get(user_id)
                entries[user_id] = features  # None: a cold-start user, remembered as such
                if features is not None:
                    found[user_id] = features
        return found

    async def _empty_if_store_rebuilt(self) -> None:
        now = self._clock()
        if now < self._next_version_check:
            return
        version = await self._version()
        self._next_version_check = now + self._version_check_s
        if version != self._known_version:
            if self._known_version is not None:
                log.info("the offline store was rebuilt (feature set %s → %s): cached features dropped", self._known_version, version)
            self._entries.clear()
            self._known_version = version
