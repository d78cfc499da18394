"""The cache picking up rows the purchase sink refreshed, between full reloads, from an in-memory store."""

import asyncio
import logging

from features.user import UserFeatures
from offline_store.cache import CachedFeatureStore
from tests.fakes.mysql import InMemoryFeatureStore
from tests.offline_store.test_cache import ALICE, StoreWithASlowQuery, big_store, cached

BOUGHT_AGAIN = ALICE._replace(purchase_count=4, mean_last_3_purchases=55.0)
NEWCOMER = UserFeatures(19.9, 1, 1_790_000_000.0)


async def test_a_snapshot_takes_refreshed_rows_without_reloading_the_table():
    """A returning user's new row and a first-time buyer's row reach the snapshot with one small query, no full read."""
    store = InMemoryFeatureStore({1: ALICE, 2: ALICE})
    cache, _ = await cached(store)
    assert await cache.get_features([1, 7]) == {1: ALICE}, "user 7 is cold-start"
    store.refresh_users({1: BOUGHT_AGAIN, 7: NEWCOMER})

    assert await cache.apply_changes() == 2
    assert await cache.get_features([1, 2, 7]) == {1: BOUGHT_AGAIN, 2: ALICE, 7: NEWCOMER}
    assert store.full_reads == 1 and store.change_queries == 1


async def test_rows_already_applied_are_not_fetched_again():
    """The next poll asks after the last change it saw: it brings only what changed since."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, _ = await cached(store)
    store.refresh_users({1: BOUGHT_AGAIN})
    assert await cache.apply_changes() == 1
    assert await cache.apply_changes() == 0
    store.refresh_users({2: NEWCOMER})
    assert await cache.apply_changes() == 1
    assert (await cache.get_features([1, 2])) == {1: BOUGHT_AGAIN, 2: NEWCOMER}


async def test_per_user_a_cached_cold_start_user_becomes_the_returning_user():
    """Per user: a cached cold-start entry and a cached row are replaced in place; no lookup is needed to see them."""
    store = big_store()
    cache, _ = await cached(store)
    assert cache.mode == "per user"
    assert await cache.get_features([1, 7]) == {1: ALICE}
    lookups = len(store.lookups)
    store.refresh_users({1: BOUGHT_AGAIN, 7: NEWCOMER})

    await cache.apply_changes()
    assert await cache.get_features([1, 7]) == {1: BOUGHT_AGAIN, 7: NEWCOMER}
    assert len(store.lookups) == lookups, "served from the cache"


async def test_per_user_changed_rows_of_users_not_cached_are_not_added():
    """Rows of users the cache does not hold are left for their next lookup: the cache does not grow by itself."""
    store = big_store()
    cache, _ = await cached(store)
    await cache.get_features([1])
    store.refresh_users({1000 + n: NEWCOMER for n in range(50)})
    await cache.apply_changes()
    assert cache.size == 1
    assert await cache.get_features([1000]) == {1000: NEWCOMER}


async def test_rows_fetched_across_applied_changes_serve_their_batch_but_are_not_cached():
    """A lookup that read a user's row before a refresh was applied answers its batch; the next lookup sees the refreshed row."""
    store = StoreWithASlowQuery(big_store().features)
    cache, _ = await cached(store)
    lookup = asyncio.create_task(cache.get_features([1]))
    await store.reading.wait()
    store.refresh_users({1: BOUGHT_AGAIN})
    await cache.apply_changes()
    store.release.set()
    assert (await lookup)[1] == ALICE, "the row as read, before the refresh"
    assert (await cache.get_features([1]))[1] == BOUGHT_AGAIN


class StoreWithASlowReload(InMemoryFeatureStore):
    """Reads the whole table when asked but answers only once `release` is set."""

    def __init__(self, features) -> None:
        super().__init__(features)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_all_features(self):
        rows = await super().get_all_features()
        self.reading.set()
        await self.release.wait()
        return rows


async def test_changes_wait_for_a_reload_in_progress():
    """Changes are never fetched while a reload reads the table, so rows read before it cannot land on top of it."""
    store = StoreWithASlowReload({1: ALICE})
    store.release.set()
    cache, _ = await cached(store)
    store.release.clear()
    store.reading.clear()
    store.version = 2
    reload = asyncio.create_task(cache.refresh())
    await store.reading.wait()
    store.refresh_users({1: BOUGHT_AGAIN})
    poll = asyncio.create_task(cache.apply_changes())
    await asyncio.sleep(0)
    assert store.change_queries == 0, "the poll waits for the reload"
    store.release.set()
    await reload
    await poll
    assert store.change_queries == 1
    assert await cache.get_features([1]) == {1: BOUGHT_AGAIN}


async def test_a_rebuild_still_reloads_and_the_changes_go_on_from_the_rebuilt_store():
    """After a rebuild (rows stamped 0, a new version) the reload holds its rows, and later refreshes still arrive."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, _ = await cached(store)
    store.refresh_users({1: BOUGHT_AGAIN})
    store.features = {1: ALICE._replace(purchase_count=9), 3: NEWCOMER}
    store.changed_seq.clear()
    store.version = 2
    await cache.refresh()
    assert store.full_reads == 2
    assert await cache.apply_changes() == 0
    assert await cache.get_features([1, 3]) == {1: ALICE._replace(purchase_count=9), 3: NEWCOMER}
    store.refresh_users({4: NEWCOMER})
    assert await cache.apply_changes() == 1 and 4 in await cache.get_features([4])


async def test_a_store_without_change_numbers_is_not_polled():
    """A store built before the sink existed keeps no numbers: polling asks nothing of it."""
    store = InMemoryFeatureStore({1: ALICE})
    store.seq = None
    cache, _ = await cached(store)
    assert await cache.apply_changes() == 0
    assert store.change_queries == 0


async def test_a_snapshot_that_would_outgrow_the_bound_switches_to_per_user_caching():
    """New users past FEATURE_CACHE_MAX_USERS drop the snapshot for per-user entries, which then fetch the new rows."""
    store = InMemoryFeatureStore({1: ALICE, 2: ALICE})
    cache, _ = await cached(store, max_users=3)
    store.refresh_users({10: NEWCOMER, 11: NEWCOMER})
    await cache.apply_changes()
    assert cache.mode == "per user"
    assert await cache.get_features([1, 10]) == {1: ALICE, 10: NEWCOMER}


async def test_the_background_poll_applies_changes_and_survives_an_outage(caplog):
    """Started, the cache polls by itself: a failing store is logged once, and changes made meanwhile arrive once it answers."""
    store = InMemoryFeatureStore({1: ALICE})
    cache = CachedFeatureStore(store, 100, 60.0, 60.0, changes_poll_s=0.01)
    await cache.start()
    try:
        store.down = True
        store.refresh_users({1: BOUGHT_AGAIN})
        with caplog.at_level(logging.WARNING):
            for _ in range(500):
                if any("cannot fetch refreshed feature rows" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        assert await cache.get_features([1]) == {1: ALICE}, "the snapshot keeps serving"
        store.down = False
        for _ in range(500):
            if (await cache.get_features([1]))[1] == BOUGHT_AGAIN:
                break
            await asyncio.sleep(0.01)
        assert (await cache.get_features([1]))[1] == BOUGHT_AGAIN
        warnings = [r for r in caplog.records if "cannot fetch refreshed feature rows" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await cache.close()
