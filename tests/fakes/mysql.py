"""An in-memory stand-in for the MySQL feature store, behind the same interface, for unit tests."""

from __future__ import annotations

from collections.abc import Collection

import pymysql

from features.user import FeatureChanges, UserFeatures


class InMemoryFeatureStore:
    """Serves fixed features; can be told to fail like an unreachable MySQL (`failures_left`, or
    `down` for everything). `refresh_users` rewrites rows as the purchase sink does, numbered like
    `feature_set.change_seq` (`seq` None: a store that keeps no numbers)."""

    def __init__(self, features: dict[int, UserFeatures] | None = None, failures_before_success: int = 0) -> None:
        self.features = features or {}
        self.failures_left = failures_before_success
        self.lookups: list[list[int]] = []
        self.version: int | None = 1
        self.built_at: float | None = None  # seconds since the epoch, as MySQLFeatureStore.built_at_s gives it
        self.full_reads = 0
        self.down = False
        self.seq: int | None = 0
        self.changed_seq: dict[int, int] = {}
        self.change_queries = 0

    def refresh_users(self, rows: dict[int, UserFeatures]) -> int:
        """Rewrite these users' rows under the next change number, as one refresh; returns it."""
        assert self.seq is not None, "this store keeps no change numbers"
        self.seq += 1
        for user_id, features in rows.items():
            self.features[user_id] = features
            self.changed_seq[user_id] = self.seq
        return self.seq

    async def change_seq(self) -> int | None:
        self._fail_if_down()
        return self.seq

    async def changed_features(self, after_seq: int) -> FeatureChanges:
        self._fail_if_down()
        self.change_queries += 1
        changed = {user_id: seq for user_id, seq in self.changed_seq.items() if seq > after_seq}
        return FeatureChanges({user_id: self.features[user_id] for user_id in changed}, max(changed.values(), default=after_seq))

    async def feature_set_version(self) -> int | None:
        self._fail_if_down()
        return self.version

    async def built_at_s(self) -> float | None:
        self._fail_if_down()
        return self.built_at

    async def count_features(self) -> int:
        self._fail_if_down()
        return len(self.features)

    async def get_all_features(self) -> dict[int, UserFeatures]:
        self._fail_if_down()
        self.full_reads += 1
        return dict(self.features)

    def _fail_if_down(self) -> None:
        if self.down:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server (in-memory stand-in)")

    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        self.lookups.append(list(user_ids))
        if self.failures_left:
            self.failures_left -= 1
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server (in-memory stand-in)")
        return {user_id: self.features[user_id] for user_id in user_ids if user_id in self.features}
