"""Retrying a step that failed because something outside the service is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from config import Settings
from errors import ShutdownRequested
from service.failures import describe_error, retriable

log = logging.getLogger(__name__)

T = TypeVar("T")

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
        return min(self.initial_s * 2.0 ** min(attempt - 1, 64), self.max_s)

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
    """Run `step` until it succeeds, backing off exponentially on retriable errors.

    It never gives up on its own: losing the batch is worse than waiting for MySQL or Kafka to
    come back. A stop request ends the wait with `ShutdownRequested`. `dependency` (MySQL,
    Kafka) and `action` name what failed in the retry line, so an operator knows where to look.
    """
    for attempt, wait_s in enumerate(backoff.delays(), start=1):
        try:
            return await step()
        except Exception as exc:
            if not retriable(exc):
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
