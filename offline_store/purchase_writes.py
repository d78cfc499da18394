"""Purchases into the offline store, each exactly once, with their users' features refreshed in the same transaction.

Every transaction here starts by numbering itself: `UPDATE feature_set SET change_seq = change_seq
+ 1` takes the row lock the loader's full rebuild also takes first, so a refresh and a rebuild
never interleave, and refreshes commit in the order of their numbers, which is what lets the
service fetch the rows changed since the last number it saw (offline_store/cache.py). The rows a
refresh writes come from the same SQL as the rebuild's, narrowed to its users (feature_sql.py).

A purchase is known by its id on the stream (`purchases.purchase_ref`, unique), so writing a
batch again, after a crash before its offsets were committed, adds nothing and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import aiomysql
import pymysql

from events.purchase import Purchase
from events.schema import InvalidEvent
from offline_store.feature_sql import naive_utc, refresh_statements
from offline_store.migrations import ADDED_COLUMNS
from offline_store.mysql import OfflineStoreNotReady, fetch_all, is_missing_table_or_column

NUMBER_THIS_CHANGE = "UPDATE feature_set SET change_seq = change_seq + 1 WHERE id = 1"
READ_CHANGE_NUMBER = "SELECT change_seq FROM feature_set WHERE id = 1"
# A no-op on a purchase already held: the first record of an id wins, a repeat changes nothing.
INSERT_PURCHASE = (
    "INSERT INTO purchases (purchase_ref, user_id, amount, purchased_at) VALUES (%s, %s, %s, %s)"
    " ON DUPLICATE KEY UPDATE purchase_ref = purchase_ref"
)
# What a DATETIME column holds; a purchase dated outside it could never be written, and would
# stop its partition for good if it were retried.
EARLIEST_STORABLE = datetime(1000, 1, 1)


@dataclass(frozen=True)
class Written:
    """What one transaction did."""

    new: int = 0  # purchases added
    known: int = 0  # purchases the store held already: a replay, or an id sent twice
    refreshed_users: int = 0
    change_seq: int | None = None  # the refresh's number; None when nothing was committed




def check_storable(purchase: Purchase) -> Purchase:
    """The purchase, or InvalidEvent when the store cannot hold it (dead-lettered, never retried)."""
    if naive_utc(purchase.timestamp) < EARLIEST_STORABLE:
        raise InvalidEvent("invalid_field", "timestamp is before the year 1000, which the store cannot hold - at `$.timestamp`")
    return purchase


async def write_purchases(pool: aiomysql.Pool, purchases: Sequence[Purchase], as_of: datetime, timeout_s: float) -> Written:
    """Add the purchases the store does not hold yet and refresh their users' features as of `as_of`
    (timezone-aware), in one transaction.

    Purchases dated after `as_of` are written but do not count in the features yet (features.sql
    takes purchases up to `as_of`, as the rebuild does): refresh those users once their time has come.
    """
    async def write(cursor: aiomysql.Cursor, seq: int) -> Written | None:
        # Sent as text, held as its bytes: the connection's utf8mb4 is the id's UTF-8.
        refs = [p.purchase_id for p in purchases]
        held = await _held_refs(cursor, refs)
        new: dict[str, Purchase] = {}
        for ref, purchase in zip(refs, purchases, strict=True):
            if ref not in held and ref not in new:
                new[ref] = purchase
        if not new:
            return None
        rows = [(ref, p.user_id, p.amount, naive_utc(p.timestamp)) for ref, p in new.items()]
        await cursor.executemany(INSERT_PURCHASE, rows)
        users = {p.user_id for p in new.values() if p.timestamp <= as_of}
        refreshed = await _refresh(cursor, users, as_of, seq)
        return Written(new=len(new), known=len(purchases) - len(new), refreshed_users=refreshed, change_seq=seq)

    written = await _numbered_transaction(pool, timeout_s, write)
    return written if written is not None else Written(known=len(purchases))


async def refresh_users(pool: aiomysql.Pool, user_ids: Collection[int], as_of: datetime, timeout_s: float) -> Written:
    """Recompute these users' features as of `as_of`, in one transaction of its own."""
    async def refresh(cursor: aiomysql.Cursor, seq: int) -> Written | None:
        if not user_ids:
            return None
        return Written(refreshed_users=await _refresh(cursor, user_ids, as_of, seq), change_seq=seq)

    written = await _numbered_transaction(pool, timeout_s, refresh)
    return written if written is not None else Written()


Work = Callable[[aiomysql.Cursor, int], Awaitable[Written | None]]


async def _numbered_transaction(pool: aiomysql.Pool, timeout_s: float, work: Work) -> Written | None:
    """Run `work(cursor, seq)` in a transaction numbered `seq`; committed when it returns a result,
    rolled back (the number with it) when it returns None. `timeout_s` bounds the whole, lock waits included."""
    try:
        async with asyncio.timeout(timeout_s), pool.acquire() as conn:
            try:
                async with conn.cursor() as cursor:
                    await conn.begin()
                    await cursor.execute(NUMBER_THIS_CHANGE)
                    if cursor.rowcount != 1:
                        raise _never_built()
                    await cursor.execute(READ_CHANGE_NUMBER)
                    (seq,) = await cursor.fetchone()
                    written = await work(cursor, int(seq))
                    if written is None:
                        await conn.rollback()
                    else:
                        await conn.commit()
                    return written
            except BaseException:
                # Half a transaction must not go back to the pool: closed, the server rolls it back.
                conn.close()
                raise
    except TimeoutError:
        raise TimeoutError(f"no answer from MySQL within {timeout_s:g} s") from None


async def _held_refs(cursor: aiomysql.Cursor, refs: list[str]) -> set[str]:
    unique = sorted(set(refs))
    placeholders = ", ".join(["%s"] * len(unique))
    # Compared as bytes (the column is binary): no collation folds case, accents or trailing spaces.
    await cursor.execute(f"SELECT purchase_ref FROM purchases WHERE purchase_ref IN ({placeholders})", unique)
    return {bytes(row[0]).decode("utf-8") for row in await cursor.fetchall()}


async def _refresh(cursor: aiomysql.Cursor, user_ids: Collection[int], as_of: datetime, seq: int) -> int:
    """Rewrite the users' rows; returns how many users have a row now."""
    rowcount = 0
    for statement, params in refresh_statements(user_ids, as_of, seq):
        await cursor.execute(statement, params)
        rowcount = cursor.rowcount
    return rowcount


def _never_built() -> OfflineStoreNotReady:
    return OfflineStoreNotReady(
        "the offline store has no feature_set row, so its features were never built: run `python -m offline_store.loader"
        " --keep-history` (it builds them from the purchases held) or `python -m offline_store.loader` (a synthetic store)"
    )


async def check_sink_schema(pool: aiomysql.Pool, timeout_s: float) -> None:
    """Fail fast, at start-up, on a store the sink cannot write: never built, or built before the columns it needs."""
    for added in ADDED_COLUMNS:
        try:
            await fetch_all(pool, f"SELECT {added.column} FROM {added.table} LIMIT 0", (), timeout_s)
        except (pymysql.err.ProgrammingError, pymysql.err.OperationalError) as exc:
            if not is_missing_table_or_column(exc):
                raise
            raise OfflineStoreNotReady(
                f"the offline store has no {added.table}.{added.column} ({exc.args[-1]}), which the purchase sink needs for"
                f" {added.why}: run `python -m offline_store.loader --keep-history` to add it, keeping the purchases held"
            ) from exc
    if not await fetch_all(pool, READ_CHANGE_NUMBER, (), timeout_s):
        raise _never_built()
