"""Retrying a step that failed because something outside the service is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pymysql
from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

# MySQL down, connection lost, or a deadline passed (TimeoutError and ConnectionError are
# OSErrors). Kafka's own errors say whether they are retriable; a delivery timeout is too.
_TRANSIENT_TYPES = (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError, KafkaTimeoutError)


def is_transient(exc: BaseException) -> bool:
    """True when a dependency is unavailable, as opposed to a bug or a bad event.

    A transient failure is retried: its records are never dead-lettered and their offsets stay
    uncommitted meanwhile. Anything else propagates and stops the service, uncommitted too.
    """
    return isinstance(exc, _TRANSIENT_TYPES) or (isinstance(exc, KafkaError) and exc.retriable)


class ShutdownRequested(Exception):
    """Stop was requested while a step was still failing; the batch is abandoned uncommitted."""


async def retry_until_done(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event,
    initial_backoff_s: float,
    max_backoff_s: float,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Run `step` until it succeeds, backing off exponentially on transient errors.

    It never gives up on its own: losing the batch is worse than waiting for MySQL or Kafka to
    come back. A stop request ends the wait with `ShutdownRequested`.
    """
    backoff_s = initial_backoff_s
    attempt = 1
    while True:
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s failed (attempt %d), retrying in %.1f s: %s: %s", what, attempt, backoff_s, type(exc).__name__, exc)
            on_retry()
        if stop.is_set():
            raise ShutdownRequested(what)
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff_s)
        except TimeoutError:
            pass
        else:
            raise ShutdownRequested(what)
        backoff_s = min(backoff_s * 2, max_backoff_s)
        attempt += 1
