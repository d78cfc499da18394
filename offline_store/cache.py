"""Users' features held in memory in front of the offline store, so the hot path rarely waits on MySQL.

Two modes, chosen by the size of `user_features` against FEATURE_CACHE_MAX_USERS:
- snapshot: the whole table fits, so it is loaded at start-up and reloaded in the background;
  a lookup is a dict read, and a user missing from the snapshot is a cold-start user. A MySQL
  outage then does not stop predictions: the last snapshot is served, and its age is logged.
- per user: the table is larger; each user's features are kept for FEATURE_CACHE_TTL_S after
  they are fetched, at most FEATURE_CACHE_MAX_USERS of them, and a batch's misses are fetched in
  one `IN` query. Users the store does not know are cached too (cold start).

Freshness: features are at most FEATURE_CACHE_TTL_S old while MySQL answers. A store rebuilt by
the loader reaches the service sooner, within FEATURE_CACHE_VERSION_CHECK_S: the loader bumps
`feature_set.version` in the transaction that rebuilds `user_features`, and a background task
reads that one number that often and reloads (or empties) the cache when it changes. A few users'
rows refreshed by the purchase sink reach it within FEATURE_CHANGES_POLL_MS: each refresh stamps
its rows with the next `feature_set.change_seq`, and another background task asks for the rows
stamped past the last number it saw, then puts them in the snapshot, or in place of the cached
entries of those users (a cold-start entry among them becomes the returning user). Rows a lookup
was still fetching when the cache was emptied or changed rows arrived are not kept (see
`_get_per_user`). Neither task touches the hot path: a lookup still costs a dict read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from features.user import FeatureChanges, UserFeatures

log = logging.getLogger(__name__)

_MISSING = (float("-inf"), None)


class VersionedStore(Protocol):
    async def get_features(self, user_ids: Collection[int]) -> Mapping[int, UserFeatures]: ...

    async def feature_set_version(self) -> int | None: ...

    async def count_features(self) -> int: ...

    async def get_all_features(self) -> dict[int, UserFeatures]: ...

    async def change_seq(self) -> int | None: ...

    async def changed_features(self, after_seq: int) -> FeatureChanges: ...


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0

    @property
    def hit_ratio(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


@dataclass(frozen=True)
class Snapshot:
    features: dict[int, UserFeatures]
    loaded_at: float
    version: int | None


class CachedFeatureStore:
    """A FeatureStore that asks MySQL as little as it can, as the module docstring says.

    Per-user entries live in a plain dict of (expiry, features), in fetch order, so the oldest,
    nearest to expiring, is evicted first when the bound is reached. cachetools' TTLCache does
    the same job at 3 µs a lookup against 0.3 µs here, measured on this hot path.

    The entries belong to one generation of the cache, which moves on each time they are
    emptied, the snapshot reloaded, or changed rows applied. A fetch checks the generation it
    started in before it writes: rows it read before a rebuild or a refresh would otherwise
    overwrite newer ones, and be served for a whole TTL.

    Reloads and applying changes take turns (`_store_turn`), so changes read before a reload are
    never applied over the rows it loaded.
    """

    def __init__(
        self,
        store: VersionedStore,
        max_users: int,
        ttl_s: float,
        version_check_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        changes_poll_s: float = 1.0,
    ) -> None:
        self._store = store
        self._max_users = max_users
        self._ttl_s = ttl_s
        self._version_check_s = version_check_s
        self._changes_poll_s = changes_poll_s
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._entries: dict[int, tuple[float, UserFeatures | None]] = {}
        self._generation = 0
        self._known_version: int | None = None
        # The last change number whose rows the cache holds; None: the store keeps no numbers.
        self._known_seq: int | None = None
        self._store_turn = asyncio.Lock()
        self._refresher: asyncio.Task | None = None
        self._change_poller: asyncio.Task | None = None
        self._refresh_failing = False
        self._changes_failing = False
        self._started = False
        self.counters = CacheCounters()

    @property
    def size(self) -> int:
        return len(self._snapshot.features) if self._snapshot is not None else len(self._entries)

    @property
    def mode(self) -> str:
        return "snapshot" if self._snapshot is not None else "per user"

    async def start(self) -> None:
        """Load the snapshot when the table fits, then keep the cache fresh in the background."""
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_periodically())
        self._change_poller = asyncio.create_task(self._poll_changes_periodically())

    async def close(self) -> None:
        for task in (self._refresher, self._change_poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        snapshot = self._snapshot
        if snapshot is not None:
            known = snapshot.features
            self.counters.hits += len(user_ids)
            return {user_id: known[user_id] for user_id in user_ids if user_id in known}
        return await self._get_per_user(user_ids)

    async def refresh(self) -> None:
        """Reload the snapshot (or empty the per-user entries) if the store changed or the TTL passed.

        The version is read before the rows, so a snapshot is never labelled newer than its rows:
        a reload that races a rebuild keeps the older label and is redone at the next check.
        """
        async with self._store_turn:
            version = await self._store.feature_set_version()
            snapshot = self._snapshot
            changed = version != self._known_version
            stale = snapshot is not None and self._clock() - snapshot.loaded_at >= self._ttl_s
            if self._started and not (changed or stale):
                return
            if changed and self._known_version is not None:
                log.info("the offline store was rebuilt (feature set %s → %s): reloading cached features", self._known_version, version)
            # Before the rows, like the version: a refresh committed while they are read is fetched
            # again by the next poll (harmless), never missed.
            seq = await self._store.change_seq()
            if await self._store.count_features() <= self._max_users:
                self._snapshot = Snapshot(await self._store.get_all_features(), self._clock(), version)
            else:
                if snapshot is not None:
                    log.info("user_features outgrew FEATURE_CACHE_MAX_USERS=%d: caching per user", self._max_users)
                self._snapshot = None
            self._entries = {}
            self._generation += 1
            self._known_version = version
            self._known_seq = seq
            self._started = True

    async def apply_changes(self) -> int:
        """Fetch the rows refreshed since the last change seen and put them in the cache; returns how many.

        Refreshes commit in the order of their numbers (they take the same row lock to get one),
        so once number n is seen no refresh numbered below it can still appear.
        """
        async with self._store_turn:
            if self._known_seq is None:
                return 0
            changes = await self._store.changed_features(self._known_seq)
            if changes.features:
                self._apply(changes.features)
                log.debug("applied %d refreshed feature rows (changes %d → %d)", len(changes.features), self._known_seq, changes.last_seq)
            self._known_seq = max(self._known_seq, changes.last_seq)
            return len(changes.features)

    def _apply(self, changed: dict[int, UserFeatures]) -> None:
        snapshot = self._snapshot
        if snapshot is not None:
            newcomers = sum(user_id not in snapshot.features for user_id in changed)
            if len(snapshot.features) + newcomers <= self._max_users:
                # In place and in one step: a lookup sees the rows before or after, never half of them.
                snapshot.features.update(changed)
                return
            log.info("user_features outgrew FEATURE_CACHE_MAX_USERS=%d: caching per user", self._max_users)
            self._snapshot = None
            self._entries = {}
        else:
            # Only users already cached: the others are fetched when they next come, at their turn.
            cached = [user_id for user_id in changed if user_id in self._entries]
            if cached:
                self._remember(cached, changed, self._clock() + self._ttl_s)
        # A lookup still fetching may hold these users' rows from before the refresh.
        self._generation += 1

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._version_check_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the hot path goes on with what it has
                if not self._refresh_failing:
                    age = self._clock() - self._snapshot.loaded_at if self._snapshot else 0.0
                    log.warning("cannot refresh cached features (%s: %s); serving what is cached, %.0f s old", type(exc).__name__, exc, age)
                self._refresh_failing = True
            else:
                if self._refresh_failing:
                    log.info("cached features refreshed again")
                self._refresh_failing = False

    async def _poll_changes_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._changes_poll_s)
            try:
                await self.apply_changes()
            except Exception as exc:  # noqa: BLE001 - the hot path goes on with what it has
                if not self._changes_failing:
                    log.warning("cannot fetch refreshed feature rows (%s: %s); serving what is cached", type(exc).__name__, exc)
                self._changes_failing = True
            else:
                if self._changes_failing:
                    log.info("refreshed feature rows fetched again")
                self._changes_failing = False

    async def _get_per_user(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        now = self._clock()
        entries = self._entries
        found: dict[int, UserFeatures] = {}
        missing: list[int] = []
        unique = set(user_ids)
        for user_id in unique:
            expires, features = entries.get(user_id, _MISSING)
            if expires <= now:
                missing.append(user_id)
            elif features is not None:
                found[user_id] = features
        self.counters.hits += len(unique) - len(missing)
        self.counters.misses += len(missing)
        if missing:
            generation = self._generation
            fetched = await self._store.get_features(missing)
            # If the cache was emptied (a rebuild) or refreshed rows were applied while MySQL
            # answered, these rows may predate them: kept, they would be served for a full TTL.
            # This batch still uses them: they were the store's rows when read, as if the query had
            # finished just before the check, and asking again could chase one rebuild after another.
            if generation == self._generation:
                self._remember(missing, fetched, self._clock() + self._ttl_s)
            found.update(fetched)
        return found

    def _remember(self, user_ids: list[int], fetched: Mapping[int, UserFeatures], expires: float) -> None:
        entries = self._entries
        for user_id in user_ids:
            entries.pop(user_id, None)  # re-inserted at the end: fetch order is expiry order
            entries[user_id] = (expires, fetched.get(user_id))  # None: a cold-start user, remembered as such
        excess = len(entries) - self._max_users
        if excess > 0:
            for user_id in list(itertools.islice(entries, excess)):
                del entries[user_id]
