"""Point-in-time features and labels of served events, computed by MySQL from `purchases`.

Each served event (user, event time) gets the user's features AS OF the event, the way
features.sql computes user_features as of a moment, and its label: whether the user bought in
(event time, event time + LABEL_WINDOW_S]. A purchase after the event reaches its label, never its
features. The query is offline_store/point_in_time.sql; this module loads the events into its
temporary table, runs it on the same connection and streams the answer into arrays.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomysql
import numpy as np
import pymysql

from errors import SetupError
from offline_store.feature_sql import naive_utc, sql_statements
from offline_store.mysql import OfflineStoreNotReady

log = logging.getLogger(__name__)

SQL_FILE = Path(__file__).resolve().parent / "point_in_time.sql"
INSERT_CHUNK_ROWS = 5_000
FETCH_CHUNK_ROWS = 10_000
DROP_TABLE = "DROP TEMPORARY TABLE IF EXISTS served_events"
ER_NO_SUCH_TABLE = 1146
# ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR.
_ACCESS_DENIED = frozenset({1044, 1142, 1227})


class TemporaryTablesRefused(SetupError):
    """The MySQL account may not create temporary tables, which the point-in-time query needs."""


@dataclass(frozen=True)
class ServedEventRows:
    """The events to label, in the caller's order: row i is the caller's event i."""

    user_ids: np.ndarray  # int64
    event_times: Sequence[datetime]  # timezone-aware


# eq=False: the fields are arrays, whose == is elementwise.
@dataclass(frozen=True, eq=False)
class PointInTime:
    """For each event whose label window has closed (`labelled`), its features as of the event and its label.

    Rows of events left out (window still open) hold count 0, NaN and label 0; read them through `labelled`.
    """

    labelled: np.ndarray  # bool, per event
    purchase_count: np.ndarray  # int64: purchases at or before the event
    mean_last_3_purchases: np.ndarray  # float64, NaN when the count is 0
    last_purchase_at_s: np.ndarray  # float64 seconds since the epoch, NaN when the count is 0
    labels: np.ndarray  # int8: 1 when the user bought within the window after the event


async def latest_purchase_at(pool: aiomysql.Pool) -> datetime | None:
    """When the newest purchase in the store happened (UTC), or None for an empty store: how far
    the purchases that label events have been written."""
    async with pool.acquire() as conn, conn.cursor() as cursor:
        try:
            await cursor.execute("SELECT MAX(purchased_at) FROM purchases")
        except pymysql.err.ProgrammingError as exc:
            if exc.args and exc.args[0] == ER_NO_SUCH_TABLE:
                raise OfflineStoreNotReady(
                    f"the offline store has no purchases table ({exc.args[-1]}): load it with `python -m offline_store.loader`"
                ) from exc
            raise
        (latest,) = await cursor.fetchone()
    return None if latest is None else latest.replace(tzinfo=UTC)


def label_horizon(latest_purchase: datetime | None, now: datetime, late_allowance_s: float) -> datetime | None:
    """The end of the time up to which labels are final: windows ending by then are closed.

    Both the store and the clock bound it. Purchases reach the store late (the purchase sink's
    lag, a partition behind the others) by up to LABEL_LATE_ALLOWANCE_S: a window is closed only
    once the newest purchase written is that much past its end, and the clock that much past it
    too. None when the store holds no purchase at all: then nothing can be labelled.
    """
    if latest_purchase is None:
        return None
    return min(latest_purchase, now) - timedelta(seconds=late_allowance_s)


async def point_in_time(pool: aiomysql.Pool, events: ServedEventRows, window_s: int, closed_before: datetime) -> PointInTime:
    """Features as of each event and labels, for the events whose window (event time + window_s) ends by `closed_before`."""
    count = len(events.user_ids)
    result = PointInTime(
        labelled=np.zeros(count, dtype=bool),
        purchase_count=np.zeros(count, dtype=np.int64),
        mean_last_3_purchases=np.full(count, np.nan),
        last_purchase_at_s=np.full(count, np.nan),
        labels=np.zeros(count, dtype=np.int8),
    )
    create, insert, select = sql_statements(SQL_FILE)
    async with pool.acquire() as conn:
        try:
            async with conn.cursor() as cursor:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", pymysql.Warning)  # "Unknown table": none was left behind
                    await cursor.execute(DROP_TABLE)
                try:
                    await cursor.execute(create)
                except pymysql.err.OperationalError as exc:
                    if exc.args and exc.args[0] in _ACCESS_DENIED:
                        raise TemporaryTablesRefused(
                            f"MySQL refused a temporary table ({exc.args[-1]}): training on served data loads the events"
                            " into one; grant the account CREATE TEMPORARY TABLES on the store's database"
                        ) from exc
                    raise
                await _insert(cursor, insert, events)
            async with conn.cursor(aiomysql.SSCursor) as stream:
                await stream.execute(select, {"window_s": int(window_s), "closed_before": naive_utc(closed_before)})
                while rows := await stream.fetchmany(FETCH_CHUNK_ROWS):
                    _fill(result, rows)
            async with conn.cursor() as cursor:
                # The pool hands this connection out again: leave no table behind in it.
                await cursor.execute(DROP_TABLE)
        except BaseException:
            # A query cut off half way leaves unread bytes on the wire (and the table): the
            # connection must not go back to the pool as it is.
            conn.close()
            raise
    return result


async def _insert(cursor: aiomysql.Cursor, insert: str, events: ServedEventRows) -> None:
    user_ids = events.user_ids.tolist()
    for start in range(0, len(user_ids), INSERT_CHUNK_ROWS):
        chunk = [
            (seq, user_ids[seq], naive_utc(events.event_times[seq]))
            for seq in range(start, min(start + INSERT_CHUNK_ROWS, len(user_ids)))
        ]
        await cursor.executemany(insert, chunk)


def _fill(result: PointInTime, rows: Sequence[tuple]) -> None:
    for seq, count, mean_last_3, last_purchase_at_s, label in rows:
        result.labelled[seq] = True
        result.purchase_count[seq] = count
        if count:
            result.mean_last_3_purchases[seq] = float(mean_last_3)
            result.last_purchase_at_s[seq] = float(last_purchase_at_s)
        result.labels[seq] = label

