from offline_store.cache import CachedFeatureStore
from offline_store.features import UserFeatures
from tests.fakes import InMemoryFeatureStore

ALICE = UserFeatures(40.0, 3, 10.0, False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Versions:
    def __init__(self) -> None:
        self.version = 1
        self.reads = 0

    async def __call__(self):
        self.reads += 1
        return self.version


def cached(store, *, max_users=100, ttl_s=60.0, check_s=5.0):
    clock, versions = Clock(), Versions()
    return CachedFeatureStore(store, max_users, ttl_s, versions, check_s, clock), clock, versions


async def test_a_batchs_misses_are_fetched_in_one_lookup_and_hits_in_none():
    """The first batch asks the store once for all its users; the same users again cost no lookup."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, _, _ = cached(store)
    assert await cache.get_features([1, 2, 1, 3]) == {1: ALICE}
    assert len(store.lookups) == 1 and sorted(store.lookups[0]) == [1, 2, 3]
    assert await cache.get_features([3, 1, 2]) == {1: ALICE}
    assert len(store.lookups) == 1
    assert (cache.counters.hits, cache.counters.misses) == (3, 3)


async def test_users_the_store_does_not_know_are_cached_as_cold_start():
    """A cold-start user is remembered as such: a second event from them is no query."""
    store = InMemoryFeatureStore({})
    cache, _, _ = cached(store)
    assert await cache.get_features([7]) == {}
    assert await cache.get_features([7]) == {}
    assert len(store.lookups) == 1


async def test_entries_expire_after_the_ttl():
    """Past FEATURE_CACHE_TTL_S the store is asked again, and a changed row is seen."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, clock, _ = cached(store, ttl_s=60)
    await cache.get_features([1])
    store.features[1] = ALICE._replace(purchase_count=4)
    clock.now = 59.0
    assert (await cache.get_features([1]))[1].purchase_count == 3
    clock.now = 61.0
    assert (await cache.get_features([1]))[1].purchase_count == 4


async def test_the_cache_holds_at_most_its_bound():
    """More users than FEATURE_CACHE_MAX_USERS evict the oldest; the size never passes the bound."""
    cache, _, _ = cached(InMemoryFeatureStore({}), max_users=50)
    for start in range(0, 500, 25):
        await cache.get_features(range(start, start + 25))
        assert cache.size <= 50


async def test_a_rebuilt_store_empties_the_cache_at_the_next_version_check():
    """When the loader bumps the feature-set version, cached rows are dropped within the check interval."""
    store = InMemoryFeatureStore({1: ALICE})
    cache, clock, versions = cached(store, check_s=5)
    await cache.get_features([1])
    store.features[1] = ALICE._replace(mean_last_3_purchases=99.0)
    versions.version = 2
    clock.now = 4.0
    assert (await cache.get_features([1]))[1].mean_last_3_purchases == 40.0, "not checked yet"
    clock.now = 5.5
    assert (await cache.get_features([1]))[1].mean_last_3_purchases == 99.0
    assert versions.reads == 2, "the version is read once per interval, not per batch"
