"""Retrying a step that failed because something outside the service is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pymysql
from aiokafka.errors import KafkaError, KafkaTimeoutError

from config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# MySQL error codes that pass by themselves: the server cannot be reached, went away or is
# shutting down (2002, 2003, 2006, 2013, 2055, 1053, 1927, 4031), has too many connections
# (1040), or a lock wait or deadlock (1205, 1213). Access denied, unknown database and the like
# are settings to fix, not outages: retrying them would only hide the message.
TRANSIENT_MYSQL_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})


def is_transient(exc: BaseException) -> bool:
    """True when a dependency is unavailable, as opposed to a bug, a bad setting or a bad event.

    A transient failure is retried: its records are never dead-lettered and their offsets stay
    uncommitted meanwhile. Anything else propagates and stops the service, uncommitted too.
    """
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in TRANSIENT_MYSQL_CODES
    if isinstance(exc, (pymysql.err.InterfaceError, KafkaTimeoutError)):
        return True  # a closed connection; a delivery not acknowledged in time
    if isinstance(exc, KafkaError):
        return exc.retriable
    # Lost connections and passed deadlines (ConnectionError and TimeoutError are OSErrors).
    return isinstance(exc, OSError)


class ShutdownRequested(Exception):
    """Stop was requested while a step was still failing; the batch is abandoned uncommitted."""


def describe_error(exc: BaseException) -> str:
    """`Type: message`, with something to read where the message is empty (a bare timeout)."""
    text = str(exc).strip()
    if not text and isinstance(exc, TimeoutError):
        text = "no answer before the deadline"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between retries: doubles from `initial_s` up to `max_s`."""

    initial_s: float
    max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        return cls(settings.retry_backoff_initial_ms / 1000, settings.retry_backoff_max_ms / 1000)

    def delay(self, attempt: int) -> float:
        """The wait after the `attempt`-th failure in a row (1 for the first)."""
        return min(self.initial_s * 2 ** min(attempt - 1, 64), self.max_s)

    def delays(self) -> Iterator[float]:
        attempt = 1
        while True:
            yield self.delay(attempt)
            attempt += 1


def log_retry(dependency: str, action: str, attempt: int, exc: BaseException, wait_s: float) -> None:
    """The one retry line: which dependency, doing what, the error, and when the next try is."""
    log.warning(
        "%s unavailable while %s (attempt %d): %s; next try in %.1f s",
        dependency, action, attempt, describe_error(exc), wait_s,
        extra={"dependency": dependency, "attempt": attempt, "retry_in_s": wait_s},
    )


async def pause_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep for `seconds`; True if a stop request cut the sleep short."""
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
    # arrives as `stop` is set, and a task that should end would go on.
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def retry_until_done(
    step: Callable[[], Awaitable[T]],
    *,
    dependency: str,
    action: str,
    stop: asyncio.Event,
    backoff: Backoff,
    on_retry: Callable[[str], None] = lambda dependency: None,
    pause: Callable[[asyncio.Event, float], Awaitable[bool]] = pause_unless_stopped,
) -> T:
    """Run `step` until it succeeds, backing off exponentially on transient errors.

    It never gives up on its own: losing the batch is worse than waiting for MySQL or Kafka to
    come back. A stop request ends the wait with `ShutdownRequested`. `dependency` (MySQL,
    Kafka) and `action` name what failed in the retry line, so an operator knows where to look.
    """
    for attempt, wait_s in enumerate(backoff.delays(), start=1):
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log_retry(dependency, action, attempt, exc, wait_s)
            on_retry(dependency)
        if stop.is_set() or await pause(stop, wait_s):
            raise ShutdownRequested(action)
    raise AssertionError("unreachable: Backoff.delays() never ends")


async def unless_stopped(awaitable: Awaitable[T], stop: asyncio.Event, what: str) -> T:
    """Await `awaitable`, unless a stop is requested first (then raise `ShutdownRequested`).

    For client calls that wait on Kafka with no deadline of their own, such as joining a group.
    """
    work = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if work.done():
        return work.result()
    work.cancel()
    # Its own cancellation, or whatever it failed with on the way out: the stop wins either way.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work
    raise ShutdownRequested(what)
