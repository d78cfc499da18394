"""The filter that keeps a Kafka connection failure to one line: the project's, when it has one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# As runtime.logs.COLLAPSE_WINDOW_S: at most one line per outage per window.
WINDOW_S = 10.0
# While the service retries a Kafka step its own retry lines report the outage; they come at
# most a backoff (RETRY_BACKOFF_MAX_MS, 10 s) plus one attempt's deadline (a publish waits up to
# aiokafka's 40 s request timeout) apart, so for this long after one the client's lines add nothing.
RETRY_COVER_S = 60.0


@dataclass
class _Held:
    since: float
    count: int
    record: logging.LogRecord


class SayConnectionErrorsOnce(logging.Filter):
    """A failed Kafka connection is logged once, by the project when the project notices it.

    aiokafka logs each failed connection at ERROR, and the service's retry line for the step
    that failed says the same (`Kafka unavailable while creating topics (attempt 1):
    KafkaConnectionError: …; next try in 0.2 s`). So the client's connection errors are held
    back: dropped when a retry line of ours for Kafka comes within the window (or came within
    RETRY_COVER_S before), and otherwise let through once per window with a count, so an outage
    no step of ours runs into (a consumer polling a dead broker) still shows. LOG_LEVEL=debug
    shows every one at once.
    """

    # What aiokafka says, from several of its modules, when it cannot reach a broker: the failed
    # connection itself, and the requests that then fail for want of one.
    CONNECTION_FAILURES = (
        "Unable connect to", "Unable to request metadata", "Unable to update metadata", "Connect call failed",
        "KafkaConnectionError", "NodeNotReadyError", "GroupCoordinatorNotAvailableError",
        "marking coordinator dead", "Marking the coordinator dead",
    )

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._ours_at: float | None = None
        self._held: _Held | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if getattr(record, "dependency", None) == "Kafka" and not record.name.startswith("aiokafka"):
            self._ours_at, self._held = now, None
            return True
        if hasattr(record, "client_errors") or not self._is_connection_failure(record):
            return True
        if self._ours_at is not None and now - self._ours_at < RETRY_COVER_S:
            return False
        held = self._held
        if held is None:
            self._held = _Held(now, 1, record)
            return False
        held.count += 1
        held.record = record
        if now - held.since < self._window_s:
            return False
        self._held = None
        record.msg, record.args = self._counted(record.getMessage(), held, now), ()
        record.client_errors = held.count
        return True

    def flush(self) -> None:
        """Let out what was held through a whole window with no retry line of ours; called once
        per stats interval, so a short outage that ends before the window does is still told."""
        held, now = self._held, self._clock()
        if held is None or now - held.since < self._window_s:
            return
        self._held = None
        logging.getLogger(held.record.name).log(
            held.record.levelno, "%s", self._counted(held.record.getMessage(), held, now), extra={"client_errors": held.count}
        )

    def _is_connection_failure(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return False
        if logging.getLogger().level <= logging.DEBUG:
            return False
        message = record.getMessage()
        return any(fragment in message for fragment in self.CONNECTION_FAILURES)

    @staticmethod
    def _counted(message: str, held: _Held, now: float) -> str:
        errors = "connection error" if held.count == 1 else "connection errors"
        return f"{message} ({held.count} client {errors} in the last {now - held.since:.0f} s)"
