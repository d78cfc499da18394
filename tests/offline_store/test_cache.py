import asyncio
import logging

from features.user import UserFeatures
from offline_store.cache import CachedFeatureStore
from tests.fakes.mysql import InMemoryFeatureStore

ALICE = UserFeatures(40.0, 3, 1_780_000_000.0)  # last bought on 2026-05-28


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def cached(store, *, max_users=100, ttl_s=60.0, check_s=5.0):
    clock = Clock()
    cache = CachedFeatureStore(store, max_users, ttl_s, check_s, clock)
    await cache.refresh()
    return cache, clock


# Per user: the table is larger than the cache may hold.

def big_store(**features) -> InMemoryFeatureStore:
    store = InMemoryFeatureStore({1: ALICE, **{1000 + n: ALICE for n in range(200)}})
    return store


async def test_a_batchs_misses_are_fetched_in_one_lookup_and_hits_in_none():
    """Per user, the first batch asks the store once for all its users; the same users again cost no lookup."""
    store = big_store()
    cache, _ = await cached(store)
    assert cache.mode == "per user"
    assert await cache.get_features([1, 2, 1, 3]) == {1: ALICE}
    assert len(store.lookups) == 1 and sorted(store.lookups[0]) == [1, 2, 3]
    assert await cache.get_features([3, 1, 2]) == {1: ALICE}
    assert len(store.lookups) == 1
    assert (cache.counters.hits, cache.counters.misses) == (3, 3)


async def test_users_the_store_does_not_know_are_cached_as_cold_start():
    """A cold-start user is remembered as such: a second event from them is no query."""
    store = big_store()
    cache, _ = await cached(store)
    assert await cache.get_features([7]) == {}
    assert await cache.get_features([7]) == {}
    assert len(store.lookups) == 1


async def test_entries_expire_after_the_ttl():
    """Past FEATURE_CACHE_TTL_S the store is asked again, and a changed row is seen."""
    store = big_store()
    cache, clock = await cached(store, ttl_s=60)
    await cache.get_features([1])
    store.features[1] = ALICE._replace(purchase_count=4)
    clock.now = 59.0
    assert (await cache.get_features([1]))[1].purchase_count == 3
    clock.now = 61.0
    assert (await cache.get_features([1]))[1].purchase_count == 4


async def test_the_cache_holds_at_most_its_bound():
    """More users than FEATURE_CACHE_MAX_USERS evict the oldest; the size never passes the bound."""
    cache, _ = await cached(big_store(), max_users=50)
    for start in range(0, 500, 25):
        await cache.get_features(range(start, start + 25))
        assert cache.size <= 50


async def test_a_rebuilt_store_empties_the_per_user_entries_at_the_next_check():
    """When the loader bumps the feature-set version, cached rows are dropped at the next refresh."""
    store = big_store()
    cache, _ = await cached(store)
    await cache.get_features([1])
    store.features[1] = ALICE._replace(mean_last_3_purchases=99.0)
    assert (await cache.get_features([1]))[1].mean_last_3_purchases == 40.0, "not checked yet"
    store.version = 2
    await cache.refresh()
    assert (await cache.get_features([1]))[1].mean_last_3_purchases == 99.0


class StoreWithASlowQuery(InMemoryFeatureStore):
    """Reads its rows when asked but answers only once `release` is set, like a slow MySQL query."""

    def __init__(self, features) -> None:
        super().__init__(features)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_features(self, user_ids):
        rows = await super().get_features(user_ids)
        self.reading.set()
        await self.release.wait()
        return rows


async def test_rows_fetched_across_a_rebuild_serve_their_batch_but_are_not_cached():
    """A query that straddles a rebuild answers its own batch; the next lookup asks again and sees the rebuilt row."""
    store = StoreWithASlowQuery(big_store().features)
    cache, _ = await cached(store)
    lookup = asyncio.create_task(cache.get_features([1]))
    await store.reading.wait()
    store.features[1] = ALICE._replace(mean_last_3_purchases=99.0)
    store.version = 2
    await cache.refresh()
    store.release.set()
    assert (await lookup)[1].mean_last_3_purchases == 40.0, "the row as read, before the rebuild"
    assert (await cache.get_features([1]))[1].mean_last_3_purchases == 99.0
    assert len(store.lookups) == 2


# Snapshot: the whole table fits.

async def test_a_table_that_fits_is_served_from_memory_without_queries():
    """With the table loaded once, lookups (known and cold-start users alike) never reach the store."""
    store = InMemoryFeatureStore({1: ALICE, 2: ALICE})
    cache, _ = await cached(store)
    assert cache.mode == "snapshot" and cache.size == 2
    assert await cache.get_features([1, 5, 2]) == {1: ALICE, 2: ALICE}
    assert store.lookups == [] and store.full_reads == 1


async def test_the_snapshot_is_reloaded_on_a_new_version_or_after_the_ttl_and_not_otherwise():
    """A version bump or an expired snapshot reloads it; a refresh with neither reads only the version."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, clock = await cached(store, ttl_s=60)
    await cache.refresh()
    assert store.full_reads == 1
    store.features[2] = ALICE
    store.version = 2
    await cache.refresh()
    assert store.full_reads == 2 and 2 in await cache.get_features([2])
    clock.now = 61.0
    await cache.refresh()
    assert store.full_reads == 3


async def test_a_database_outage_keeps_the_snapshot_serving(caplog):
    """MySQL down: refreshes fail in the background, once logged, and predictions keep their features."""
    store = InMemoryFeatureStore({1: ALICE})
    cache = CachedFeatureStore(store, 100, 60.0, 0.01)
    await cache.start()
    store.down = True
    with caplog.at_level(logging.WARNING):
        await asyncio.sleep(0.1)
    assert await cache.get_features([1]) == {1: ALICE}
    assert len([r for r in caplog.records if "cannot refresh cached features" in r.getMessage()]) == 1
    await cache.close()


async def test_a_table_that_outgrows_the_bound_switches_to_per_user_caching():
    """When user_features grows past FEATURE_CACHE_MAX_USERS, the snapshot is dropped for per-user entries."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, _ = await cached(store, max_users=10)
    assert cache.mode == "snapshot"
    store.features.update({100 + n: ALICE for n in range(20)})
    store.version = 2
    await cache.refresh()
    assert cache.mode == "per user"
    assert await cache.get_features([1]) == {1: ALICE} and len(store.lookups) == 1
