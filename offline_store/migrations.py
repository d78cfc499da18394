"""Columns added to the offline store since its tables were first created, added to tables made before them.

`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is, so a store loaded by an older
loader lacks what schema.sql has gained since. Each column here is added, with its index, when
missing; the definitions match schema.sql's (tests/offline_store/test_migrations.py
compares a migrated store with a new one).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import aiomysql

log = logging.getLogger(__name__)


class AddedColumn(NamedTuple):
    table: str
    column: str
    alter: str
    why: str


ADDED_COLUMNS = (
    AddedColumn(
        "purchases", "purchase_ref",
        "ALTER TABLE purchases ADD COLUMN purchase_ref VARBINARY(1024) NULL AFTER purchase_id,"
        " ADD UNIQUE KEY purchases_by_ref (purchase_ref)",
        "the stream's purchase ids, so a replayed purchase is never a second row",
    ),
    AddedColumn(
        "user_features", "changed_seq",
        "ALTER TABLE user_features ADD COLUMN changed_seq BIGINT NOT NULL DEFAULT 0,"
        " ADD KEY user_features_by_change (changed_seq)",
        "which refresh last wrote each row, so the service fetches only changed rows",
    ),
    AddedColumn(
        "feature_set", "change_seq",
        "ALTER TABLE feature_set ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0",
        "the count of refreshes by the purchase sink",
    ),
)

_COLUMN_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.columns"
    " WHERE table_schema = DATABASE() AND table_name = %s AND column_name = %s"
)


async def missing_columns(cursor: aiomysql.Cursor) -> list[AddedColumn]:
    """The added columns the store's tables lack (a table that does not exist lacks them all)."""
    missing = []
    for added in ADDED_COLUMNS:
        await cursor.execute(_COLUMN_EXISTS, (added.table, added.column))
        (count,) = await cursor.fetchone()
        if not count:
            missing.append(added)
    return missing


async def add_missing_columns(cursor: aiomysql.Cursor) -> list[str]:
    """Add what existing tables lack; returns the `table.column` names added. Run after schema.sql."""
    added_names = []
    for added in await missing_columns(cursor):
        log.info("adding %s.%s to the offline store: %s", added.table, added.column, added.why)
        await cursor.execute(added.alter)
        added_names.append(f"{added.table}.{added.column}")
    return added_names
