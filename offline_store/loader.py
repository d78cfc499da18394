"""Create the offline store schema, load synthetic purchase history and compute user features.

    python -m offline_store.loader [--users 10000] [--seed 42]

It replaces what the tables held, so running it twice gives the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import aiomysql
import pymysql

from config import Settings
from errors import SetupError
from offline_store.history import PurchaseHistory, generate_history
from offline_store.mysql import close_pool, create_pool
from runtime.startup import start_program

# Named explicitly: run with `python -m`, this module's __name__ is "__main__".
log = logging.getLogger("offline_store.loader")

SQL_DIR = Path(__file__).resolve().parent
INSERT_CHUNK_ROWS = 5_000


def sql_statements(path: Path) -> list[str]:
    """The statements of a .sql file: comments dropped, split on `;`."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


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


BUMP_FEATURE_SET_VERSION = (
    "INSERT INTO feature_set (id, version, built_at) VALUES (1, 1, %(as_of)s)"
    " ON DUPLICATE KEY UPDATE version = version + 1, built_at = VALUES(built_at)"
)


async def refresh_features(conn: aiomysql.Connection, as_of: datetime) -> int:
    """Recompute user_features in one transaction; returns how many users have features."""
    (statement,) = sql_statements(SQL_DIR / "features.sql")
    naive_utc = as_of.astimezone(UTC).replace(tzinfo=None)
    async with conn.cursor() as cursor:
        await conn.begin()
        await cursor.execute("DELETE FROM user_features")
        await cursor.execute(statement, {"as_of": naive_utc})
        users = cursor.rowcount
        await cursor.execute(BUMP_FEATURE_SET_VERSION, {"as_of": naive_utc})
        await conn.commit()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users 0..N-1 to generate history for (default 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed, for a repeatable store (default 42)")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")

    settings = start_program()

    started = time.perf_counter()
    log.info("loading the offline store at %s:%s/%s", settings.mysql_host, settings.mysql_port, settings.mysql_database)
    try:
        purchases, users = asyncio.run(load_store(settings, args.users, args.seed, datetime.now(UTC)))
    except SetupError as exc:  # a setting to fix (a MYSQL_SSL_* file, TLS refused): its message, not a traceback
        log.error("%s", exc)
        return exc.exit_code
    except pymysql.err.MySQLError as exc:
        log.error("cannot use MySQL at %s:%s: %s (is it running? `make up` starts a local one)",
                  settings.mysql_host, settings.mysql_port, exc)
        return 1
    log.info(
        "offline store ready: %d purchases for %d users, features for %d users (the rest are cold-start), %.1f s",
        purchases, args.users, users, time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
