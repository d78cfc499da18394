"""The offline store on the real MySQL server: schema, loader, SQL features and batch lookups."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, fetch_all
from tests.conftest import STORE_USERS, env_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def store_settings(store_database):
    return env_settings(MYSQL_DATABASE=store_database[0])


async def with_store(settings, use):
    pool = await create_pool(settings)
    try:
        return await use(pool)
    finally:
        await close_pool(pool)


def test_sql_features_match_the_history_they_come_from(store_settings):
    """Mean of the last three purchases, count and days since the last one, recomputed in pandas, agree with SQL."""

    async def read(pool):
        purchases = await fetch_all(pool, "SELECT user_id, amount, purchased_at, purchase_id FROM purchases", (), 30)
        features = await fetch_all(
            pool, "SELECT user_id, mean_last_3_purchases, purchase_count, days_since_last_purchase, computed_at FROM user_features", (), 30
        )
        return purchases, features

    purchases, features = asyncio.run(with_store(store_settings, read))
    history = pd.DataFrame(purchases, columns=["user_id", "amount", "purchased_at", "purchase_id"]).astype({"amount": float})
    history = history.sort_values(["user_id", "purchased_at", "purchase_id"], ascending=[True, False, False])
    as_of = features[0][4]
    expected = history.groupby("user_id").agg(
        mean_last_3=("amount", lambda a: a.head(3).mean()), count=("amount", "size"), last=("purchased_at", "max")
    )
    assert len(features) == len(expected) > STORE_USERS // 2
    for user_id, mean_last_3, count, days_since, _ in features:
        row = expected.loc[user_id]
        assert mean_last_3 == pytest.approx(row["mean_last_3"], abs=1e-6)
        assert count == row["count"]
        assert days_since == pytest.approx((as_of - row["last"]).total_seconds() / 86400, abs=1e-6)


def test_a_batch_lookup_returns_known_users_and_leaves_out_the_rest(store_settings, store_database):
    """Known users come back with is_new_user False; unknown ids are simply absent (cold start)."""
    _db, known = store_database
    some_known = sorted(known)[:5]
    unknown = [STORE_USERS + 1, STORE_USERS + 2]

    async def lookup(pool):
        return await MySQLFeatureStore(pool, 5000).get_features(some_known + unknown + some_known)

    found = asyncio.run(with_store(store_settings, lookup))
    assert set(found) == set(some_known)
    assert all(not features.is_new_user for features in found.values())
    assert found[some_known[0]] == known[some_known[0]]


def test_a_cancelled_query_does_not_return_its_connection_to_the_pool(store_settings):
    """A query cut off by its deadline closes its connection, so the next query gets a clean one."""

    async def run(pool):
        with pytest.raises(TimeoutError):
            await fetch_all(pool, "SELECT SLEEP(2)", (), timeout_s=0.2)
        assert pool.freesize == 0, "the half-read connection was dropped, not pooled"
        return await fetch_all(pool, "SELECT 41 + 1", (), timeout_s=5)

    assert asyncio.run(with_store(store_settings, run)) == [(42,)]
