"""The feature SQL of features.sql, as the loader's full rebuild and the purchase sink's refresh run it.

One definition of the features serves both, so a user's row is the same whichever wrote it:
the refresh only narrows the query to a few users (`{only_users}` in features.sql).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).resolve().parent
# The stamp of rows a full rebuild writes: below every change number, so the service's poll for
# changed rows never fetches a whole rebuilt table (the version bump reloads it instead).
REBUILT = 0

Statement = tuple[str, dict[str, Any]]


def sql_statements(path: Path) -> list[str]:
    """The statements of a .sql file: comments dropped, split on `;`."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def _feature_template() -> str:
    (statement,) = sql_statements(SQL_DIR / "features.sql")
    return statement


_FEATURES = _feature_template()


def naive_utc(moment: datetime) -> datetime:
    """How DATETIME columns hold a moment: UTC, without a zone."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def rebuild_statements(as_of: datetime) -> list[Statement]:
    """Every user's row again, from every purchase up to `as_of`."""
    params = {"as_of": naive_utc(as_of), "changed_seq": REBUILT}
    return [("DELETE FROM user_features", {}), (_FEATURES.format(only_users=""), params)]


def refresh_statements(user_ids: Collection[int], as_of: datetime, changed_seq: int) -> list[Statement]:
    """The rows of `user_ids` again, as the rebuild would compute them at `as_of`, stamped `changed_seq`."""
    users = sorted(set(user_ids))
    if not users:
        return []
    named = {f"user_{n}": user_id for n, user_id in enumerate(users)}
    in_list = ", ".join(f"%({name})s" for name in named)
    params = {"as_of": naive_utc(as_of), "changed_seq": changed_seq, **named}
    return [
        (f"DELETE FROM user_features WHERE user_id IN ({in_list})", named),
        (_FEATURES.format(only_users=f"AND user_id IN ({in_list})"), params),
    ]
