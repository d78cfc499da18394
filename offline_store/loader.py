"""Create the offline store schema, load synthetic purchase history and compute user features.

    python -m offline_store.loader [--users 10000] [--seed 42]
    python -m offline_store.loader --keep-history

It replaces what the tables held, so running it twice gives the same store. With --keep-history
it keeps the purchases the store holds (streamed ones too): it only creates or updates the
schema and rebuilds every user's features from them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import warnings
from datetime import UTC, datetime

import aiomysql
import pymysql

from config import Settings
from errors import SetupError
from offline_store.feature_sql import SQL_DIR, naive_utc, rebuild_statements, sql_statements
from offline_store.history import PurchaseHistory, generate_history
from offline_store.migrations import add_missing_columns
from offline_store.mysql import close_pool, create_pool
from runtime.startup import start_program

# Named explicitly: run with `python -m`, this module's __name__ is "__main__".
log = logging.getLogger("offline_store.loader")

INSERT_CHUNK_ROWS = 5_000


# user_features as older loaders built it (an age in days as of the load), which this code
# cannot serve from. It holds nothing but derived rows, rebuilt in the same run.
_OLD_FEATURE_TABLE = (
    "SELECT COUNT(*) FROM information_schema.columns"
    " WHERE table_schema = DATABASE() AND table_name = 'user_features' AND column_name = 'days_since_last_purchase'"
)


async def create_schema(conn: aiomysql.Connection) -> None:
    # `CREATE TABLE IF NOT EXISTS` on a loaded store makes MySQL note "already exists": expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pymysql.Warning)
        async with conn.cursor() as cursor:
            await cursor.execute(_OLD_FEATURE_TABLE)
            (old,) = await cursor.fetchone()
            if old:
                log.info("user_features holds ages from an older loader; recreating it with last_purchase_at")
                await cursor.execute("DROP TABLE user_features")
            for statement in sql_statements(SQL_DIR / "schema.sql"):
                await cursor.execute(statement)
            await add_missing_columns(cursor)


async def replace_history(conn: aiomysql.Connection, history: PurchaseHistory) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute("TRUNCATE TABLE purchases")
        rows = list(zip(history.user_ids.tolist(), history.amounts.tolist(), history.purchased_at, strict=True))
        for start in range(0, len(rows), INSERT_CHUNK_ROWS):
            chunk = rows[start : start + INSERT_CHUNK_ROWS]
            await cursor.executemany(
                "INSERT INTO purchases (user_id, amount, purchased_at) VALUES (%s, %s, %s)", chunk
            )
            await conn.commit()
            log.info("loaded %d/%d purchases", start + len(chunk), len(rows))


# First in the rebuild's transaction: the row's lock is what the purchase sink's refreshes take
# first too, so a refresh waits for the whole rebuild (or the rebuild for it), and the table never
# holds half of one and half of the other.
BUMP_FEATURE_SET_VERSION = (
    "INSERT INTO feature_set (id, version, built_at) VALUES (1, 1, %(as_of)s)"
    " ON DUPLICATE KEY UPDATE version = version + 1, built_at = VALUES(built_at)"
)


async def refresh_features(conn: aiomysql.Connection, as_of: datetime) -> int:
    """Recompute user_features in one transaction; returns how many users have features."""
    async with conn.cursor() as cursor:
        await conn.begin()
        try:
            await cursor.execute(BUMP_FEATURE_SET_VERSION, {"as_of": naive_utc(as_of)})
            delete, rebuild = rebuild_statements(as_of)
            await cursor.execute(*delete)
            await cursor.execute(*rebuild)
            users = cursor.rowcount
            await conn.commit()
        except BaseException:
            # Rolled back by the server as the connection goes: never back to a pool half done.
            conn.close()
            raise
    return users


async def load_store(settings: Settings, num_users: int, seed: int, as_of: datetime) -> tuple[int, int]:
    """Schema, history and features in one go; returns (purchases, users with features)."""
    history = generate_history(num_users, as_of=as_of.astimezone(UTC).replace(tzinfo=None), seed=seed)
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await create_schema(conn)
            await replace_history(conn, history)
            users = await refresh_features(conn, as_of)
    finally:
        await close_pool(pool)
    return len(history), users


async def rebuild_store(settings: Settings, as_of: datetime) -> tuple[int, int]:
    """Schema and features, keeping the purchases held; returns (purchases, users with features)."""
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            await create_schema(conn)
            users = await refresh_features(conn, as_of)
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT COUNT(*) FROM purchases")
                (purchases,) = await cursor.fetchone()
    finally:
        await close_pool(pool)
    return int(purchases), users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users 0..N-1 to generate history for (default 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed, for a repeatable store (default 42)")
    parser.add_argument("--keep-history", action="store_true",
                        help="keep the purchases held: only create or update the schema and rebuild the features from them")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")

    settings = start_program()

    started = time.perf_counter()
    log.info("loading the offline store at %s:%s/%s", settings.mysql_host, settings.mysql_port, settings.mysql_database)
    try:
        if args.keep_history:
            purchases, users = asyncio.run(rebuild_store(settings, datetime.now(UTC)))
        else:
            purchases, users = asyncio.run(load_store(settings, args.users, args.seed, datetime.now(UTC)))
    except SetupError as exc:  # a setting to fix (a MYSQL_SSL_* file, TLS refused): its message, not a traceback
        log.error("%s", exc)
        return exc.exit_code
    except pymysql.err.MySQLError as exc:
        log.error("cannot use MySQL at %s:%s: %s (is it running? `make up` starts a local one)",
                  settings.mysql_host, settings.mysql_port, exc)
        return 1
    if args.keep_history:
        log.info("offline store ready: %d purchases kept, features rebuilt for %d users, %.1f s",
                 purchases, users, time.perf_counter() - started)
        return 0
    log.info(
        "offline store ready: %d purchases for %d users, features for %d users (the rest are cold-start), %.1f s",
        purchases, args.users, users, time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
