"""Purchases into the real MariaDB: written once whatever is replayed, features refreshed as a rebuild computes them,
and a rebuild and refreshes running together never leaving a mixed table."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.purchase import Purchase
from offline_store.loader import load_store, refresh_features
from offline_store.mysql import MySQLFeatureStore, close_pool, create_pool, fetch_all
from offline_store.purchase_writes import refresh_users, write_purchases
from tests.conftest import env_settings, server_sql

pytestmark = pytest.mark.integration

USERS = 60
NEW_USER = 5_000  # beyond the loaded users: cold-start until a purchase is written
TIMEOUT_S = 30.0


@pytest.fixture
def sink_settings(stack_settings):
    """A store of its own, loaded by the loader, since these tests write into it."""
    name = f"purchases_sink_{uuid.uuid4().hex[:8]}"
    asyncio.run(server_sql(stack_settings, f"CREATE DATABASE `{name}`"))
    settings = env_settings(MYSQL_DATABASE=name)
    try:
        asyncio.run(load_store(settings, USERS, seed=5, as_of=datetime.now(UTC) - timedelta(minutes=1)))
        yield settings
    finally:
        asyncio.run(server_sql(stack_settings, f"DROP DATABASE IF EXISTS `{name}`"))


async def with_pool(settings, use):
    pool = await create_pool(settings)
    try:
        return await use(pool)
    finally:
        await close_pool(pool)


def purchase(purchase_id: str, user_id: int, amount: float, at: datetime) -> Purchase:
    return Purchase(purchase_id, user_id, amount, at)


FEATURE_ROWS = "SELECT user_id, mean_last_3_purchases, purchase_count, last_purchase_at, computed_at FROM user_features"


async def feature_rows(pool, user_ids=None) -> dict[int, tuple]:
    rows = await fetch_all(pool, FEATURE_ROWS, (), TIMEOUT_S)
    return {row[0]: tuple(row[1:]) for row in rows if user_ids is None or row[0] in user_ids}


async def count_purchases(pool) -> int:
    ((count,),) = await fetch_all(pool, "SELECT COUNT(*) FROM purchases", (), TIMEOUT_S)
    return int(count)


def test_a_replayed_batch_adds_nothing_and_changes_nothing(sink_settings):
    """The same batch twice, and an id repeated inside it: one row per id, the second write commits nothing."""
    now = datetime.now(UTC)
    batch = [
        purchase("p-1", 3, 20.0, now - timedelta(seconds=5)),
        purchase("p-2", NEW_USER, 35.5, now - timedelta(seconds=4)),
        purchase("p-1", 3, 999.0, now - timedelta(seconds=3)),  # a repeated id: the first record wins
    ]

    async def run(pool):
        before = await count_purchases(pool)
        first = await write_purchases(pool, batch, now, TIMEOUT_S)
        rows_after_first = await feature_rows(pool, {3, NEW_USER})
        again = await write_purchases(pool, batch, now + timedelta(seconds=1), TIMEOUT_S)
        return before, first, rows_after_first, again, await count_purchases(pool), await feature_rows(pool, {3, NEW_USER})

    before, first, rows_after_first, again, after, rows_after_again = asyncio.run(with_pool(sink_settings, run))
    assert (first.new, first.known, first.refreshed_users) == (2, 1, 2)
    assert first.change_seq is not None
    assert (again.new, again.known, again.change_seq) == (0, 3, None)
    assert after == before + 2
    assert rows_after_again == rows_after_first, "a replay rewrites no row"
    assert rows_after_first[NEW_USER][:2] == (35.5, 1), "the new user is no longer cold-start"


def test_ids_are_told_apart_byte_for_byte(sink_settings):
    """Ids that a text collation would take for one (case, trailing space, accents) are different purchases."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    ids = ["p-x", "P-X", "p-x ", "p-é", "p-e"]
    batch = [purchase(pid, NEW_USER, 10.0, now) for pid in ids]

    written = asyncio.run(with_pool(sink_settings, lambda pool: write_purchases(pool, batch, now, TIMEOUT_S)))
    assert written.new == len(ids)


def test_a_refresh_gives_the_rows_a_full_rebuild_gives(sink_settings):
    """The refreshed users' rows equal what the loader's rebuild computes as of the same moment, to the last digit."""
    as_of = datetime.now(UTC).replace(microsecond=123456)
    users = [0, 1, 2, 7, NEW_USER]
    batch = [purchase(f"r-{n}", user, 10.0 + n * 3.25, as_of - timedelta(minutes=n)) for n, user in enumerate(users * 2)]
    # Dated after as_of: written, but counted neither by the refresh nor by a rebuild as of as_of.
    batch.append(purchase("r-later", 1, 500.0, as_of + timedelta(hours=1)))

    async def run(pool):
        written = await write_purchases(pool, batch, as_of, TIMEOUT_S)
        refreshed = await feature_rows(pool, set(users))
        async with pool.acquire() as conn:
            await refresh_features(conn, as_of)
        return written, refreshed, await feature_rows(pool, set(users))

    written, refreshed, rebuilt = asyncio.run(with_pool(sink_settings, run))
    assert written.refreshed_users == len(users)
    assert refreshed == rebuilt
    assert refreshed[NEW_USER][1] == 2


def test_a_user_is_refreshed_again_once_a_purchase_from_the_future_comes_due(sink_settings):
    """A purchase dated ahead of the write counts from the refresh after its time, not before."""
    now = datetime.now(UTC)

    async def run(pool):
        await write_purchases(pool, [purchase("f-1", NEW_USER, 42.0, now + timedelta(seconds=30))], now, TIMEOUT_S)
        before = await feature_rows(pool, {NEW_USER})
        again = await refresh_users(pool, [NEW_USER], now + timedelta(seconds=31), TIMEOUT_S)
        return before, again, await feature_rows(pool, {NEW_USER})

    before, again, after = asyncio.run(with_pool(sink_settings, run))
    assert before == {}
    assert again.refreshed_users == 1 and again.change_seq is not None
    assert after[NEW_USER][:2] == (42.0, 1)


def test_changed_rows_are_found_by_their_change_number_and_a_rebuild_resets_them(sink_settings):
    """changed_features(n) returns exactly the rows refreshes after n wrote; after a rebuild there are none."""
    now = datetime.now(UTC) - timedelta(seconds=1)

    async def run(pool):
        store = MySQLFeatureStore(pool, 5000)
        start = await store.change_seq()
        first = await write_purchases(pool, [purchase("c-1", 4, 12.0, now)], now, TIMEOUT_S)
        second = await write_purchases(pool, [purchase("c-2", NEW_USER, 13.0, now)], now, TIMEOUT_S)
        assert start is not None and first.change_seq is not None, "a store built by the loader numbers its changes"
        since_start = await store.changed_features(start)
        since_first = await store.changed_features(first.change_seq)
        async with pool.acquire() as conn:
            await refresh_features(conn, now)
        after_rebuild = await store.changed_features(start)
        return start, first, second, since_start, since_first, after_rebuild, await store.change_seq()

    start, first, second, since_start, since_first, after_rebuild, seq_after = asyncio.run(with_pool(sink_settings, run))
    assert first.change_seq == start + 1 and second.change_seq == start + 2
    assert set(since_start.features) == {4, NEW_USER} and since_start.last_seq == second.change_seq
    assert set(since_first.features) == {NEW_USER}
    assert since_first.features[NEW_USER].purchase_count == 1
    assert after_rebuild.features == {} and after_rebuild.last_seq == start
    assert seq_after == second.change_seq, "a rebuild takes no change number"


def test_a_rebuild_and_refreshes_running_together_never_leave_a_mixed_table(sink_settings):
    """Rebuilds and purchase batches at once, round after round: the table always equals a rebuild of the purchases it ends with."""
    as_of = datetime.now(UTC)

    async def run(pool):
        async def rebuild():
            async with pool.acquire() as conn:
                await refresh_features(conn, as_of)

        for round_ in range(6):
            batch = [purchase(f"m-{round_}-{n}", (n * 7 + round_) % USERS, 5.0 + n, as_of - timedelta(seconds=n + 1)) for n in range(20)]
            batch.append(purchase(f"m-{round_}-new", NEW_USER + round_, 9.0, as_of - timedelta(seconds=1)))
            await asyncio.gather(rebuild(), write_purchases(pool, batch, as_of, TIMEOUT_S), rebuild())
        together = await feature_rows(pool)
        await rebuild()
        return together, await feature_rows(pool)

    together, rebuilt = asyncio.run(with_pool(sink_settings, run))
    assert {NEW_USER + n for n in range(6)} <= set(together)
    assert together == rebuilt

