"""Counters the service logs as one summary line per interval."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class ServiceStats:
    """Totals since start, and the batch timings of the interval being summarised."""

    events: int = 0
    predictions: int = 0
    dead_letters: int = 0
    retries: int = 0
    batches: int = 0
    _interval_started: float = field(default_factory=time.monotonic)
    _interval_events: int = 0
    _interval_batch_ms: list[float] = field(default_factory=list)

    def record_batch(self, events: int, predictions: int, dead_letters: int, duration_s: float) -> None:
        self.batches += 1
        self.events += events
        self.predictions += predictions
        self.dead_letters += dead_letters
        self._interval_events += events
        self._interval_batch_ms.append(duration_s * 1000)

    def record_retry(self) -> None:
        self.retries += 1

    def log_summary_if_due(self, interval_s: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        elapsed = now - self._interval_started
        if elapsed < interval_s:
            return False
        if self._interval_batch_ms:
            timings = self._interval_batch_ms
            log.info(
                "%.0f events/s over %.0f s (%d batches, batch time median %.1f ms, max %.1f ms);"
                " totals: %d events, %d predictions, %d dead letters, %d retries",
                self._interval_events / elapsed, elapsed, len(timings), statistics.median(timings), max(timings),
                self.events, self.predictions, self.dead_letters, self.retries,
            )
        self._interval_started = now
        self._interval_events = 0
        self._interval_batch_ms = []
        return True
