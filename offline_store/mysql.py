"""The MySQL side of the offline store: a connection pool, the per-batch feature lookup and the
queries that keep the service's cache fresh (the feature-set version, rows changed since a number)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomysql
import pymysql

from config import ConfigError, Settings
from errors import SetupError
from features.user import FeatureChanges, UserFeatures

log = logging.getLogger(__name__)

# Below the server's default wait_timeout (8 hours) so the pool never hands out a connection
# the server has already dropped.
POOL_RECYCLE_S = 3600
CONNECT_TIMEOUT_S = 5
# OpenSSL's verify code for a certificate that does not name the host connected to.
X509_V_ERR_HOSTNAME_MISMATCH = 62


class MySQLTLSRefused(SetupError, pymysql.err.OperationalError):
    """TLS with MySQL failed for what it was shown (an untrusted certificate, no TLS at all), so
    retrying cannot help. Also an OperationalError, so programs that report MySQL errors report it."""


def mysql_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiomysql's `ssl=` (or pymysql's), as MYSQL_SSL_MODE asks; None when disabled.

    `required` encrypts without checking the certificate, verify_ca checks it against MYSQL_SSL_CA,
    verify_identity also that it names MYSQL_HOST. MYSQL_SSL_CERT and MYSQL_SSL_KEY, when set, are
    presented to a server that asks for a client certificate. A file that cannot be used raises
    ConfigError naming its setting.
    """
    mode = settings.mysql_ssl_mode
    if mode == "disabled":
        return None
    if mode == "required":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        _check_readable("MYSQL_SSL_CA", settings.mysql_ssl_ca)
        try:
            context = ssl.create_default_context(cafile=settings.mysql_ssl_ca)
        except ssl.SSLError as exc:
            raise ConfigError("MYSQL_SSL_CA", f"{settings.mysql_ssl_ca} holds no usable CA certificate ({exc.reason or exc})") from None
        context.check_hostname = mode == "verify_identity"
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.mysql_ssl_cert:
        _check_readable("MYSQL_SSL_CERT", settings.mysql_ssl_cert)
        _check_readable("MYSQL_SSL_KEY", settings.mysql_ssl_key)
        try:
            context.load_cert_chain(settings.mysql_ssl_cert, settings.mysql_ssl_key, password=lambda: "")
        except ssl.SSLError as exc:
            raise ConfigError(
                "MYSQL_SSL_KEY", f"cannot be loaded with MYSQL_SSL_CERT ({exc.reason or exc}): is it the certificate's key, unencrypted?"
            ) from None
    return context


def _check_readable(variable: str, path: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror or exc}") from None


async def create_pool(settings: Settings, *, database: str | None = None) -> aiomysql.Pool:
    """A pool of autocommit connections, over TLS when MYSQL_SSL_MODE asks for it.

    A refused TLS handshake raises MySQLTLSRefused rather than the outage aiomysql reports it as.
    """
    context = mysql_ssl_context(settings)
    try:
        pool = await aiomysql.create_pool(
            host=settings.mysql_host,
            port=settings.mysql_port,
            user=settings.mysql_user,
            password=settings.mysql_password,
            db=settings.mysql_database if database is None else database,
            minsize=1,
            maxsize=settings.mysql_pool_max_size,
            # Without autocommit a pooled connection keeps its first snapshot and reads stale rows.
            autocommit=True,
            pool_recycle=POOL_RECYCLE_S,
            connect_timeout=CONNECT_TIMEOUT_S,
            ssl=context,
        )
    except pymysql.err.OperationalError as exc:
        refusal = _tls_refusal(settings, exc)
        if refusal is None:
            raise
        raise refusal from exc
    if context is not None:
        try:
            await _require_tls(pool, settings)
        except BaseException:
            await close_pool(pool)
            raise
    return pool


def _tls_refusal(settings: Settings, exc: pymysql.err.OperationalError) -> MySQLTLSRefused | None:
    """What a failed connection means when TLS itself failed: aiomysql raises "Can't connect" from it."""
    cause, where = exc.__cause__, f"MySQL at {settings.mysql_host}:{settings.mysql_port}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        if cause.verify_code == X509_V_ERR_HOSTNAME_MISMATCH:
            return MySQLTLSRefused(
                f"the certificate of {where} does not name MYSQL_HOST ({cause.verify_message}): connect by a name the"
                " certificate carries, or set MYSQL_SSL_MODE=verify_ca"
            )
        return MySQLTLSRefused(
            f"the certificate of {where} is not trusted by MYSQL_SSL_CA ({settings.mysql_ssl_ca}): {cause.verify_message};"
            " set MYSQL_SSL_CA to the certificate of the CA that signed the server's"
        )
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return MySQLTLSRefused(
            f"TLS with {where} failed ({cause.reason or cause}): check MYSQL_SSL_MODE, and MYSQL_SSL_CERT and MYSQL_SSL_KEY"
            " if the server asks for a client certificate"
        )
    return None


async def _require_tls(pool: aiomysql.Pool, settings: Settings) -> None:
    # aiomysql quietly goes on without TLS when the server does not offer it; MYSQL_SSL_MODE says
    # it must not. Asked of the pool's first connection: a server set up without TLS is caught at
    # start-up. (Someone in the middle who strips the offer from later connections is not: the
    # server's REQUIRE SSL on the account is what stops that.)
    rows = await fetch_all(pool, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", (), CONNECT_TIMEOUT_S)
    if not rows or not rows[0][1]:
        raise MySQLTLSRefused(
            f"MySQL at {settings.mysql_host}:{settings.mysql_port} does not offer TLS, yet MYSQL_SSL_MODE={settings.mysql_ssl_mode}:"
            " turn TLS on in the server (ssl_cert, ssl_key), or set MYSQL_SSL_MODE=disabled"
        )


async def close_pool(pool: aiomysql.Pool) -> None:
    pool.close()
    await pool.wait_closed()


async def fetch_all(pool: aiomysql.Pool, sql: str, args: Sequence[Any] | Mapping[str, Any], timeout_s: float) -> list[tuple]:
    """Run one query; `timeout_s` bounds acquiring a connection and the query together."""
    try:
        async with asyncio.timeout(timeout_s):
            conn = await pool.acquire()
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(sql, args)
                    rows = await cursor.fetchall()
            except BaseException:
                # A query cut off half way leaves unread bytes on the wire: the connection must not
                # go back to the pool, or the next query reads this one's answer.
                conn.close()
                raise
            finally:
                pool.release(conn)
    except TimeoutError:
        # Said here, where the deadline is known: the retry line then reads as more than "TimeoutError".
        raise TimeoutError(f"no answer from MySQL within {timeout_s:g} s") from None
    return list(rows)


# Seconds since the epoch, computed by the server: DATETIME columns hold UTC, and TIMESTAMPDIFF
# (unlike UNIX_TIMESTAMP) does not depend on the session's time zone.
EPOCH_SECONDS = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) / 1e6"
_FEATURE_COLUMNS = "user_id, mean_last_3_purchases, purchase_count, " + EPOCH_SECONDS.format(column="last_purchase_at")
_SELECT_FEATURES = f"SELECT {_FEATURE_COLUMNS} FROM user_features"
_SELECT_CHANGED = f"SELECT {_FEATURE_COLUMNS}, changed_seq FROM user_features"


class OfflineStoreNotReady(SetupError):
    """The database answers but holds no feature table."""


class MySQLFeatureStore:
    """Looks up a whole batch of users with one parameterised `IN (...)` query."""

    def __init__(self, pool: aiomysql.Pool, query_timeout_ms: int) -> None:
        self._pool = pool
        self._timeout_s = query_timeout_ms / 1000
        self._warned_unversioned = False
        self._warned_unsequenced = False

    async def get_features(self, user_ids: Collection[int]) -> dict[int, UserFeatures]:
        unique_ids = sorted(set(user_ids))
        if not unique_ids:
            return {}
        placeholders = ", ".join(["%s"] * len(unique_ids))
        rows = await fetch_all(self._pool, f"{_SELECT_FEATURES} WHERE user_id IN ({placeholders})", unique_ids, self._timeout_s)
        return {row[0]: _to_features(row) for row in rows}

    async def check_schema(self) -> None:
        """Fail fast, at start-up, when the feature table is missing (the loader never ran) or was
        built by a loader that stored ages instead of moments."""
        try:
            await fetch_all(self._pool, "SELECT user_id, last_purchase_at FROM user_features LIMIT 1", (), self._timeout_s)
        except (pymysql.err.ProgrammingError, pymysql.err.OperationalError) as exc:
            if not is_missing_table_or_column(exc):
                raise
            raise OfflineStoreNotReady(
                f"the offline store has no user_features table with last_purchase_at ({exc.args[-1]}):"
                " load it with `make train` or `python -m offline_store.loader`"
            ) from exc

    async def feature_set_version(self) -> int | None:
        """The number the loader bumps with every rebuild; None for a store loaded before it existed."""
        try:
            rows = await fetch_all(self._pool, "SELECT version FROM feature_set WHERE id = 1", (), self._timeout_s)
        except pymysql.err.ProgrammingError:
            if not self._warned_unversioned:
                self._warned_unversioned = True
                log.warning("the offline store has no feature_set table (loaded by an older loader):"
                            " a rebuilt store reaches the service only as cached features expire (FEATURE_CACHE_TTL_S)")
            return None
        return int(rows[0][0]) if rows else None

    async def change_seq(self) -> int | None:
        """The number of the last refresh of a few users' rows (by the purchase sink); None for a store
        without it, loaded before the sink existed, whose changes then wait for a rebuild or the TTL."""
        try:
            rows = await fetch_all(self._pool, "SELECT change_seq FROM feature_set WHERE id = 1", (), self._timeout_s)
        except (pymysql.err.ProgrammingError, pymysql.err.OperationalError) as exc:
            if not is_missing_table_or_column(exc):
                raise
            if not self._warned_unsequenced:
                self._warned_unsequenced = True
                log.warning("the offline store has no feature_set.change_seq (loaded before the purchase sink existed): new"
                            " purchases reach the service only as cached features expire (FEATURE_CACHE_TTL_S) or the store"
                            " is rebuilt; `python -m offline_store.loader --keep-history` adds it")
            return None
        return int(rows[0][0]) if rows else None

    async def changed_features(self, after_seq: int) -> FeatureChanges:
        """The rows refreshes rewrote after change number `after_seq`: one query on an index, usually empty."""
        rows = await fetch_all(self._pool, f"{_SELECT_CHANGED} WHERE changed_seq > %s", (after_seq,), self._timeout_s)
        features = {row[0]: _to_features(row[:4]) for row in rows}
        return FeatureChanges(features, max((int(row[4]) for row in rows), default=after_seq))

    async def built_at_s(self) -> float | None:
        """When the loader last rebuilt the features, in seconds since the epoch; None if unknown."""
        sql = f"SELECT {EPOCH_SECONDS.format(column='built_at')} FROM feature_set WHERE id = 1"
        rows = await fetch_all(self._pool, sql, (), self._timeout_s)
        return float(rows[0][0]) if rows else None

    async def count_features(self) -> int:
        (row,) = await fetch_all(self._pool, "SELECT COUNT(*) FROM user_features", (), self._timeout_s)
        return int(row[0])

    async def get_all_features(self) -> dict[int, UserFeatures]:
        """Every user with history: what training joins its labelled events against."""
        rows = await fetch_all(self._pool, _SELECT_FEATURES, (), timeout_s=max(self._timeout_s, 60.0))
        return {row[0]: _to_features(row) for row in rows}


def _to_features(row: tuple) -> UserFeatures:
    _user_id, mean_last_3, count, last_purchase_at_s = row
    return UserFeatures(float(mean_last_3), int(count), float(last_purchase_at_s), False)


# ER_BAD_TABLE_ERROR, ER_BAD_FIELD_ERROR, ER_NO_SUCH_TABLE.
_MISSING_TABLE_OR_COLUMN = frozenset({1051, 1054, 1146})


def is_missing_table_or_column(exc: pymysql.err.MySQLError) -> bool:
    return bool(exc.args) and exc.args[0] in _MISSING_TABLE_OR_COLUMN
