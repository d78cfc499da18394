"""A store built before the purchase sink existed: refused by the sink by name, then migrated by the loader
keeping its purchases, into the very tables a new store gets."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from offline_store.loader import create_schema, rebuild_store
from offline_store.mysql import OfflineStoreNotReady, close_pool, create_pool, fetch_all
from offline_store.purchase_writes import check_sink_schema
from tests.conftest import env_settings, server_sql

pytestmark = pytest.mark.integration

# The tables as the loader made them before purchase_ref, changed_seq and change_seq.
OLD_TABLES = (
    """CREATE TABLE purchases (
        purchase_id  BIGINT        NOT NULL AUTO_INCREMENT,
        user_id      BIGINT        NOT NULL,
        amount       DECIMAL(12,2) NOT NULL,
        purchased_at DATETIME(6)   NOT NULL,
        PRIMARY KEY (purchase_id),
        KEY purchases_by_user_time (user_id, purchased_at)
    ) ENGINE=InnoDB""",
    """CREATE TABLE user_features (
        user_id                  BIGINT      NOT NULL,
        mean_last_3_purchases    DOUBLE      NOT NULL,
        purchase_count           INT         NOT NULL,
        last_purchase_at         DATETIME(6) NOT NULL,
        computed_at              DATETIME(6) NOT NULL,
        PRIMARY KEY (user_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE feature_set (
        id         TINYINT     NOT NULL,
        version    BIGINT      NOT NULL,
        built_at   DATETIME(6) NOT NULL,
        PRIMARY KEY (id)
    ) ENGINE=InnoDB""",
    "INSERT INTO purchases (user_id, amount, purchased_at) VALUES (1, 10.00, '2026-01-01 10:00:00'), (1, 30.00, '2026-02-01 10:00:00')",
    "INSERT INTO feature_set VALUES (1, 4, '2026-02-02 00:00:00')",
)

COLUMNS = (
    "SELECT table_name, column_name, ordinal_position, column_type, is_nullable, column_default FROM information_schema.columns"
    " WHERE table_schema = DATABASE() ORDER BY table_name, ordinal_position"
)
INDEXES = (
    "SELECT table_name, index_name, non_unique, seq_in_index, column_name FROM information_schema.statistics"
    " WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index"
)


@pytest.fixture
def databases(stack_settings):
    """An old store and a new empty one, both private to the test."""
    names = [f"purchases_sink_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    old, new = names
    asyncio.run(server_sql(stack_settings, *(f"CREATE DATABASE `{name}`" for name in names), f"USE `{old}`", *OLD_TABLES))
    try:
        yield env_settings(MYSQL_DATABASE=old), env_settings(MYSQL_DATABASE=new)
    finally:
        asyncio.run(server_sql(stack_settings, *(f"DROP DATABASE IF EXISTS `{name}`" for name in names)))


async def with_pool(settings, use):
    pool = await create_pool(settings)
    try:
        return await use(pool)
    finally:
        await close_pool(pool)


async def shape(pool):
    return await fetch_all(pool, COLUMNS, (), 30), await fetch_all(pool, INDEXES, (), 30)


def test_an_old_store_is_refused_by_the_sink_then_migrated_keeping_its_purchases(databases):
    """The sink names the missing column and --keep-history; after it, the old store has the new store's columns and
    indexes, its two purchases, and features built from them."""
    old, new = databases
    with pytest.raises(OfflineStoreNotReady, match=r"purchases\.purchase_ref .*--keep-history"):
        asyncio.run(with_pool(old, lambda pool: check_sink_schema(pool, 30)))

    purchases, users = asyncio.run(rebuild_store(old, datetime(2026, 3, 1, tzinfo=UTC)))
    assert (purchases, users) == (2, 1)

    async def create_new(pool):
        async with pool.acquire() as conn:
            await create_schema(conn)

    asyncio.run(with_pool(new, create_new))
    migrated, fresh = asyncio.run(with_pool(old, shape)), asyncio.run(with_pool(new, shape))
    assert migrated == fresh

    async def after(pool):
        await check_sink_schema(pool, 30)
        return await fetch_all(pool, "SELECT user_id, mean_last_3_purchases, purchase_count, changed_seq FROM user_features", (), 30), \
            await fetch_all(pool, "SELECT version, change_seq FROM feature_set", (), 30)

    features, feature_set = asyncio.run(with_pool(old, after))
    assert features == [(1, 20.0, 2, 0)]
    assert feature_set == [(5, 0)], "the rebuild bumped the version; no refresh yet"


def test_the_sink_refuses_a_store_whose_features_were_never_built(databases):
    """Tables without a feature_set row: the sink says to run the loader instead of failing on its first batch."""
    _old, new = databases

    async def run(pool):
        async with pool.acquire() as conn:
            await create_schema(conn)
        await check_sink_schema(pool, 30)

    with pytest.raises(OfflineStoreNotReady, match=r"never built.*offline_store\.loader"):
        asyncio.run(with_pool(new, run))
