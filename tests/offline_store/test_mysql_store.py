"""The offline store on the real MySQL server: schema, loader, SQL features and batch lookups."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from offline_store.loader import load_store
from offline_store.mysql import MySQLFeatureStore, OfflineStoreNotReady, close_pool, create_pool, fetch_all
from tests.conftest import STORE_USERS, env_settings, server_sql

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
    """Mean of the last three purchases, count and the last purchase's moment, recomputed in pandas, agree with SQL and the store."""

    async def read(pool):
        purchases = await fetch_all(pool, "SELECT user_id, amount, purchased_at, purchase_id FROM purchases", (), 30)
        features = await fetch_all(
            pool, "SELECT user_id, mean_last_3_purchases, purchase_count, last_purchase_at, computed_at FROM user_features", (), 30
        )
        return purchases, features, await MySQLFeatureStore(pool, 5000).get_all_features()

    purchases, features, served = asyncio.run(with_store(store_settings, read))
    history = pd.DataFrame(purchases, columns=["user_id", "amount", "purchased_at", "purchase_id"]).astype({"amount": float})
    history = history.sort_values(["user_id", "purchased_at", "purchase_id"], ascending=[True, False, False])
    as_of = features[0][4]
    expected = history.groupby("user_id").agg(
        mean_last_3=("amount", lambda a: a.head(3).mean()), count=("amount", "size"), last=("purchased_at", "max")
    )
    assert len(features) == len(expected) == len(served) > STORE_USERS // 2
    for user_id, mean_last_3, count, last_purchase_at, _ in features:
        row = expected.loc[user_id]
        assert mean_last_3 == pytest.approx(row["mean_last_3"], abs=1e-6)
        assert count == row["count"]
        assert last_purchase_at == row["last"] <= as_of
        # DATETIME columns hold UTC: the store hands the same moment on as seconds since the epoch.
        assert served[user_id].last_purchase_at == pytest.approx(row["last"].replace(tzinfo=UTC).timestamp(), abs=1e-6)


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


# user_features as loaders before last_purchase_at built it: an age in days as of the load.
OLD_FEATURE_TABLE = """
CREATE TABLE user_features (
    user_id                  BIGINT      NOT NULL,
    mean_last_3_purchases    DOUBLE      NOT NULL,
    purchase_count           INT         NOT NULL,
    days_since_last_purchase DOUBLE      NOT NULL,
    computed_at              DATETIME(6) NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE=InnoDB
"""


@pytest.fixture
def old_store_settings(stack_settings):
    """A database holding only what an older loader left: user_features with ages and no last_purchase_at."""
    name = f"prediction_it_old_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(
        stack_settings,
        f"CREATE DATABASE `{name}`",
        f"USE `{name}`",
        OLD_FEATURE_TABLE,
        "INSERT INTO user_features VALUES (7, 40.0, 3, 12.5, '2026-11-01 00:00:00')",
    ))
    try:
        yield env_settings(MYSQL_DATABASE=name)
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))


def feature_columns(settings):
    async def read(pool):
        rows = await fetch_all(
            pool, "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'user_features'",
            (), 30,
        )
        return {row[0] for row in rows}

    return asyncio.run(with_store(settings, read))


def check_schema(settings):
    return asyncio.run(with_store(settings, lambda pool: MySQLFeatureStore(pool, 5000).check_schema()))


def test_a_store_from_an_older_loader_is_refused_until_the_loader_migrates_it(old_store_settings):
    """Ages without moments cannot be served: check_schema says to load the store, and the loader recreates the table."""
    with pytest.raises(OfflineStoreNotReady, match="last_purchase_at"):
        check_schema(old_store_settings)

    as_of = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)  # microseconds too: they must survive
    _purchases, users = asyncio.run(load_store(old_store_settings, 40, seed=1, as_of=as_of))

    columns = feature_columns(old_store_settings)
    assert "last_purchase_at" in columns and "days_since_last_purchase" not in columns
    check_schema(old_store_settings)

    async def read(pool):
        store = MySQLFeatureStore(pool, 5000)
        return await store.get_all_features(), await store.built_at_s()

    features, built_at_s = asyncio.run(with_store(old_store_settings, read))
    assert len(features) == users > 0
    assert built_at_s == pytest.approx(as_of.timestamp(), abs=1e-6)
    assert all(0 < user.last_purchase_at <= built_at_s for user in features.values())
